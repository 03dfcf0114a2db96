"""Pure numerics of the ICA dark-matter analysis.

Arrays (or array-likes such as read-only memmaps) in; arrays or frozen dataclasses out.
Nothing here opens a file, knows a file name or sees the run ``Config``: the pipeline
(:mod:`darkmatter.pipeline`) reads inputs, calls these functions and writes the results.

Modules:
    stats        streaming moments, excess kurtosis, PCA, the Gaussian surrogate
    diagnostics  step 03's residual diagnostics and verdict
    ica_engine   our PyTorch FastICA with the settled-set stopping rule
    ica          whitening, FastICA dispatch, restarts, matching, the matched control (norm-matched surrogate)
    decompose    ``decompose()``: whitened data → ordered, signed, stability-scored components
    directions   the direction sets (ICA and every baseline) in one registry
    compare      nearest SAE decoder rows of a direction set
    groundtruth  recovery of planted features by a direction set
    interpret    top-activating contexts, quantile samples, token counts, logit lens
"""

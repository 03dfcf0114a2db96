"""ica-dark-matter: is an SAE's reconstruction error structure or noise?

Decomposes the residual ``x - SAE(x)`` of a sparse autoencoder with Independent Component
Analysis. The package is layered; each layer imports only the ones above it in this list:

    analysis/     pure numerics: arrays in, arrays or frozen dataclasses out
    sources/      where activations come from (model + hook, planted, cached), SAEs, text
    experiments/  SAE training, the planted sweep, toy models of superposition
    pipeline/     the numbered steps, their table, config, store, CLI and report

The numbered scripts in ``scripts/`` call :func:`darkmatter.pipeline.cli.main`.
"""

__version__ = "0.2.0"

"""Where activations come from, behind one interface (:class:`~darkmatter.sources.base.ActivationSource`).

Modules:
    base          the protocol and the small types it speaks (RowBatch, HookInfo, GroundTruth, RowContext)
    model_source  a language model at a hook over documents (TransformerLens / TransformerBridge)
    planted       planted activations with a known answer, and their oracle SAE
    cached        activations already on disk (.npy, or a SAELens activation cache)
    models        loading models; saes: loading SAEs; text: documents and token windows; hub: the hub guard
    corpus        named text corpora (--corpus): Debian packages fetched at install, parsed and interleaved
    collect       streaming rows through an SAE into activations, residuals and running statistics

Library functions here take plain values (names, paths, sizes), never the pipeline's ``Config``.
"""

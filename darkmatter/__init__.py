"""ica-dark-matter: is an SAE's reconstruction error structure or noise?

Decomposes the residual ``x - SAE(x)`` of a sparse autoencoder with Independent Component
Analysis. The package is layered; each layer imports only the ones above it in this list:

    analysis/     pure numerics: arrays in, arrays or frozen dataclasses out
    sources/      where activations come from (model + hook, planted, cached), SAEs, text
    experiments/  SAE training, the planted sweep, toy models of superposition
    pipeline/     the numbered steps, their table, config, store, CLI and report

The numbered scripts in ``scripts/`` call :func:`darkmatter.pipeline.cli.main`.
"""

import os as _os

# idle OpenMP threads spin briefly, then sleep: on a shared machine long-spinning threads take the
# cores the busy ones need (darkmatter.threads; benchmarks/bench_busy.py). Set before torch starts
# libgomp; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.2.0"

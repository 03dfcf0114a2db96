"""ica-dark-matter: is an SAE's reconstruction error structure or noise?

Decomposes the residual ``x - SAE(x)`` of a sparse autoencoder with
Independent Component Analysis. The numbered scripts in ``scripts/`` are thin
wrappers around :mod:`darkmatter.steps`.
"""

__version__ = "0.1.0"

"""One decomposition: whitened data → FastICA over seeds → matched, ordered, signed components.

Step 04, the planted sweep and the toy-model sweep all call :func:`decompose`; the default-k
rule (:func:`default_k`) lives here too, and only step 04's config owns its cap.

Conventions (see :mod:`darkmatter.analysis.ica`), for k components of a d_model-wide residual r:
    sources    s = (r − mean) @ unmixing.T,   unmixing = W @ whitener: [k, d_model]
    r − mean ≈ s @ mixing.T,                  mixing = dewhitener.T @ W.T: [d_model, k]
Components are ordered by descending excess kurtosis of their source (most heavy-tailed
first) and signed so that each source has non-negative skew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kurtosis

from darkmatter.analysis import ica
from darkmatter.analysis.stats import PCA

#: Share of residual variance the default k keeps (before the cap).
DEFAULT_VARIANCE_FRACTION = 0.9
#: Rows of whitened data on which source skew and kurtosis are measured for signs and order.
KURTOSIS_ROWS = 100_000


def default_k(pca: PCA, max_components: int, fraction: float = DEFAULT_VARIANCE_FRACTION) -> tuple[int, str]:
    """The default number of ICA components and the rule's name.

    k = the fewest principal components holding ``fraction`` of the residual variance, capped at
    ``max_components`` (the cap keeps FastICA's k × k updates and the restarts affordable).

    Returns:
        (k, rule name for ica.json).
    Raises:
        ValueError: ``max_components`` < 1.
    """
    if max_components < 1:
        raise ValueError(f"max_components must be ≥ 1, got {max_components}")
    return (min(pca.n_for(fraction), max_components),
            f"PCA {fraction:.0%} rule, capped at --max-components ({max_components})")


@dataclass(frozen=True)
class Decomposition:
    """ICA components of whitened data, matched across restarts.

    Attributes:
        W: float64[k, k] orthogonal unmixing in whitened space of the first (all-rows) fit,
            rows ordered and signed (s = z @ W.T).
        whitening: the PCA whitening the data went through.
        fits: one :class:`~darkmatter.analysis.ica.ICAFit` per seed, in seed order.
        stability: float64[k], lowest matched |cos| of each component's mixing direction over the
            other restarts (1.0 with a single seed), in component order.
        order: int64[k], the first fit's row index of each component.
        signs: float64[k] of ±1 applied to the first fit's rows, in component order.
        source_excess_kurtosis: float64[k] of the sources on the first :data:`KURTOSIS_ROWS` rows.
    """

    W: np.ndarray
    whitening: ica.Whitening
    fits: list[ica.ICAFit]
    stability: np.ndarray
    order: np.ndarray
    signs: np.ndarray
    source_excess_kurtosis: np.ndarray

    @property
    def k(self) -> int:
        return self.W.shape[0]

    @property
    def unmixing(self) -> np.ndarray:
        """float64[k, d_model]: s = (r − mean) @ unmixing.T."""
        return self.W @ self.whitening.whitener

    @property
    def mixing(self) -> np.ndarray:
        """float64[d_model, k]: r − mean ≈ s @ mixing.T."""
        return self.whitening.dewhitener.T @ self.W.T

    @property
    def directions(self) -> np.ndarray:
        """float64[k, d_model] unit mixing directions (row i is what source i writes)."""
        return ica.mixing_directions(self.W, self.whitening)

    def n_stable(self, stable_cos: float) -> int:
        """Components whose matched |cos| reaches ``stable_cos`` in every restart."""
        return int((self.stability >= stable_cos).sum())


def decompose(z: np.ndarray, whitening: ica.Whitening, seeds: list[int], max_iter: int = 200,
              tol: float = 1e-6, resample: float = 0.5, backend: str = "torch", device: str = "cpu",
              progress: ica.Progress | None = None, kurtosis_rows: int = KURTOSIS_ROWS) -> Decomposition:
    """FastICA restarts on whitened data (:func:`darkmatter.analysis.ica.fit_seeds`), stability by
    Hungarian matching of mixing directions across restarts, sources signed to positive skew and
    ordered by descending excess kurtosis.

    Args:
        z: float[n, k] whitened data (``whitening.k`` columns).
        whitening: the whitening that produced z (maps W to d_model directions).
        seeds: FastICA seeds; the first fits all rows, later ones fresh ``resample`` × n subsets.
        max_iter, tol, backend, device, progress: see :func:`darkmatter.analysis.ica.fit`.
        kurtosis_rows: leading rows of z used for signs and the ordering kurtosis.
    Returns:
        Decomposition.
    Raises:
        ValueError: z's width differs from the whitening's k; no seeds; resample outside (0, 1].
    """
    if z.shape[1] != whitening.k:
        raise ValueError(f"z has {z.shape[1]} columns but the whitening keeps {whitening.k}")
    fits = ica.fit_seeds(z, seeds, max_iter, tol, resample, backend, device, progress)
    dirs = [ica.mixing_directions(f.W, whitening) for f in fits]  # seed order, for matching
    stab = ica.stability(dirs[0], dirs[1:])
    sample = z[: min(len(z), kurtosis_rows)].astype(np.float64) @ fits[0].W.T
    signs = ica.positive_skew_signs(sample)
    kurt = kurtosis(sample, axis=0)
    order = np.argsort(-kurt)  # most heavy-tailed first
    return Decomposition(W=(signs[:, None] * fits[0].W)[order], whitening=whitening, fits=fits,
                         stability=stab[order], order=order, signs=signs[order],
                         source_excess_kurtosis=kurt[order])


def write_sources(residual: np.ndarray, decomposition: Decomposition, out: np.ndarray,
                  chunk_size: int = 16384) -> float:
    """Fill ``out`` (float32[n, k], e.g. a memmap) with the sources of every residual row and
    return the share of residual variance the k-component reconstruction explains.

    Args:
        residual: float[n, d_model], streamed in chunks (float64 arithmetic).
    Returns:
        1 − Σ‖r − s @ mixing.T‖² / Σ‖r‖² over centred rows; equals the whitening's
        ``explained`` when the unmixing is consistent (see :func:`check_reconstruction`).
    """
    unmixing, mixing, mean = decomposition.unmixing, decomposition.mixing, decomposition.whitening.mean
    err = total = 0.0
    for s in range(0, residual.shape[0], chunk_size):
        r = np.asarray(residual[s:s + chunk_size], dtype=np.float64) - mean
        src = r @ unmixing.T
        out[s:s + chunk_size] = src
        err += float(((r - src @ mixing.T) ** 2).sum())
        total += float((r ** 2).sum())
    return 1.0 - err / total


def check_reconstruction(explained: float, whitening: ica.Whitening, atol: float = 1e-3) -> bool:
    """True when the reconstruction explains what the PCA subspace holds (to ``atol``).

    Raises:
        RuntimeError: it does not: the unmixing is inconsistent (a bug, not a user error).
    """
    if abs(explained - whitening.explained) >= atol:
        raise RuntimeError(f"ICA reconstruction explains {explained:.5f} of residual variance but the "
                           f"PCA subspace holds {whitening.explained:.5f}: the unmixing is inconsistent")
    return True

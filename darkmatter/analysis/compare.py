"""How close a set of directions lies to the SAE's dictionary (``W_dec`` rows).

A direction the SAE already has (|cos| > 0.8 to some decoder row) is not
dark matter; one far from every row (|cos| < 0.3) is a candidate the SAE
missed. Every direction set (ICA and the baselines of
:mod:`darkmatter.analysis.directions`) goes through :func:`decoder_match`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIGH, LOW = 0.8, 0.3


@dataclass(frozen=True)
class DecoderMatch:
    """Nearest SAE decoder rows of a set of directions.

    Attributes:
        max_abs_cos: float[k], largest |cos| to any decoder row.
        best_feature: int[k], that row's index.
        top_features: int[k, n_top], the n_top nearest rows by |cos|, nearest first.
        top_cos: float[k, n_top], their signed cos.
    """

    max_abs_cos: np.ndarray
    best_feature: np.ndarray
    top_features: np.ndarray
    top_cos: np.ndarray

    def subset(self, keep: np.ndarray) -> DecoderMatch:
        """The directions selected by bool[k] ``keep``."""
        return DecoderMatch(self.max_abs_cos[keep], self.best_feature[keep], self.top_features[keep],
                            self.top_cos[keep])

    def summary(self) -> MatchSummary:
        """Mean and median max |cos| and how many directions fall above 0.8, in [0.3, 0.8] and
        below 0.3."""
        c = self.max_abs_cos
        return MatchSummary(mean_max_abs_cos=float(c.mean()), median_max_abs_cos=float(np.median(c)),
                            above_high=int((c > HIGH).sum()), between=int(((c >= LOW) & (c <= HIGH)).sum()),
                            below_low=int((c < LOW).sum()))


@dataclass(frozen=True)
class MatchSummary:
    """Summary of a :class:`DecoderMatch` (thresholds :data:`LOW` = 0.3, :data:`HIGH` = 0.8).

    Attributes:
        mean_max_abs_cos, median_max_abs_cos: over the directions.
        above_high: directions the SAE already has (max |cos| > 0.8).
        between: directions in [0.3, 0.8].
        below_low: directions far from every decoder row (< 0.3).
    """

    mean_max_abs_cos: float
    median_max_abs_cos: float
    above_high: int
    between: int
    below_low: int


def unit_rows(a: np.ndarray) -> np.ndarray:
    """float[n, d] rows scaled to unit norm (zero rows stay zero)."""
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


def decoder_match(directions: np.ndarray, W_dec: np.ndarray, n_top: int = 5,
                  chunk_size: int = 8192) -> DecoderMatch:
    """Compare directions: float[k, d_model] with W_dec: float[d_sae, d_model] (SAELens
    orientation), in chunks of decoder rows, keeping the n_top nearest rows of each direction."""
    dirs = unit_rows(np.asarray(directions, dtype=np.float64))
    k = len(dirs)
    best_idx = np.zeros((k, 0), dtype=np.int64)
    best_cos = np.zeros((k, 0))
    for start in range(0, len(W_dec), chunk_size):
        block = unit_rows(np.asarray(W_dec[start:start + chunk_size], dtype=np.float64))
        cos = dirs @ block.T
        idx = np.concatenate([best_idx, np.arange(start, start + len(block))[None].repeat(k, 0)], 1)
        allcos = np.concatenate([best_cos, cos], 1)
        keep = np.argsort(-np.abs(allcos), axis=1)[:, :n_top]
        best_idx = np.take_along_axis(idx, keep, 1)
        best_cos = np.take_along_axis(allcos, keep, 1)
    return DecoderMatch(max_abs_cos=np.abs(best_cos[:, 0]), best_feature=best_idx[:, 0],
                        top_features=best_idx, top_cos=best_cos)



def project_rows(W_dec: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Decoder rows projected into a subspace: float64[d_sae, d_model] = W_dec @ basis.T @ basis.

    Args:
        W_dec: float[d_sae, d_model]; basis: float[k, d_model] orthonormal rows (the top-k
            principal components of the residual span the whitened subspace).
    """
    basis = np.asarray(basis, dtype=np.float64)
    return (np.asarray(W_dec, dtype=np.float64) @ basis.T) @ basis


def subspace_share(W_dec: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """float64[d_sae]: share of each decoder row's norm inside the subspace, ‖P row‖ / ‖row‖
    (0 for a zero row). An ICA direction lies in the subspace, so its |cos| to a row is at most
    this share."""
    W = np.asarray(W_dec, dtype=np.float64)
    inside = np.linalg.norm(W @ np.asarray(basis, dtype=np.float64).T, axis=1)
    norm = np.linalg.norm(W, axis=1)
    return np.where(norm > 0, inside / np.where(norm > 0, norm, 1.0), 0.0)


@dataclass(frozen=True)
class AgainstNull:
    """A set's max |cos| values against the matched null's distribution.

    Attributes:
        n_null: null values pooled (directions × draws).
        null_mean, null_p01, null_p99: of the null's max |cos|.
        share_above_p99: share of the set's directions above the null's 99th percentile (closer to
            the SAE than chance); share_below_p01: below its 1st percentile (farther than chance).
        null_below_low: share of null directions under :data:`LOW`: how often chance alone is "novel".
    """

    n_null: int
    null_mean: float
    null_p01: float
    null_p99: float
    share_above_p99: float
    share_below_p01: float
    null_below_low: float


def against_null(values: np.ndarray, null_values: np.ndarray) -> AgainstNull:
    """Compare float[k] max |cos| values with pooled null values float[m] (m ≥ 1)."""
    v, null = np.asarray(values, dtype=np.float64), np.asarray(null_values, dtype=np.float64).ravel()
    p01, p99 = np.quantile(null, [0.01, 0.99])
    return AgainstNull(n_null=int(null.size), null_mean=float(null.mean()), null_p01=float(p01), null_p99=float(p99),
                       share_above_p99=float((v > p99).mean()), share_below_p01=float((v < p01).mean()),
                       null_below_low=float((null < LOW).mean()))

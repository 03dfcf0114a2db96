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


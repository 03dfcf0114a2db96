"""Artifact flags: components whose top activations sit on one position, document or token.

A heavy-tailed, stable source can still be an artifact of where tokens sit rather than what they
say: on the offline default, the most kurtotic component (excess kurtosis ≈ 5,900, stability
0.998) fires mostly at position 1, the first token after BOS. Such components are flagged and kept
out of the candidates (:mod:`darkmatter.analysis.candidates`) unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Top activations per component the flags look at.
TOP_N = 50
#: A component is flagged when more than this share of its top activations share one trait.
MAX_SHARE = 0.5
#: Positions counted as "first positions" (after BOS at 0).
FIRST_POSITIONS = 2


def top_rows(sources: np.ndarray, n_top: int = TOP_N, chunk_size: int = 65536) -> np.ndarray:
    """Rows of the ``n_top`` largest values of each source, streamed in chunks.

    Args:
        sources: float[n, k] (a memmap is fine).
    Returns:
        int64[k, min(n_top, n)] row indices, largest value first.
    """
    n, k = sources.shape
    m = min(n_top, n)
    best_val = np.full((m, k), -np.inf)
    best_row = np.zeros((m, k), dtype=np.int64)
    for s in range(0, n, chunk_size):
        c = np.asarray(sources[s:s + chunk_size], dtype=np.float64)
        vals = np.concatenate([best_val, c])
        rows = np.concatenate([best_row, np.arange(s, s + len(c))[:, None].repeat(k, 1)])
        keep = np.argpartition(-vals, m - 1, axis=0)[:m]
        best_val = np.take_along_axis(vals, keep, 0)
        best_row = np.take_along_axis(rows, keep, 0)
    order = np.argsort(-best_val, axis=0, kind="stable")
    return np.take_along_axis(best_row, order, 0).T


@dataclass(frozen=True)
class ArtifactFlag:
    """Where one component's top activations concentrate.

    Attributes:
        first_positions: share at window positions 1..:data:`FIRST_POSITIONS` (None without positions).
        one_document: largest share from a single document (or window).
        one_token: largest share on a single token id (None without token ids).
        flagged: any share above :data:`MAX_SHARE`.
        reason: which shares are too high ("" when not flagged).
    """

    first_positions: float | None
    one_document: float
    one_token: float | None
    flagged: bool
    reason: str


def _largest_share(values: np.ndarray) -> float:
    return float(np.unique(values, return_counts=True)[1].max() / len(values))


def flag(rows: np.ndarray, units: np.ndarray, positions: np.ndarray | None, token_ids: np.ndarray | None,
         max_share: float = MAX_SHARE) -> list[ArtifactFlag]:
    """Flag components whose top rows concentrate on the first positions, one unit or one token.

    Args:
        rows: int[k, m] top rows per component (:func:`top_rows`).
        units: int[n] document (or window) of every row.
        positions: int[n] window position of every row, or None (sources without windows).
        token_ids: int[n] token id of every row, or None.
    Returns:
        one ArtifactFlag per component.
    """
    out = []
    for r in rows:
        first = None if positions is None else float(np.mean((positions[r] >= 1) & (positions[r] <= FIRST_POSITIONS)))
        doc = _largest_share(units[r])
        tok = None if token_ids is None else _largest_share(token_ids[r])
        why = [name for name, v in (("first positions", first), ("one document", doc), ("one token", tok))
               if v is not None and v > max_share]
        out.append(ArtifactFlag(first_positions=first, one_document=doc, one_token=tok, flagged=bool(why),
                                reason=", ".join(why)))
    return out

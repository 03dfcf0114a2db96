"""Artifact flags and labels: where a component's strongest activations sit.

A heavy-tailed, stable source can still be an artifact of where tokens sit rather than what they
say: on the offline default of an earlier corpus, the most kurtotic component (excess kurtosis
≈ 5,900, stability 0.998) fired mostly at position 1, the first token after BOS. Such **positional**
components are excluded from the candidates (:mod:`darkmatter.analysis.candidates`) unless asked.

Concentration on one token id or in one document is a **label**, not an exclusion: token-level
directions are exactly what dark matter linear in x (Engels et al. 2024) should contain, and a
genuine sparse feature active in a few documents concentrates its top rows there. Both are read
on the *tail* of the source (the rows beyond :data:`TAIL_SD` standard deviations, or the top
:data:`TOP_N` rows where the tail is smaller), and the one-document share is judged against the
document-size distribution: the largest share one document would take of that many rows drawn
at random from all rows (so large documents are expected to hold many).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Top activations per component the position and token shares look at.
TOP_N = 50
#: A share above this marks concentration (positions: excluded; token, document: labelled).
MAX_SHARE = 0.5
#: Positions counted as "first positions" (after BOS at 0).
FIRST_POSITIONS = 2
#: The tail: rows whose source exceeds this many standard deviations.
TAIL_SD = 4.0
#: The one-document label needs the share to be beyond the document-size null at this level.
DOCUMENT_ALPHA = 0.01
#: Draws of the document-size null.
NULL_DRAWS = 400


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


def tail_rows(sources: np.ndarray, n_sd: float = TAIL_SD, chunk_size: int = 65536) -> list[np.ndarray]:
    """Rows where each source exceeds its mean by more than ``n_sd`` standard deviations (over all
    rows), streamed in two passes.

    Args:
        sources: float[n, k] (a memmap is fine).
    Returns:
        per component, int64[m_c] sorted row indices.
    """
    n, k = sources.shape
    s1, s2 = np.zeros(k), np.zeros(k)
    for s in range(0, n, chunk_size):
        c = np.asarray(sources[s:s + chunk_size], dtype=np.float64)
        s1 += c.sum(0)
        s2 += (c * c).sum(0)
    mean = s1 / max(n, 1)
    cut = mean + n_sd * np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 0.0))
    found: list[list[np.ndarray]] = [[] for _ in range(k)]
    for s in range(0, n, chunk_size):
        c = np.asarray(sources[s:s + chunk_size], dtype=np.float64)
        hit_rows, hit_cols = np.nonzero(c > cut)
        for j in np.unique(hit_cols):
            found[j].append(hit_rows[hit_cols == j] + s)
    return [np.concatenate(f) if f else np.zeros(0, dtype=np.int64) for f in found]


def document_share_p(share: float, m: int, sizes: np.ndarray, seed: int = 0, draws: int = NULL_DRAWS) -> float:
    """P(the largest share one document takes of ``m`` rows drawn uniformly from all rows ≥ ``share``):
    the document-size null of the one-document label (documents hold rows in proportion to their size).

    Args:
        share: observed largest share; m: rows in the tail; sizes: float[G] rows per document.
    Returns:
        (1 + #{draws ≥ share}) / (draws + 1).
    """
    if m == 0:
        return 1.0
    p = np.asarray(sizes, dtype=np.float64) / float(np.sum(sizes))
    counts = np.random.default_rng([seed, 1016]).multinomial(m, p, size=draws)
    return float((1 + (counts.max(1) / m >= share - 1e-12).sum()) / (draws + 1))


@dataclass(frozen=True)
class ArtifactFlag:
    """Where one component's strongest activations concentrate.

    Attributes:
        first_positions: share of its top rows at window positions 1..:data:`FIRST_POSITIONS` (None
            without positions).
        one_document: largest share of its tail rows in a single document (or window).
        one_document_p: that share under the document-size null (:func:`document_share_p`).
        one_token: largest share of its top rows on a single token id (None without token ids);
            token_id: that token.
        tail_rows: rows beyond :data:`TAIL_SD` s.d. (the tail read is the top :data:`TOP_N` rows when
            it is smaller); tail_documents: distinct documents among them;
        tail_token_share: share of the tail rows on ``token_id`` (None without token ids).
        positional: the first-positions share exceeds :data:`MAX_SHARE` (excluded from candidates).
        labels: ``"one token"``, ``"one document"``: concentration shown beside the component.
        reason: the positional flag and the labels in words ("" when none).
    """

    first_positions: float | None
    one_document: float
    one_document_p: float
    one_token: float | None
    token_id: int | None
    tail_rows: int
    tail_documents: int
    tail_token_share: float | None
    positional: bool
    labels: list[str]
    reason: str

    @property
    def flagged(self) -> bool:
        """Excluded from the candidates: a positional artifact."""
        return self.positional


def _largest(values: np.ndarray) -> tuple[int, float]:
    ids, counts = np.unique(values, return_counts=True)
    best = int(np.argmax(counts))
    return int(ids[best]), float(counts[best] / len(values))


def flag(rows: np.ndarray, tails: list[np.ndarray], units: np.ndarray, positions: np.ndarray | None,
         token_ids: np.ndarray | None, max_share: float = MAX_SHARE, seed: int = 0) -> list[ArtifactFlag]:
    """Positional flags and token / document labels of k components.

    Args:
        rows: int[k, m] top rows per component (:func:`top_rows`).
        tails: per component, the rows beyond :data:`TAIL_SD` s.d. (:func:`tail_rows`).
        units: int[n] document (or window) of every row.
        positions: int[n] window position of every row, or None (sources without windows).
        token_ids: int[n] token id of every row, or None.
        seed: the document-size null's draws.
    Returns:
        one ArtifactFlag per component.
    """
    _, sizes = np.unique(units, return_counts=True)
    out = []
    for top, tail in zip(rows, tails):
        read = tail if len(tail) >= len(top) else top
        first = (None if positions is None
                 else float(np.mean((positions[top] >= 1) & (positions[top] <= FIRST_POSITIONS))))
        _, doc = _largest(units[read])
        doc_p = document_share_p(doc, len(read), sizes, seed)
        tok_id, tok = (None, None) if token_ids is None else _largest(token_ids[top])
        tail_tok = None if token_ids is None else float(np.mean(token_ids[read] == tok_id))
        positional = first is not None and first > max_share
        labels = [name for name, hit in (("one token", tok is not None and tok > max_share),
                                         ("one document", doc > max_share and doc_p < DOCUMENT_ALPHA)) if hit]
        why = (["first positions"] if positional else []) + labels
        out.append(ArtifactFlag(first_positions=first, one_document=doc, one_document_p=doc_p, one_token=tok,
                                token_id=tok_id, tail_rows=int(len(tail)),
                                tail_documents=int(len(np.unique(units[read]))),
                                tail_token_share=tail_tok, positional=positional, labels=labels, reason=", ".join(why)))
    return out

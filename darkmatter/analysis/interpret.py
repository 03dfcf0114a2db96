"""Reading an ICA component: top-activating contexts, quantile samples, token counts, logit lens."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def extreme_rows(sources: np.ndarray, n: int, chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the n largest and n smallest values of every column, in one streamed pass.

    Args:
        sources: float[n_tokens, k] (memmap).
    Returns:
        (top: int64[k, n] rows by descending value, bottom: int64[k, n] by ascending value).
    """
    n_rows, k = sources.shape
    n = min(n, n_rows)
    top_idx = np.zeros((0, k), dtype=np.int64)
    top_val = np.zeros((0, k))
    bot_idx, bot_val = top_idx.copy(), top_val.copy()
    for start in range(0, n_rows, chunk_size):
        block = np.asarray(sources[start:start + chunk_size], dtype=np.float64)
        rows = np.arange(start, start + len(block))[:, None].repeat(k, 1)
        top_idx, top_val = _keep(np.concatenate([top_idx, rows]), np.concatenate([top_val, block]), n)
        bot_idx, neg = _keep(np.concatenate([bot_idx, rows]), np.concatenate([-bot_val, -block]), n)
        bot_val = -neg
    return top_idx.T, bot_idx.T


def _keep(idx: np.ndarray, val: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-val, axis=0, kind="stable")[:n]
    return np.take_along_axis(idx, order, 0), np.take_along_axis(val, order, 0)


def context(tokens: np.ndarray, window: int, position: int, width: int,
            decode: Callable[[int], str], bos_id: int) -> str:
    """The text around ``tokens[window, position]`` with that token marked ``[[like this]]``.

    Args:
        tokens: int[n_windows, ctx] token windows.
        width: tokens shown either side (clipped at the window edges; BOS dropped).
    """
    row = tokens[window]
    lo, hi = max(0, position - width), min(len(row), position + width + 1)
    parts = []
    for p in range(lo, hi):
        if row[p] == bos_id and p != position:
            continue
        text = decode(int(row[p]))
        parts.append(f"[[{text}]]" if p == position else text)
    return "".join(parts).replace("\n", "\\n")


def quantile_rows(values: np.ndarray, rows: np.ndarray,
                  quantiles: tuple[float, ...] = QUANTILES) -> list[tuple[float, int, float]]:
    """For each quantile q of ``values`` (a sample of one source), the sampled row closest to it.

    Args:
        values: float[m] source values at ``rows`` (int[m] token rows).
    Returns:
        (q, row, value) per quantile.
    """
    qs = np.quantile(values, quantiles)
    out = []
    for q, v in zip(quantiles, qs):
        i = int(np.argmin(np.abs(values - v)))
        out.append((q, int(rows[i]), float(values[i])))
    return out


def frequent_tokens(token_ids: np.ndarray, decode: Callable[[Any], str], n: int = 10) -> list[tuple[str, int]]:
    """The n most common tokens (decoded) among ``token_ids`` (int ids, or labels) with their counts."""
    counts = Counter(t.item() if isinstance(t, np.generic) else t for t in token_ids)
    return [(decode(t), c) for t, c in counts.most_common(n)]


def logit_lens(direction: np.ndarray, W_U: np.ndarray, decode: Callable[[int], str],
               n: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Tokens a direction promotes and suppresses when read straight through the unembedding
    (nostalgebraist 2020, "interpreting GPT: the logit lens"; final norm omitted).

    Args:
        direction: float[d_model] unit direction.
        W_U: float[d_model, d_vocab].
    Returns:
        (top n (token, logit), bottom n (token, logit)).
    """
    logits = direction @ W_U
    top = np.argsort(-logits)[:n]
    bottom = np.argsort(logits)[:n]
    return ([(decode(int(t)), float(logits[t])) for t in top],
            [(decode(int(t)), float(logits[t])) for t in bottom])


def histograms(sources: np.ndarray, bins: int = 60, threshold: float = 2.0,
               chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column histograms over every row (two streamed passes: range, then counts) and the
    share of rows beyond ±``threshold``.

    Args:
        sources: float[n_tokens, k] (memmap); threshold: in the sources' units (they have unit variance).
    Returns:
        (edges: float64[k, bins+1], counts: int64[k, bins], above: float64[k] share > threshold,
        below: float64[k] share < −threshold).
    """
    n, k = sources.shape
    lo, hi = np.full(k, np.inf), np.full(k, -np.inf)
    for start in range(0, n, chunk_size):
        block = np.asarray(sources[start:start + chunk_size], dtype=np.float64)
        lo, hi = np.minimum(lo, block.min(0)), np.maximum(hi, block.max(0))
    hi = np.where(hi > lo, hi, lo + 1.0)
    edges = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, bins + 1)[None]
    counts = np.zeros((k, bins), dtype=np.int64)
    above, below = np.zeros(k), np.zeros(k)
    for start in range(0, n, chunk_size):
        block = np.asarray(sources[start:start + chunk_size], dtype=np.float64)
        idx = np.clip(((block - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
        for c in range(k):
            counts[c] += np.bincount(idx[:, c], minlength=bins)
        above += (block > threshold).sum(0)
        below += (block < -threshold).sum(0)
    return edges, counts, above / n, below / n


def one_per_unit(rows: np.ndarray, units: np.ndarray, n: int) -> list[np.ndarray]:
    """For each component, the first ``n`` of its ranked rows with at most one row per unit
    (document), so that one repeated passage cannot fill a component's examples.

    Args:
        rows: int64[k, m] rows of each component, best first; units: int64[n_tokens] each row's document.
    Returns:
        k arrays of at most n rows each, in rank order.
    """
    out = []
    for ranked in rows:
        _, first = np.unique(units[ranked], return_index=True)
        out.append(ranked[np.sort(first)][:n])
    return out


def row_keys(index: np.ndarray, ctx: int) -> np.ndarray:
    """int64[n_tokens] sort keys window·ctx + position of the analysed rows (``index``: int[n_tokens, 2]
    in window-then-position order, as step 02 writes token_index.npy)."""
    return index[:, 0].astype(np.int64) * ctx + index[:, 1]


def context_values(tokens: np.ndarray, keys: np.ndarray, sources: np.ndarray, window: int, position: int,
                   width: int, decode: Callable[[int], str], bos_id: int) -> tuple[list[str], list[Any], int]:
    """The context of one token, token by token, with every component's source value at each.

    Args:
        tokens: int[n_windows, ctx]; keys: :func:`row_keys` of the analysed rows; sources:
            float[n_tokens, k] (memmap); width: tokens either side (BOS dropped).
    Returns:
        (decoded tokens; per token a float64[k] of source values, or None where the token is not
        an analysed row (BOS, a massive activation); the marked token's index).
    """
    ctx = tokens.shape[1]
    lo, hi = max(0, position - width), min(ctx, position + width + 1)
    texts: list[str] = []
    values: list[Any] = []
    at = 0
    for q in range(lo, hi):
        if tokens[window, q] == bos_id and q != position:
            continue
        if q == position:
            at = len(texts)
        texts.append(decode(int(tokens[window, q])))
        key = window * ctx + q
        i = int(np.searchsorted(keys, key))
        values.append(np.asarray(sources[i], dtype=np.float64) if i < len(keys) and keys[i] == key else None)
    return texts, values, at

"""Resampling by document: the units tokens are drawn in, disjoint halves, and a block bootstrap.

Tokens of one document (or one context window) are strongly dependent, so every resampling in
the pipeline draws whole units, never single tokens:

- FastICA restarts fit disjoint halves of the units (:func:`restart_rows`), so a component that
  reproduces across restarts reproduces on documents the other fit never saw.
- The sampling error of a source's excess kurtosis comes from a block bootstrap over units
  (Künsch 1989; Efron & Tibshirani 1993, ch. 8) built on per-unit power sums
  (:func:`unit_power_sums`, :func:`bootstrap_kurtosis`), so it keeps the within-document
  dependence that an iid formula such as √(24/n) ignores.
- The effective sample size is n divided by Kish's design effect: the ratio of the block to the
  token bootstrap variance of excess kurtosis (:func:`design_effect`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from darkmatter.distributed import SINGLE, Comm

#: Bootstrap draws for standard errors.
N_BOOTSTRAP = 200
#: Fewer document boundaries than this in the token windows: resample by window instead.
MIN_DOCUMENTS = 8


def units_of(index: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The resampling unit of every analysed row: its document where the token windows show
    at least :data:`MIN_DOCUMENTS` document boundaries, else its window (or row, for sources
    without windows).

    Windows are cut from a stream of documents separated by BOS (see
    :func:`darkmatter.sources.text.token_windows`); with BOS prepended, the document of a row is
    the number of separators before it in that stream.

    Args:
        index: int[n, 2] of (window, position) per row (``token_index.npy``).
        tokens: int[n_windows, context_size] token ids (``tokens.npy``), or None.
    Returns:
        (int64[n] unit id per row, non-decreasing where rows are in stream order; unit name:
        ``"document"`` or ``"window"``).
    Raises:
        ValueError: index is not [n, 2].
    """
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[1] != 2:
        raise ValueError(f"token index must be [n, 2] (window, position), got {index.shape}")
    window, position = index[:, 0].astype(np.int64), index[:, 1].astype(np.int64)
    if tokens is None or tokens.ndim != 2 or tokens.shape[1] < 2 or window.max(initial=0) >= len(tokens):
        return window, "window"
    bos = tokens[:, 0]
    if not np.all(bos == bos[0]):
        return window, "window"
    sep = tokens[:, 1:] == bos[0]  # separators in the body: a new document starts after each
    if sep.sum() < MIN_DOCUMENTS:  # too few boundaries to resample by (or none marked): windows
        return window, "window"
    before_window = np.concatenate([[0], np.cumsum(sep.sum(1))[:-1]])
    within = np.cumsum(sep, axis=1)  # separators up to and including body position p
    # a row at position p ≥ 1 has seen the separators at body positions < p (p − 1 in `within`)
    prior = np.where(position >= 2, within[window, np.maximum(position - 2, 0)], 0)
    return before_window[window] + prior, "document"


def restart_rows(units: np.ndarray, n_restarts: int, fraction: float, seed: int) -> list[np.ndarray]:
    """Row sets for FastICA restarts, drawn by unit.

    With ``fraction`` = 0.5 the restarts come in complementary pairs: restart 2j fits one
    random half of the units and restart 2j + 1 the other half, so each pair is disjoint.
    Otherwise each restart fits a fresh random ``fraction`` of the units.

    Args:
        units: int[n] unit id per row (:func:`units_of`).
        n_restarts: row sets to draw.
        fraction: share of units per restart, in (0, 1].
        seed: random seed (draw j uses ``[seed, 1012, j // 2]`` for pairs).
    Returns:
        n_restarts sorted int64 row-index arrays.
    Raises:
        ValueError: fraction outside (0, 1], or fewer than 2 units.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"resample fraction must lie in (0, 1], got {fraction}")
    ids = np.unique(units)
    if len(ids) < 2 and fraction < 1:
        raise ValueError("resampling by document needs at least 2 documents or windows")
    out = []
    for j in range(n_restarts):
        if fraction == 1:
            out.append(np.arange(len(units)))
            continue
        pair = fraction == 0.5
        rng = np.random.default_rng([seed, 1012, j // 2 if pair else j])
        perm = rng.permutation(ids)
        m = max(1, min(len(ids) - 1, int(round(fraction * len(ids)))))
        chosen = (perm[:m] if j % 2 == 0 else perm[m:]) if pair else perm[:m]
        out.append(np.flatnonzero(np.isin(units, chosen)))
    return out


@dataclass(frozen=True)
class UnitSums:
    """Per-unit power sums of k variables (centred on ``shift``).

    Attributes:
        count: float64[G] rows per unit.
        sums: float64[G, 4, k]: Σx, Σx², Σx³, Σx⁴ per unit.
    """

    count: np.ndarray
    sums: np.ndarray

    def excess_kurtosis(self, weights: np.ndarray | None = None) -> np.ndarray:
        """float64[..., k] excess kurtosis over all rows (weights: float[B, G] unit multiplicities)."""
        w = np.ones((1, len(self.count))) if weights is None else np.atleast_2d(weights)
        n = w @ self.count  # [B]
        s = np.einsum("bg,gpk->bpk", w, self.sums) / n[:, None, None]
        m1, m2, m3, m4 = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
        var = m2 - m1 ** 2
        c4 = m4 - 4 * m3 * m1 + 6 * m2 * m1 ** 2 - 3 * m1 ** 4
        kurt = c4 / np.maximum(var, 1e-300) ** 2 - 3.0
        return kurt[0] if weights is None else kurt


MAX_UNITS = 16384
"""Units beyond this many are pooled into this many groups (unit g goes to group g mod MAX_UNITS),
so the per-unit sums and bootstrap weights do not grow with n: a group of whole documents is
still a valid block (documents are independent of each other), and 16,384 blocks are plenty
for a bootstrap standard error."""


def unit_power_sums(x: np.ndarray, units: np.ndarray, shift: np.ndarray | None = None,
                    chunk_size: int = 65536, lo: int = 0, comm: Comm = SINGLE,
                    max_units: int = MAX_UNITS) -> UnitSums:
    """Power sums of ``x`` per unit, streamed in row chunks.

    Args:
        x: float[n, k] (a memmap is fine), e.g. sources.
        units: int[n] unit id per row.
        shift: float[k] subtracted first (the mean keeps the sums well conditioned); default 0.
        lo, comm: in a sharded run x holds global rows ``[lo, lo + m)`` of ``len(units)``, and the
            sums are added over ranks.
        max_units: more distinct units than this are pooled into this many groups
            (:data:`MAX_UNITS`), so memory does not grow with n.
    Returns:
        UnitSums over the G distinct units (or groups), in sorted unit order.
    Raises:
        ValueError: lengths differ.
    """
    if (len(units) != x.shape[0]) if not comm.sharded else (lo + x.shape[0] > len(units)):
        raise ValueError(f"{len(units)} unit ids for {x.shape[0]} rows")
    ids = np.unique(units)  # the row → unit map is built chunk by chunk: no n-length inverse
    pooled = len(ids) > max_units
    n_groups = max_units if pooled else len(ids)

    def group_of(u: np.ndarray) -> np.ndarray:
        g = np.searchsorted(ids, u)
        return g % max_units if pooled else g

    count = np.zeros(n_groups)
    for s in range(0, len(units), 1 << 20):
        count += np.bincount(group_of(units[s:s + (1 << 20)]), minlength=n_groups)
    k = x.shape[1]
    shift = np.zeros(k) if shift is None else np.asarray(shift, dtype=np.float64)
    sums = np.zeros((n_groups, 4, k))
    for s in range(0, x.shape[0], chunk_size):
        c = np.asarray(x[s:s + chunk_size], dtype=np.float64) - shift
        g = group_of(units[lo + s:lo + s + len(c)])
        # rows sorted by group, then summed run by run (np.add.reduceat): vectorised, unlike np.add.at
        order = np.argsort(g, kind="stable")
        gs = g[order]
        starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
        present = gs[starts]
        c = c[order]
        p = c.copy()
        for i in range(4):
            sums[present, i] += np.add.reduceat(p, starts, axis=0)
            p *= c
    return UnitSums(count=count, sums=comm.sum_np(sums))


def bootstrap_kurtosis(sums: UnitSums, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """Block-bootstrap draws of each variable's excess kurtosis: float64[n_boot, k]
    (units drawn with replacement, as many as there are)."""
    return np.concatenate([draws[0] for draws in paired_bootstrap([sums], n_boot, seed)])


def paired_bootstrap(sums: list[UnitSums], n_boot: int, seed: int, batch: int = 256) -> Iterator[list[np.ndarray]]:
    """Block-bootstrap draws of excess kurtosis for several sets of variables measured on the same
    units, each draw resampling the *same* units for every set (a paired bootstrap), in batches so
    that the weights never exceed ``batch × G``.

    Args:
        sums: per-unit power sums over the same G units (e.g. the real sources and the control's).
        n_boot: draws in all; seed: the draws' seed (each batch of ``batch`` draws has its own stream).
    Yields:
        per batch, one float64[b, k_i] array of excess kurtosis per entry of ``sums``.
    Raises:
        ValueError: the sums cover different units.
    """
    G = len(sums[0].count)
    if any(len(s.count) != G or not np.array_equal(s.count, sums[0].count) for s in sums):
        raise ValueError("a paired bootstrap needs the same units in every set of sums")
    p = np.full(G, 1.0 / G)
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        rng = np.random.default_rng([seed, 1013, start // batch + 1])
        weights = rng.multinomial(G, p, size=b).astype(np.float64)
        yield [s.excess_kurtosis(weights) for s in sums]


def design_effect(x: np.ndarray, units: np.ndarray, seed: int, n_boot: int = N_BOOTSTRAP,
                  shift: np.ndarray | None = None, lo: int = 0, comm: Comm = SINGLE,
                  block: UnitSums | None = None) -> tuple[float, np.ndarray]:
    """Kish's design effect of excess kurtosis: block-bootstrap variance over units divided by
    the variance when the same rows are shuffled into pseudo-units of the same sizes (which is
    the token-level, iid bootstrap). The median over the k variables is the run's figure.

    Args:
        x: float[n, k]; units: int[n]; shift: float[k]; lo, comm: sharded runs (see :func:`unit_power_sums`).
        block: x's per-unit sums when already computed (:func:`unit_power_sums` with the same shift).
    Returns:
        (median design effect ≥ 1 in practice, float64[k] standard error of each variable's
        excess kurtosis from the block bootstrap).
    """
    block = block if block is not None else unit_power_sums(x, units, shift, lo=lo, comm=comm)
    shuffled = unit_power_sums(x, np.random.default_rng([seed, 1014]).permutation(units), shift, lo=lo, comm=comm)
    se_block = bootstrap_kurtosis(block, n_boot, seed).std(0, ddof=1)
    se_token = bootstrap_kurtosis(shuffled, n_boot, seed).std(0, ddof=1)
    ratio = (se_block / np.maximum(se_token, 1e-300)) ** 2
    return float(np.median(ratio)), se_block

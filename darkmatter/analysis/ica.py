"""PCA whitening, FastICA over several seeds, matching across seeds, sign convention.

The estimator is FastICA (Hyvärinen & Oja 2000) with symmetric decorrelation
and the logcosh contrast, on data we whiten ourselves from the streamed covariance:
by default our PyTorch engine (:mod:`darkmatter.analysis.ica_engine`), or scikit-learn's
``FastICA`` (``whiten=False``) as the reference. Components
are matched across seeds with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on |cos| of their mixing directions.

Conventions, for k components in a d_model-wide residual ``r``:
    whitened  z = (r - mean) @ whitener.T,   whitener: [k, d_model]
    sources   s = z @ W.T = (r - mean) @ unmixing.T,   unmixing = W @ whitener: [k, d_model]
    r - mean ≈ s @ mixing.T,  mixing = dewhitener.T @ W.T: [d_model, k]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

from darkmatter import threads
from darkmatter.analysis.ica_engine import RowShard
from darkmatter.analysis.stats import PCA, central_from_raw
from darkmatter.distributed import SINGLE, Comm

Rows = np.ndarray | RowShard
"""Whitened data: an in-memory float[n, k] array, or a :class:`RowShard` (a memmap streamed from
disk, or this rank's rows of a sharded run)."""


@dataclass(frozen=True)
class Whitening:
    """PCA whitening to k components.

    Attributes:
        mean: float64[d_model].
        whitener: float64[k, d_model], rows = components / sqrt(eigenvalue).
        dewhitener: float64[k, d_model], rows = components * sqrt(eigenvalue).
        explained: fraction of the residual variance the k components keep.
    """

    mean: np.ndarray
    whitener: np.ndarray
    dewhitener: np.ndarray
    explained: float

    @property
    def k(self) -> int:
        return self.whitener.shape[0]

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """float[m, d_model] → float64[m, k], unit covariance."""
        return (np.asarray(rows, dtype=np.float64) - self.mean) @ self.whitener.T


def pca_whitening(pca: PCA, mean: np.ndarray, k: int) -> Whitening:
    """Whitening from the top-k principal components.

    Raises:
        ValueError: k exceeds the number of components with non-zero variance.
    """
    vals = pca.eigenvalues[:k]
    if k > len(pca.eigenvalues) or vals[-1] <= 1e-12 * vals[0]:
        raise ValueError(f"cannot whiten to {k} components: the residual has only "
                         f"{int((pca.eigenvalues > 1e-12 * pca.eigenvalues[0]).sum())} non-degenerate")
    comps = pca.components[:k]
    return Whitening(mean=mean, whitener=comps / np.sqrt(vals)[:, None],
                     dewhitener=comps * np.sqrt(vals)[:, None],
                     explained=float(vals.sum() / pca.eigenvalues.sum()))


def whiten_rows(array: np.ndarray, whitening: Whitening, rows: np.ndarray | None = None,
                chunk_size: int = 16384, out: np.ndarray | None = None, lo: int = 0,
                progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Whitened data ``z = (array[rows] - mean) @ whitener.T``, built chunk by chunk.

    Args:
        array: float[n, d_model] (a memmap is read in chunks of ``chunk_size`` rows).
        rows: int[m] sorted row indices (None: every row).
        out: float32[m', k] to fill with z rows ``[lo, lo + m')`` (a memmap keeps them on disk; a
            sharded run's rank fills its own rows); None: a new in-memory array of all m rows.
        lo: first z row to compute (a multiple of ``chunk_size``, so every chunk is the same
            whatever the sharding).
        progress: called with the rows of each chunk once it is written (e.g. a tqdm's update), or None.
    Returns:
        float32[m', k] (``out``): float32 is safe on whitened data; the engine's sums run in float64.
    """
    rows = np.arange(array.shape[0]) if rows is None else rows
    out = np.empty((len(rows), whitening.k), dtype=np.float32) if out is None else out
    for s in range(0, len(out), chunk_size):
        m = min(chunk_size, len(out) - s)
        out[s:s + m] = whitening.apply(array[rows[lo + s:lo + s + m]])
        if progress is not None:
            progress(m)
    return out


Progress = Callable[[int, str, int, int], None]
"""``progress(seed, phase, iteration, n_settled)`` after every FastICA iteration (torch engine), and
once more when the fit ends (every backend), with phase :data:`DONE`, its iterations and the rows
settled (k where it converged; 0 where unknown)."""

#: The phase of the last ``progress`` call of a fit: the fit has ended.
DONE = "done"


@dataclass(frozen=True)
class SeedFit:
    """How one FastICA restart ended (ica.json ``seeds``; see :class:`ICAFit`)."""

    seed: int
    n_tokens: int
    n_iter: int
    converged: bool
    final_change: float | None
    n_settled: int | None
    stopped_on_stability: bool
    settled_converged: bool | None
    n_iter_symmetric: int | None


@dataclass(frozen=True)
class ICAFit:
    """One FastICA run on whitened data.

    Attributes:
        W: float64[k, k] orthogonal unmixing in whitened space (s = z @ W.T).
        seed: random_state of the run.
        n_iter: iterations taken.
        converged: reached ``tol`` before ``max_iter``.
        final_change: max over components of 1 − |⟨w⁺, w⟩| at the last step (None where the
            backend does not expose it: scikit-learn).
        n_settled: components that stopped moving (torch engine; all k when converged, None
            for scikit-learn).
        stopped_on_stability: the torch engine stopped because its settled set was stable.
        settled_converged: every settled component then met ``tol`` (torch engine).
        n_iter_symmetric: iterations of the symmetric phase, before the settled rows were
            refined alone (torch engine; None for scikit-learn).
        n_tokens: rows the run was fitted on.
        settled: bool[k], the rows of W that stopped moving (torch engine; None for scikit-learn,
            which reports convergence only for all rows together).
    """

    W: np.ndarray
    seed: int
    n_iter: int
    converged: bool
    final_change: float | None = None
    n_settled: int | None = None
    stopped_on_stability: bool = False
    settled_converged: bool | None = None
    n_iter_symmetric: int | None = None
    n_tokens: int = 0
    settled: np.ndarray | None = None

    def record(self) -> SeedFit:
        """Per-seed convergence report for ica.json."""
        return SeedFit(seed=self.seed, n_tokens=self.n_tokens, n_iter=self.n_iter, converged=self.converged,
                       final_change=self.final_change, n_settled=self.n_settled,
                       stopped_on_stability=self.stopped_on_stability,
                       settled_converged=self.settled_converged, n_iter_symmetric=self.n_iter_symmetric)


def fastica(z: np.ndarray, seed: int, max_iter: int = 200, tol: float = 1e-6) -> ICAFit:
    """scikit-learn FastICA (parallel, logcosh) on whitened z: float[n, k], fitted in float64
    (float32 input can return wrong directions at 1M rows: ../shared/NOTES.md)."""
    z = np.asarray(z, dtype=np.float64)
    est = FastICA(n_components=z.shape[1], algorithm="parallel", whiten=False, fun="logcosh",
                  max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(z)
    not_converged = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return ICAFit(W=est.components_.copy(), seed=seed, n_iter=int(est.n_iter_),
                  converged=not not_converged, n_tokens=len(z))


def fit(z: Rows, seed: int, max_iter: int, tol: float, backend: str = "torch",
        device: str = "cpu", progress: Progress | None = None) -> ICAFit:
    """One FastICA run with ``backend``: ``torch`` (:func:`darkmatter.analysis.ica_engine.fastica_torch`
    on ``device``, which stops once the identifiable components are stable; ``converged`` then
    stays False) or ``sklearn`` (:func:`fastica`, the reference, on the CPU).

    Args:
        z: float[n, k] whitened data (float32 is fine for the torch engine), or a
            :class:`~darkmatter.analysis.ica_engine.RowShard` (streamed or sharded; torch engine).
        progress: called after every iteration of the torch engine and once when the fit ends
            (see :data:`Progress`).
    Raises:
        ValueError: unknown backend, or scikit-learn asked to fit a sharded run.
    """
    out = _fit(z, seed, max_iter, tol, backend, device, progress)
    if progress is not None:
        k = out.W.shape[0]
        progress(seed, DONE, out.n_iter, k if out.converged else (out.n_settled or 0))
    return out


def _fit(z: Rows, seed: int, max_iter: int, tol: float, backend: str, device: str,
         progress: Progress | None) -> ICAFit:
    if backend == "sklearn":
        if isinstance(z, RowShard):
            if z.comm.sharded:
                raise ValueError("scikit-learn's FastICA cannot run sharded: use `ica_backend` torch")
            z = z[0:z.shape[0]]
        return fastica(z, seed, max_iter, tol)
    if backend == "torch":
        from darkmatter.analysis.ica_engine import fastica_torch

        report = None if progress is None else (lambda phase, it, settled: progress(seed, phase, it, settled))
        f = fastica_torch(z, seed, max_iter, tol, device=device, progress=report)
        return ICAFit(W=f.W, seed=seed, n_iter=f.n_iter, converged=f.converged,
                      final_change=float(np.nanmax(f.final_change)), n_settled=f.n_settled,
                      stopped_on_stability=f.stopped_on_stability, settled_converged=f.settled_converged,
                      n_iter_symmetric=f.phases.get("full", f.n_iter), n_tokens=n_rows(z),
                      settled=np.asarray(f.settled, dtype=bool))
    raise ValueError(f"unknown ICA backend {backend!r}: torch or sklearn")


def n_rows(z: Rows) -> int:
    """Rows of z on every rank together."""
    return z.n if isinstance(z, RowShard) else len(z)


def restrict(z: Rows, rows: np.ndarray | None) -> Rows:
    """z limited to the sorted row numbers ``rows`` (None: z): a view for a RowShard, a copy of an array."""
    if rows is None or len(rows) == n_rows(z):
        return z
    return z.restrict(rows) if isinstance(z, RowShard) else z[rows]


def fit_seeds(z: Rows, seeds: list[int], max_iter: int, tol: float,
              restarts: list[np.ndarray] | None = None, backend: str = "torch", device: str = "cpu",
              progress: Progress | None = None) -> list[ICAFit]:
    """FastICA restarts for the stability check (after ICASSO, Himberg et al. 2004).

    The first seed fits all of z; every later seed fits its own row set from a new
    initialisation: ``restarts[i - 1]``, drawn by document
    (:func:`darkmatter.analysis.resampling.restart_rows`: complementary halves of the documents).
    A component that reappears in every restart is then reproducible on documents the other
    fit never saw, not only across initialisations: with restarts on the same rows, FastICA
    reproduces the sample-specific extrema of finite Gaussian data too (measured: 2 of 10
    "stable" components on 20k Gaussian rows; 0 with half-data restarts).

    On the CPU (torch engine, one process) the restarts run side by side, one per usable CPU,
    each with one intra-op thread (:func:`darkmatter.threads.one_thread_per_task`): a FastICA step
    at 200k × 25 is many small parallel regions, where a second thread gains 1.5× and a second
    fit 2×, and a single-threaded fit does not wait on a thread that lost its core on a busy
    machine. Every fit's arithmetic is then the same whatever the machine's thread count.

    Args:
        z: float[n, k] whitened data (or a RowShard: restarts are then views of it).
        restarts: one sorted int row-index array per later seed (None: every restart sees all rows).
        backend, device, progress: see :func:`fit`.
    Raises:
        ValueError: no seeds, or ``restarts`` does not have one row set per later seed.
    """
    if not seeds:
        raise ValueError("need at least one seed")
    if restarts is not None and len(restarts) != len(seeds) - 1:
        raise ValueError(f"{len(restarts)} restart row sets for {len(seeds) - 1} later seeds")
    jobs = [(z, seeds[0])] + [(restrict(z, None if restarts is None else restarts[i]), seed)
                              for i, seed in enumerate(seeds[1:])]
    sharded = isinstance(z, RowShard) and z.comm.sharded
    workers = threads.fit_workers(len(jobs)) if backend == "torch" and not sharded and device == "cpu" else 1
    if workers <= 1:
        return [fit(rows, seed, max_iter, tol, backend, device, progress) for rows, seed in jobs]
    with threads.one_thread_per_task(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: fit(job[0], job[1], max_iter, tol, backend, device, progress), jobs))


def mixing_directions(W: np.ndarray, whitening: Whitening) -> np.ndarray:
    """Unit-norm mixing directions in d_model space: float64[k, d_model] (row i writes source i)."""
    mixing = W @ whitening.dewhitener  # [k, d_model]; W orthogonal so W^-T = W
    return mixing / np.linalg.norm(mixing, axis=1, keepdims=True)


def match(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of unit rows by |cos|.

    Args:
        reference, other: float[k, d] unit rows.
    Returns:
        (perm: int[k] with other[perm[i]] matched to reference[i], abs_cos: float[k]).
    """
    sim = np.abs(reference @ other.T)
    rows, cols = linear_sum_assignment(-sim)
    perm = np.empty(len(reference), dtype=int)
    perm[rows] = cols
    return perm, sim[np.arange(len(reference)), perm]


def stability(reference: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """float[k]: for each reference component, its lowest matched |cos| over the other seeds
    (1.0 when there are no other seeds)."""
    if not others:
        return np.ones(len(reference))
    return np.min([match(reference, o)[1] for o in others], axis=0)


def whitened_gaussian(n: int, k: int, seed: int, chunk: int = 65536, out: np.ndarray | None = None, lo: int = 0,
                      comm: Comm = SINGLE) -> np.ndarray:
    """float32[n, k] Gaussian rows whitened by their own sample covariance (or this rank's rows of them).

    This is a Gaussian surrogate of PCA-whitened residual data (whitening removes
    the covariance, so a surrogate "with the residual's covariance" looks like this
    after the same whitening); re-whitening makes its sample covariance the identity,
    as the real whitened data's is. Row chunk c (global rows ``[c·chunk, (c+1)·chunk)``) is drawn
    from its own stream, seeded by (seed, c), and its sums are float32 products added in float64,
    so any sharding on the chunk grid gives the same rows bit for bit. Needs n × k × 4 bytes
    (the rows held here) and no float64 copy.

    Args:
        out: float32[m, k] to fill with global rows ``[lo, lo + m)`` (a memmap keeps them on disk);
            None: a new array of all n rows.
        lo: a multiple of ``chunk`` when ``comm`` is sharded.
        comm: adds the moment sums over ranks.
    Returns:
        ``out``.
    """
    out = np.empty((n, k), dtype=np.float32) if out is None else out
    hi = lo + len(out)
    chunks = range(lo // chunk, -(-hi // chunk))

    def draw(c: int) -> np.ndarray:
        return np.random.default_rng([seed, 1011, c]).standard_normal((min(chunk, n - c * chunk), k), dtype=np.float32)

    s1 = np.zeros(k)
    s2 = np.zeros((k, k))
    for c in chunks:
        g = draw(c)
        out[c * chunk - lo:c * chunk - lo + len(g)] = g
        s1 += g.sum(0)
        s2 += g.T @ g
    s1, s2 = comm.sum_np(s1), comm.sum_np(s2)
    mean = s1 / n
    vals, vecs = np.linalg.eigh(s2 / n - np.outer(mean, mean))
    whitener = (vecs / np.sqrt(vals)) @ vecs.T
    for c in chunks:
        a = c * chunk - lo
        out[a:a + chunk] = (np.asarray(out[a:a + chunk], dtype=np.float64) - mean) @ whitener
    return out


class Projected:
    """A lazy float64[n, k] view of the sources ``z @ W.T`` (row slices only), so their moments
    stream in chunks (:func:`darkmatter.analysis.stats.streaming_moments`) without an n × k copy."""

    def __init__(self, z: np.ndarray, W: np.ndarray):
        self.z, self.W = z, np.asarray(W, dtype=np.float64)
        self.shape = (z.shape[0], self.W.shape[0])

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self.z[rows], dtype=np.float64) @ self.W.T


def source_moments(z: Rows, W: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(skew, excess kurtosis) of every source ``z @ W.T`` over all n rows (every rank's), streamed:
    two float64[k] arrays (power sums in float64, added over ranks)."""
    W = np.asarray(W, dtype=np.float64)
    blocks = ((b.double().cpu().numpy() for b in z.blocks()) if isinstance(z, RowShard)
              else (np.asarray(z[s:s + chunk], dtype=np.float64) for s in range(0, len(z), chunk)))
    sums = np.zeros((4, W.shape[0]))
    for block in blocks:
        src = block @ W.T
        p = src.copy()
        for i in range(4):
            sums[i] += p.sum(0)
            p *= src
    if isinstance(z, RowShard):
        sums = z.comm.sum_np(sums)
    _, _, skew, kurt = central_from_raw(n_rows(z), *sums)
    return skew, kurt


def _row_chunks(z: Rows, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(global chunk number, float32[m, k] rows) of z's rows on this rank, on z's chunk grid."""
    if isinstance(z, RowShard):
        first = z.lo // z.chunk
        for i, block in enumerate(z.blocks()):
            yield first + i, block.float().cpu().numpy()
        return
    for c, s in enumerate(range(0, len(z), chunk)):
        yield c, np.asarray(z[s:s + chunk], dtype=np.float32)


def norm_matched_surrogate(z: Rows, seed: int, chunk: int = 16384,
                           scratch: Callable[[tuple[int, int]], np.ndarray] | None = None) -> Rows:
    """The matched null of the whitened rows z: every row keeps its norm and its place (so its
    document), and gets a direction drawn uniformly on the sphere; then the rows are re-whitened.

    This is an elliptical (spherically symmetric after whitening) distribution with the real data's
    norm distribution: a scale mixture that carries the real rows' heavy-tailed norms, their
    dependence within documents and their sample size, but no preferred direction, so whatever
    FastICA extracts from it is what the optimisation and the norms alone give (Fang, Kotz & Ng
    1990, "Symmetric multivariate and related distributions"). Row chunk c draws its directions from
    the stream ``[seed, 1015, c]`` on z's chunk grid, and sums are float64 (added over ranks), so the
    rows are the same whatever the sharding.

    Args:
        z: float[n, k] whitened rows (an array, or a RowShard: this rank's rows).
        scratch: makes the float32[m, k] array the rows go in (a memmap on disk for streamed data);
            None: memory.
    Returns:
        float32[n, k] for an array z; for a RowShard, the same shard with the surrogate as its data.
    """
    shard = z if isinstance(z, RowShard) else None
    grid = shard.chunk if shard is not None else chunk
    m, k = (int(shard.data.shape[0]), shard.k) if shard is not None else z.shape
    out = scratch((m, k)) if scratch is not None else np.empty((m, k), dtype=np.float32)
    lo = shard.lo if shard is not None else 0
    s1, s2 = np.zeros(k), np.zeros((k, k))
    for c, rows in _row_chunks(z if shard is None else replace(shard, subset=None), grid):
        g = np.random.default_rng([seed, 1015, c]).standard_normal(rows.shape, dtype=np.float32)
        g *= (np.linalg.norm(rows, axis=1) / np.maximum(np.linalg.norm(g, axis=1), 1e-30))[:, None]
        a = max(c * grid, lo) - lo
        out[a:a + len(g)] = g
        s1 += g.sum(0, dtype=np.float64)
        s2 += (g.T @ g).astype(np.float64)
    comm = shard.comm if shard is not None else SINGLE
    n = n_rows(z)
    s1, s2 = comm.sum_np(s1), comm.sum_np(s2)
    mean = s1 / n
    vals, vecs = np.linalg.eigh(s2 / n - np.outer(mean, mean))
    whitener = (vecs / np.sqrt(np.maximum(vals, 1e-30))) @ vecs.T
    for a in range(0, m, grid):
        out[a:a + grid] = (np.asarray(out[a:a + grid], dtype=np.float64) - mean) @ whitener
    if shard is None:
        return out
    data = out if isinstance(out, np.memmap) else torch.as_tensor(out, device=shard.device).to(shard.dtype)
    return replace(shard, data=data, subset=None, cols=None)


@dataclass(frozen=True)
class ControlResult:
    """FastICA on the matched null (:func:`norm_matched_surrogate`): what ICA "finds" where there is
    nothing to find but the real rows' norms.

    Attributes:
        fits: one ICAFit per seed.
        reappearance: each control component's reappearance in the control's restarts.
        source_excess_kurtosis: float[k] of the first seed's sources over all rows.
        z: the surrogate rows (kept for the paired floor test; dropped from results).
    """

    fits: list[ICAFit]
    reappearance: Any
    source_excess_kurtosis: np.ndarray
    z: Any = None

    def summary(self, max_iter: int) -> ControlSummary:
        """Counts, kurtosis quantiles, the whole kurtosis distribution and per-seed fits; ``max_iter`` is
        the iteration budget the control got."""
        kurt = self.source_excess_kurtosis
        freq = np.nan_to_num(self.reappearance.frequency)
        return ControlSummary(
            n_stable=int(self.reappearance.stable.sum()),
            stability_max=float(freq.max()),
            stability_median=float(np.median(freq)),
            source_excess_kurtosis_max_abs=float(np.abs(kurt).max()),
            source_excess_kurtosis_median=float(np.median(kurt)),
            source_excess_kurtosis_max=float(kurt.max()),
            seeds=[f.record() for f in self.fits], max_iter=max_iter,
            source_excess_kurtosis=sorted((float(v) for v in kurt), reverse=True),
            n_settled=int(self.fits[0].settled.sum()) if self.fits[0].settled is not None else None)


@dataclass(frozen=True)
class ControlSummary:
    """What FastICA reports on the matched null (ica.json ``control``).

    Attributes:
        n_stable: components stable across restarts in the null (reappearance, as for the real run).
        stability_max, stability_median: of the control components' reappearance frequencies.
        source_excess_kurtosis_max_abs: the largest |excess kurtosis| FastICA extracted from the null.
        source_excess_kurtosis_median, source_excess_kurtosis_max: of the first seed's sources.
        seeds: how each restart ended.
        max_iter: the iteration budget the control got (the real fits' budget, same phases).
        source_excess_kurtosis: every source's excess kurtosis (first seed, all rows), descending.
        n_settled: rows of the first seed's W the engine called settled (None for scikit-learn).
    """

    n_stable: int
    stability_max: float
    stability_median: float
    source_excess_kurtosis_max_abs: float
    source_excess_kurtosis_median: float
    source_excess_kurtosis_max: float
    seeds: list[SeedFit]
    max_iter: int
    source_excess_kurtosis: list[float]
    n_settled: int | None


#: The control's null, in words (reports say which null every floor figure is read against).
CONTROL_NULL = ("a norm-matched elliptical surrogate of the whitened residual: every token keeps its norm and its "
                "document, its direction is drawn uniformly at random (no preferred direction), run through the "
                "same FastICA seeds, restarts and optimisation")


def matched_control(z: Rows, seeds: list[int], max_iter: int, tol: float, whitening: Whitening | None = None,
                    restarts: list[np.ndarray] | None = None, backend: str = "torch", device: str = "cpu",
                    progress: Progress | None = None, scratch: Callable[[tuple[int, int]], np.ndarray] | None = None,
                    stable_cos: float = 0.9, stable_frequency: float = 0.9) -> ControlResult:
    """Run :func:`fit_seeds` with ``seeds``, the same budget and the same restart row sets as the
    real fits, on the norm-matched surrogate of z (:func:`norm_matched_surrogate`, seeded by
    ``seeds[0]``), and measure the reappearance and source kurtosis it reports anyway.

    With ``whitening`` (the real run's), stability is measured on the d_model mixing directions
    exactly as for the real components; without it, on the rows of W.

    Args:
        z: the real whitened rows (array or RowShard); the surrogate is laid out the same way.
        scratch: where the surrogate's rows go (see :func:`norm_matched_surrogate`); None: memory.
    Raises:
        ValueError: fewer than 1 seed.
    """
    from darkmatter.analysis.decompose import reappearance

    if not seeds:
        raise ValueError("the control needs at least one seed")
    zc = norm_matched_surrogate(z, seeds[0], scratch=scratch)
    fits = fit_seeds(zc, seeds, max_iter, tol, restarts, backend, device, progress)
    mats = [f.W if whitening is None else mixing_directions(f.W, whitening) for f in fits]
    again = reappearance(mats[0], mats[1:], [f.settled for f in fits[1:]], stable_cos, stable_frequency)
    _, kurt = source_moments(zc, fits[0].W)
    return ControlResult(fits=fits, reappearance=again, source_excess_kurtosis=kurt, z=zc)

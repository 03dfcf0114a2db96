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
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

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
                chunk_size: int = 16384, out: np.ndarray | None = None, lo: int = 0) -> np.ndarray:
    """Whitened data ``z = (array[rows] - mean) @ whitener.T``, built chunk by chunk.

    Args:
        array: float[n, d_model] (a memmap is read in chunks of ``chunk_size`` rows).
        rows: int[m] sorted row indices (None: every row).
        out: float32[m', k] to fill with z rows ``[lo, lo + m')`` (a memmap keeps them on disk; a
            sharded run's rank fills its own rows); None: a new in-memory array of all m rows.
        lo: first z row to compute (a multiple of ``chunk_size``, so every chunk is the same
            whatever the sharding).
    Returns:
        float32[m', k] (``out``): float32 is safe on whitened data; the engine's sums run in float64.
    """
    rows = np.arange(array.shape[0]) if rows is None else rows
    out = np.empty((len(rows), whitening.k), dtype=np.float32) if out is None else out
    for s in range(0, len(out), chunk_size):
        out[s:s + chunk_size] = whitening.apply(array[rows[lo + s:lo + s + min(chunk_size, len(out) - s)]])
    return out


Progress = Callable[[int, str, int, int], None]
"""``progress(seed, phase, iteration, n_settled)`` after every FastICA iteration (torch engine)."""


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
        progress: called after every iteration of the torch engine (see :data:`Progress`).
    Raises:
        ValueError: unknown backend, or scikit-learn asked to fit a sharded run.
    """
    if backend == "sklearn":
        if isinstance(z, RowShard):
            if z.comm.sharded:
                raise ValueError("scikit-learn's FastICA cannot run sharded: use --ica-backend torch")
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
    fits = [fit(z, seeds[0], max_iter, tol, backend, device, progress)]
    for i, seed in enumerate(seeds[1:]):
        fits.append(fit(restrict(z, None if restarts is None else restarts[i]), seed, max_iter, tol, backend,
                        device, progress))
    return fits


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


@dataclass(frozen=True)
class ControlResult:
    """FastICA on a Gaussian surrogate: what ICA "finds" in pure noise.

    Attributes:
        fits: one ICAFit per seed.
        stability: float[k] lowest matched |cos| of each component across the seeds.
        source_excess_kurtosis: float[k] of the first seed's sources over all rows.
    """

    fits: list[ICAFit]
    stability: np.ndarray
    source_excess_kurtosis: np.ndarray

    def summary(self, stable_cos: float, max_iter: int) -> ControlSummary:
        """n_stable (matched |cos| ≥ ``stable_cos``), stability and kurtosis quantiles, the whole
        kurtosis distribution, per-seed fits; ``max_iter`` is the iteration budget the control got."""
        kurt = self.source_excess_kurtosis
        return ControlSummary(
            n_stable=int((self.stability >= stable_cos).sum()),
            stability_max=float(self.stability.max()),
            stability_median=float(np.median(self.stability)),
            source_excess_kurtosis_max_abs=float(np.abs(kurt).max()),
            source_excess_kurtosis_median=float(np.median(kurt)),
            source_excess_kurtosis_max=float(kurt.max()),
            seeds=[f.record() for f in self.fits], max_iter=max_iter,
            source_excess_kurtosis=sorted((float(v) for v in kurt), reverse=True),
            n_settled=int(self.fits[0].settled.sum()) if self.fits[0].settled is not None else None)


@dataclass(frozen=True)
class ControlSummary:
    """What FastICA reports on the Gaussian surrogate (ica.json ``gaussian_control``).

    Attributes:
        n_stable: components stable across restarts in pure noise (matched |cos| ≥ the threshold).
        stability_max, stability_median: of the lowest matched |cos| per component.
        source_excess_kurtosis_max_abs: the largest |excess kurtosis| FastICA extracted from noise.
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


def gaussian_control(n: int, k: int, seeds: list[int], max_iter: int, tol: float,
                     whitening: Whitening | None = None, restarts: list[np.ndarray] | None = None,
                     backend: str = "torch", device: str = "cpu",
                     progress: Progress | None = None, like: RowShard | None = None,
                     scratch: Callable[[tuple[int, int]], np.ndarray] | None = None) -> ControlResult:
    """Run :func:`fit_seeds` with ``seeds``, the same budget and the same restart row sets as the
    real fits, on :func:`whitened_gaussian` data of the real run's shape (n tokens × k
    components), and measure the stability and source kurtosis it reports anyway. The
    surrogate's data seed is ``seeds[0]``.

    With ``whitening`` (the real run's), stability is measured on the d_model mixing
    directions exactly as for the real components; without it, on the rows of W.

    Args:
        like: the real data's shard: the surrogate is laid out the same way (the same rows on
            this rank, the same chunks, in memory or streamed as the real data is).
        scratch: makes the float32[m, k] array the surrogate's rows go in (e.g. a memmap on disk
            when the real data is streamed); None: memory.
    Raises:
        ValueError: fewer than 1 seed.
    """
    if not seeds:
        raise ValueError("the Gaussian control needs at least one seed")
    z: Rows
    if like is None:
        z = whitened_gaussian(n, k, seeds[0])
    else:
        m = int(like.data.shape[0])
        out = scratch((m, k)) if scratch is not None else np.empty((m, k), dtype=np.float32)
        whitened_gaussian(n, k, seeds[0], like.chunk, out, like.lo, like.comm)
        data = out if isinstance(out, np.memmap) else torch.as_tensor(out, device=like.device).to(like.dtype)
        z = replace(like, data=data, subset=None, n_rows=n)
    fits = fit_seeds(z, seeds, max_iter, tol, restarts, backend, device, progress)
    mats = [f.W if whitening is None else mixing_directions(f.W, whitening) for f in fits]
    stab = stability(mats[0], mats[1:])
    _, kurt = source_moments(z, fits[0].W)
    return ControlResult(fits=fits, stability=stab, source_excess_kurtosis=kurt)

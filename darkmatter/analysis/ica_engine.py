"""FastICA in PyTorch: the estimator of scikit-learn's parallel FastICA, with a stopping rule
that works when part of the data is Gaussian.

The update is the symmetric fixed-point iteration of Hyvärinen & Oja (2000) with the
logcosh contrast (g = tanh), exactly as scikit-learn's ``algorithm="parallel"``:

    W⁺ = E[g(W z) zᵀ] − diag(E[g'(W z)]) W,   W ← (W⁺ W⁺ᵀ)^(-1/2) W⁺

on whitened data z. Data products run in the data's dtype (float32 is fine on whitened
data) on CPU or CUDA, chunk by chunk, and every sum over rows accumulates in float64, so
a million rows do not lose the digits the k × k update needs.

Stopping. With a Gaussian subspace present (SAE residuals have one), FastICA never meets
its tolerance: the Gaussian components have no preferred rotation and keep wandering, and the
symmetric decorrelation against them makes the identifiable components jitter. The engine
therefore tracks, per component, the change ``1 − |⟨w_i⁺, w_i⟩|``; a component is *converged*
when every change is below ``tol``. Otherwise a component is *settled* when it moved less than
``settle_tol`` over the last ``patience`` iterations, and the symmetric phase stops when the
settled set has stayed the same for another ``patience`` iterations while the other
components still jump by a median of ``wander_tol`` or more per iteration (the identifiable
components have stopped moving, the rest are wandering rather than converging slowly).
Measured on 1M × 100 residual-like data (30 sources at excess kurtosis 1, 70 Gaussian):
identifiable rows jitter by ~2e-3 per iteration and ≤ 7e-3 over 10 iterations, Gaussian ones
move by 0.16-0.9 per iteration (0.016-0.6, median ≥ 0.09, in a 16-dimensional Gaussian
subspace). On the offline default's real residual nothing wanders: every component moves by
1e-4 to 5e-3 per iteration and all 100 settle by iteration 50.

Refine. The settled rows are then iterated alone (symmetric decorrelation among themselves,
the wandering rows kept as an orthonormal complement): free of the wanderers' jitter they meet
``tol`` in a few steps, each costing m/k of a full step for m settled rows.

Measured, not kept: iterating on a random subsample first and refining on all rows. On 1M ×
100 residual-like data a 200k (or 500k) subsample settled before every weak source had been
found (18/30 and 29/30 found) and a growing schedule (62k → 500k rows, 1-3 steps each) did not
bring recovery sooner (iterate 10-18 against 7 on all rows). Every step runs on all rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from darkmatter.distributed import SINGLE, Comm


@dataclass(frozen=True)
class EngineFit:
    """One run of :func:`fastica_torch`.

    Attributes:
        W: float64[k, k] orthogonal unmixing in whitened space (s = z @ W.T).
        seed: seed of the random start.
        n_iter: iterations taken (full + refine phases; a refine step costs m/k of a full one).
        converged: every component settled (change < tol).
        stopped_on_stability: stopped because the settled set stopped changing.
        n_settled: components settled at the end (all of them when converged).
        final_change: float64[k] per-component change at the last iteration.
        phases: iterations per phase, e.g. {"full": 17, "refine": 3}.
        settled: bool[k], the rows that stopped moving (all of them when converged): the
            identifiable components; the others were still wandering when the run stopped.
        settled_converged: every settled row met ``tol`` (in the refine phase, when there is one).
    """

    W: np.ndarray
    seed: int
    n_iter: int
    converged: bool
    stopped_on_stability: bool
    n_settled: int
    final_change: np.ndarray
    phases: dict[str, int]
    settled: np.ndarray
    settled_converged: bool


@dataclass(frozen=True)
class RowShard:
    """The whitened rows this process holds, read chunk by chunk on a grid of global row numbers.

    ``data`` holds rows ``[lo, lo + len(data))`` of a ``n_rows``-row array that may be spread over
    ranks (``comm``): a torch tensor already on the device (in memory), or any array that slices
    (a memmap: read one chunk at a time, so the data never has to fit in RAM). Chunks are the
    global rows ``[c·chunk, (c+1)·chunk)``, clipped to this shard, and ``subset`` (sorted global
    row numbers, e.g. one FastICA restart's documents) selects rows within each chunk. Every
    chunk's float32 products are therefore the same whatever the sharding, and their float64
    sums are exact for data of this kind, so a sharded fit takes the same steps as one process.

    Attributes:
        data: float[m, k] local rows (torch tensor, numpy array or memmap).
        lo: global number of the first local row (a multiple of ``chunk`` when sharded).
        n_rows: global rows of the whole array (None: ``lo + m``, a single process).
        subset: sorted int64 global rows to use (None: all).
        comm: how partial sums are added over ranks.
        cols: use the first ``cols`` columns only (None: all), e.g. the top k of a K-wide whitening.
    """

    data: Any
    lo: int = 0
    n_rows: int | None = None
    subset: np.ndarray | None = None
    comm: Comm = SINGLE
    chunk: int = 16384
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    cols: int | None = None
    cached: tuple[torch.Tensor, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        return int(self.data.shape[1]) if self.cols is None else self.cols

    @property
    def in_memory(self) -> bool:
        """The rows are a tensor (in RAM or on the GPU), not streamed from disk."""
        return isinstance(self.data, torch.Tensor)

    def columns(self, k: int) -> RowShard:
        """The same rows, first ``k`` columns (a view: nothing is copied)."""
        if k > int(self.data.shape[1]):
            raise ValueError(f"k = {k} exceeds the {self.data.shape[1]} whitened columns")
        return replace(self, cols=k, cached=None)

    @property
    def n(self) -> int:
        """Rows the fit sums over, on every rank together."""
        if self.subset is not None:
            return len(self.subset)
        return self.n_rows if self.n_rows is not None else self.lo + int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Local (rows, k); with a subset, the local rows of the subset."""
        if self.subset is None:
            return int(self.data.shape[0]), self.k
        a, b = np.searchsorted(self.subset, [self.lo, self.lo + int(self.data.shape[0])])
        return int(b - a), self.k

    def restrict(self, rows: np.ndarray | None) -> RowShard:
        """The same shard limited to the sorted global ``rows`` (None: unchanged)."""
        if rows is None:
            return self
        return replace(self, subset=np.asarray(rows, dtype=np.int64), cached=None)

    def gathered(self, max_bytes: int = 1 << 31) -> RowShard:
        """The same shard with its chunks gathered once (a subset's rows, the first ``cols`` columns)
        where that needs a copy per chunk and the rows are in memory: a fit then reads each chunk
        as it is instead of gathering it again on every iteration (on the offline default, gathering
        the document halves' rows and the first k of 100 columns was 16% of step 04). The chunk
        grid, and so every product and sum, is unchanged. Streamed data (a memmap), rows that need
        no copy, or copies over ``max_bytes`` are left as they are."""
        if self.cached is not None or not self.in_memory or (self.subset is None and self.cols is None):
            return self
        if self.shape[0] * self.k * torch.finfo(self.dtype).bits // 8 > max_bytes:
            return self
        return replace(self, cached=tuple(self.blocks()))

    def _local(self, lo: int, hi: int) -> Any:
        """Local rows of global range [lo, hi) (the subset's, when there is one)."""
        if self.subset is None:
            return self.data[lo - self.lo:hi - self.lo]
        a, b = np.searchsorted(self.subset, [lo, hi])
        idx = self.subset[a:b] - self.lo
        if isinstance(self.data, torch.Tensor):
            return self.data[torch.as_tensor(idx, device=self.data.device)]
        return self.data[idx] if len(idx) else self.data[:0]

    def blocks(self) -> Iterator[torch.Tensor]:
        """Local rows chunk by chunk, as ``dtype`` tensors on ``device`` (empty chunks skipped)."""
        if self.cached is not None:
            yield from self.cached
            return
        m = int(self.data.shape[0])
        hi = self.lo + m
        for c in range(self.lo // self.chunk, -(-hi // self.chunk)):
            block = self._local(max(c * self.chunk, self.lo), min((c + 1) * self.chunk, hi))
            if len(block):
                if self.cols is not None:
                    block = block[:, :self.cols]
                t = torch.as_tensor(np.asarray(block) if not isinstance(block, torch.Tensor) else block,
                                    device=self.device)
                yield t.to(self.dtype).contiguous()

    def __getitem__(self, rows: slice) -> np.ndarray:
        """Local rows (of the subset, when there is one) ``rows`` as a numpy array (for streamed moments)."""
        if self.subset is None:
            out = self.data[rows]
        else:
            a, _ = np.searchsorted(self.subset, [self.lo, self.lo + int(self.data.shape[0])])
            start, stop, _ = rows.indices(self.shape[0])
            idx = self.subset[a + start:a + stop] - self.lo
            out = self.data[torch.as_tensor(idx) if isinstance(self.data, torch.Tensor) else idx]
        if self.cols is not None:
            out = out[:, :self.cols]
        return out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def default_chunk(device: str) -> int:
    """Rows per product on ``device``: 16,384 on CPU (fastest on 2 cores at k = 25-100), 1,048,576
    on CUDA (on an H200, 3.8 against 14.7 ms per step at 1M × 100: ``benchmarks/RESULTS.md``)."""
    return 1 << 20 if str(device).startswith("cuda") else 16384


def as_shard(z: np.ndarray | torch.Tensor | RowShard, device: str = "cpu", dtype: torch.dtype = torch.float32,
             chunk: int = 16384) -> RowShard:
    """``z`` as a :class:`RowShard`: a shard as it is, an in-memory array moved to ``device`` (one
    process), a memmap left on disk and streamed."""
    if isinstance(z, RowShard):
        return z
    if isinstance(z, np.memmap):
        return RowShard(z, chunk=chunk, device=device, dtype=dtype)
    return RowShard(torch.as_tensor(z, device=device).to(dtype), chunk=chunk, device=device, dtype=dtype)


def _sym_decorrelate(W: torch.Tensor) -> torch.Tensor:
    """(W Wᵀ)^(-1/2) W, float64 (scikit-learn's ``_sym_decorrelation``)."""
    s, u = torch.linalg.eigh(W @ W.T)
    s = torch.clamp(s, min=torch.finfo(W.dtype).tiny)
    return (u * (1.0 / torch.sqrt(s))) @ u.T @ W


def _update(z: RowShard, W: torch.Tensor) -> torch.Tensor:
    """One fixed-point step on the rows of z (k columns, summed over every rank) for the m rows of
    W: float64[m, k] (m ≤ k). Returns W⁺ (float64[m, k]), symmetrically decorrelated among its m
    rows, the same on every rank."""
    n, k = z.n, z.k
    gz = torch.zeros(W.shape[0], k, dtype=torch.float64, device=W.device)
    gp = torch.zeros(W.shape[0], dtype=torch.float64, device=W.device)
    Wd = W.to(z.dtype)
    for zc in z.blocks():
        g = torch.tanh_((zc @ Wd.T).float())  # bfloat16 products: tanh and Σ (1 − g²) in float32
        gz += (g.to(zc.dtype).T @ zc).double()
        gp += (1.0 - g * g).sum(0).double()
    gz, gp = z.comm.sum(gz), z.comm.sum(gp)
    return z.comm.agree(_sym_decorrelate(gz / n - (gp / n)[:, None] * W))


Callback = Callable[[str, int, np.ndarray], None]
"""Called after every iteration with (phase name, iteration within the phase, W: float64[k, k])."""

Progress = Callable[[str, int, int], None]
"""Called after every iteration with (phase name, iteration within the phase, components settled
so far): cheap, for progress bars."""


@dataclass
class _Phase:
    W: torch.Tensor
    n_iter: int
    change: torch.Tensor
    settled: torch.Tensor
    converged: bool
    stopped_on_stability: bool


def _iterate(z: RowShard, W: torch.Tensor, max_iter: int, tol: float, patience: int,
             settle_tol: float, wander_tol: float, callback: Callback | None = None,
             phase: str = "", progress: Progress | None = None) -> _Phase:
    """Symmetric fixed-point steps on all k rows until converged, stable or ``max_iter``."""
    history = [W]
    settled_prev: torch.Tensor | None = None
    same = 0
    change = torch.ones(W.shape[0], dtype=torch.float64, device=W.device)
    settled = torch.zeros(W.shape[0], dtype=torch.bool, device=W.device)
    for it in range(1, max_iter + 1):
        W_new = _update(z, W)
        change = 1.0 - torch.abs((W_new * W).sum(1))
        W = W_new
        if callback is not None:
            callback(phase, it, W.cpu().numpy())
        if bool((change < tol).all()):
            if progress is not None:
                progress(phase, it, W.shape[0])
            return _Phase(W, it, change, change < tol, True, False)
        history = (history + [W])[-(patience + 1):]
        if len(history) <= patience:
            if progress is not None:
                progress(phase, it, 0)
            continue
        # settled: moved less than settle_tol over the last `patience` iterations (the jitter that
        # symmetric decorrelation against the wandering Gaussian rows puts on them does not accumulate)
        settled = 1.0 - torch.abs((W * history[0]).sum(1)) < settle_tol
        if progress is not None:
            progress(phase, it, int(settled.sum()))
        # the other rows must be wandering, not converging slowly: Gaussian rows jump by a median
        # of 0.09-0.9 per iteration, the slowly converging rows of a real residual by < 5e-3
        rest_wander = bool(settled.all()) or float(change[~settled].median()) >= wander_tol
        if (settled_prev is not None and torch.equal(settled, settled_prev) and bool(settled.any())
                and rest_wander):
            same += 1
            if same >= patience:
                return _Phase(W, it, change, settled, False, True)
        else:
            same = 0
        settled_prev = settled
    return _Phase(W, max_iter, change, settled, False, False)


def _refine(z: RowShard, W: torch.Tensor, settled: torch.Tensor, max_iter: int, tol: float,
            callback: Callback | None = None, progress: Progress | None = None) -> _Phase:
    """Fixed-point steps for the settled rows alone (symmetric among themselves) until each
    changes by less than ``tol``; the other rows are kept as an orthonormal complement.

    Without the wandering Gaussian rows in the symmetric decorrelation, the settled rows converge
    in the usual FastICA way (a few iterations), and each step costs m/k of a full one."""
    Ws, Wr = W[settled], W[~settled]
    change = torch.ones(Ws.shape[0], dtype=torch.float64, device=W.device)

    def assemble() -> torch.Tensor:
        out = torch.empty_like(W)
        out[settled] = Ws
        if Wr.shape[0]:
            out[~settled] = _sym_decorrelate(Wr - (Wr @ Ws.T) @ Ws)
        return out

    it, converged = 0, False
    for it in range(1, max_iter + 1):
        W_new = _update(z, Ws)
        change = 1.0 - torch.abs((W_new * Ws).sum(1))
        Ws = W_new
        if callback is not None:
            callback("refine", it, assemble().cpu().numpy())
        if progress is not None:
            progress("refine", it, int(settled.sum()))
        if bool((change < tol).all()):
            converged = True
            break
    out = assemble()
    full_change = torch.full((W.shape[0],), float("nan"), dtype=torch.float64, device=W.device)
    full_change[settled] = change
    return _Phase(out, it, full_change, settled, converged, False)


def fastica_torch(z: np.ndarray | torch.Tensor | RowShard, seed: int, max_iter: int = 200, tol: float = 1e-6,
                  patience: int = 5, settle_tol: float = 1e-2, wander_tol: float = 0.05,
                  refine_iter: int | None = None, device: str = "cpu",
                  dtype: torch.dtype = torch.float32, chunk: int = 16384,
                  callback: Callback | None = None, progress: Progress | None = None) -> EngineFit:
    """FastICA (parallel, logcosh) on whitened data with the stability stopping rule.

    Phases (each capped at ``max_iter``), recorded in ``EngineFit.phases``:
      ``full``    symmetric steps on all rows until every change < ``tol`` (converged) or the
                  settled set is stable (see ``patience``);
      ``refine``  after a stop on stability: steps for the settled rows alone, until each
                  changes by less than ``tol``.

    Args:
        z: float[n, k] whitened data (unit covariance), e.g. ``Whitening.apply`` output: in memory
            (moved to ``device``), a memmap (streamed from disk chunk by chunk), or a
            :class:`RowShard` (this rank's rows of a sharded run: every sum is all-reduced, and
            every rank takes the same steps and returns the same W).
        seed: seeds the random start (a standard-normal W, symmetrically decorrelated).
        max_iter: cap per phase.
        tol: converged when every component's 1 − |⟨w⁺, w⟩| < tol (scikit-learn's criterion).
        patience: a component is settled when it moved less than ``settle_tol`` (1 − |cos|) over
            the last ``patience`` iterations; the symmetric phase stops once the settled set has
            stayed the same for another ``patience`` iterations.
        settle_tol: see ``patience``. Measured on 1M × 100 residual-like data (30 sources at
            excess kurtosis 1, 70 Gaussian): settled rows move by ≤ 7e-3 over 10 iterations,
            Gaussian rows by ≥ 0.16 per iteration.
        wander_tol: the run stops on stability only while the rows that have not settled moved
            by a median of at least this much in the last iteration (they wander rather than
            converge slowly). Without this check, a run on the offline default's real residual
            stopped with 3 of 100 settled, where longer runs settle all 100.
        refine_iter: cap of the refine phase (None: ``max_iter``). Settled rows of planted data
            meet ``tol`` in 3-5 refine steps. On the offline default's real residual they
            converge linearly: 200 refine steps took the change from ~1e-4 to 3e-5 without
            meeting 1e-6, and cost 2/3 of step 04. A cap of 50 halved 04 (75 → 39 s) but 18
            instead of 20 components came out stable across seeds, so the default keeps going.
        device: torch device of the data products ("cpu", "cuda").
        dtype: dtype of the data products (sums accumulate in float64 regardless).
        chunk: rows per product (16,384 was fastest on 2 CPU cores at k = 100: 0.50 s per
            full step on 1M rows against 0.63 s at 65,536).
        callback: optional ``callback(phase, iteration, W)`` after every step (benchmarks use it
            to time the first iterate that recovers planted sources).
        progress: optional ``progress(phase, iteration, n_settled)`` after every step (step 04's
            progress bar).
    Returns:
        EngineFit.
    Raises:
        ValueError: z is not 2-D or has fewer rows than columns.
    """
    if not isinstance(z, RowShard) and (z.ndim != 2 or z.shape[0] < z.shape[1]):
        raise ValueError(f"z must be [n, k] with n ≥ k, got shape {tuple(z.shape)}")
    zt = as_shard(z, device, dtype, chunk).gathered()
    k = zt.k
    if zt.n < k:
        raise ValueError(f"z must have n ≥ k rows, got {zt.n} rows of {k}")
    rng = np.random.default_rng([seed, 1013])
    W = _sym_decorrelate(torch.as_tensor(rng.standard_normal((k, k)), dtype=torch.float64, device=zt.device))
    phases: dict[str, int] = {}
    ph = _iterate(zt, W, max_iter, tol, patience, settle_tol, wander_tol, callback, "full", progress)
    phases["full"] = ph.n_iter
    W = ph.W
    settled = ph.settled.clone()
    stable = ph.stopped_on_stability
    change = ph.change
    converged = ph.converged
    if stable:
        rf = _refine(zt, W, settled, min(refine_iter or max_iter, max_iter), tol, callback, progress)
        phases["refine"] = rf.n_iter
        W = rf.W
        change = torch.where(settled, rf.change, change)
        settled_converged = rf.converged
    else:
        settled_converged = converged
    return EngineFit(W=W.cpu().numpy(), seed=seed, n_iter=sum(phases.values()), converged=converged,
                     stopped_on_stability=stable, n_settled=int(settled.sum()),
                     final_change=change.cpu().numpy(), phases=phases, settled=settled.cpu().numpy(),
                     settled_converged=settled_converged)

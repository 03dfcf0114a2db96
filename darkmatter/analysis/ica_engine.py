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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


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


def _sym_decorrelate(W: torch.Tensor) -> torch.Tensor:
    """(W Wᵀ)^(-1/2) W, float64 (scikit-learn's ``_sym_decorrelation``)."""
    s, u = torch.linalg.eigh(W @ W.T)
    s = torch.clamp(s, min=torch.finfo(W.dtype).tiny)
    return (u * (1.0 / torch.sqrt(s))) @ u.T @ W


def _update(z: torch.Tensor, W: torch.Tensor, chunk: int) -> torch.Tensor:
    """One fixed-point step on z: [n, k] (any float dtype) for the m rows of W: float64[m, k]
    (m ≤ k). Returns W⁺ (float64[m, k]), symmetrically decorrelated among its m rows."""
    n, k = z.shape
    gz = torch.zeros(W.shape[0], k, dtype=torch.float64, device=z.device)
    gp = torch.zeros(W.shape[0], dtype=torch.float64, device=z.device)
    Wd = W.to(z.dtype)
    for s in range(0, n, chunk):
        zc = z[s:s + chunk]
        g = torch.tanh(zc @ Wd.T)
        gz += (g.T @ zc).double()
        gp += (1.0 - g * g).sum(0).double()
    return _sym_decorrelate(gz / n - (gp / n)[:, None] * W)


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


def _iterate(z: torch.Tensor, W: torch.Tensor, max_iter: int, tol: float, patience: int,
             settle_tol: float, wander_tol: float, chunk: int, callback: Callback | None = None,
             phase: str = "", progress: Progress | None = None) -> _Phase:
    """Symmetric fixed-point steps on all k rows until converged, stable or ``max_iter``."""
    history = [W]
    settled_prev: torch.Tensor | None = None
    same = 0
    change = torch.ones(W.shape[0], dtype=torch.float64, device=W.device)
    settled = torch.zeros(W.shape[0], dtype=torch.bool, device=W.device)
    for it in range(1, max_iter + 1):
        W_new = _update(z, W, chunk)
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


def _refine(z: torch.Tensor, W: torch.Tensor, settled: torch.Tensor, max_iter: int, tol: float,
            chunk: int, callback: Callback | None = None, progress: Progress | None = None) -> _Phase:
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
        W_new = _update(z, Ws, chunk)
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


def fastica_torch(z: np.ndarray | torch.Tensor, seed: int, max_iter: int = 200, tol: float = 1e-6,
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
        z: float[n, k] whitened data (unit covariance), e.g. ``Whitening.apply`` output.
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
    if z.ndim != 2 or z.shape[0] < z.shape[1]:
        raise ValueError(f"z must be [n, k] with n ≥ k, got shape {tuple(z.shape)}")
    zt = torch.as_tensor(z, device=device).to(dtype)
    k = zt.shape[1]
    rng = np.random.default_rng([seed, 1013])
    W = _sym_decorrelate(torch.as_tensor(rng.standard_normal((k, k)), dtype=torch.float64, device=device))
    phases: dict[str, int] = {}
    ph = _iterate(zt, W, max_iter, tol, patience, settle_tol, wander_tol, chunk, callback, "full", progress)
    phases["full"] = ph.n_iter
    W = ph.W
    settled = ph.settled.clone()
    stable = ph.stopped_on_stability
    change = ph.change
    converged = ph.converged
    if stable:
        rf = _refine(zt, W, settled, min(refine_iter or max_iter, max_iter), tol, chunk, callback, progress)
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

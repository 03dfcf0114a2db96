"""Step 04: the k sweep, the decomposition at the chosen k, the matched control and the floor test.

For each k the sweep tries (:func:`darkmatter.analysis.decompose.sweep_ks`: round values, the 90%
count and the full rank, as far as n ≥ 20·k² allows), FastICA restarts fit disjoint document
halves, the Gaussian control repeats exactly that optimisation on a whitened surrogate of the same
shape, and each source's excess kurtosis is tested against the control's largest with a document
block-bootstrap standard error. k is ``--n-components`` or the sweep's choice
(:func:`darkmatter.analysis.decompose.choose_k`). Sources are written for every token at that k,
and components whose top activations sit on one position, document or token are flagged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from darkmatter.analysis import artifacts, ica, resampling, stats
from darkmatter.analysis.candidates import ALPHA
from darkmatter.analysis.decompose import check_reconstruction, choose_k, sweep_ks, write_sources
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.ica_engine import RowShard
from darkmatter.analysis.ksweep import KFit, fit_k
from darkmatter.distributed import chunk_range, current
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CollectResult, ComponentFit, ICAResult, KSweepPoint, SetupResult

ALGORITHM = {
    "sklearn": "scikit-learn FastICA, parallel, logcosh, whiten=False on PCA-whitened data",
    "torch": "darkmatter.analysis.ica_engine FastICA (PyTorch, float32 products, float64 sums), parallel, logcosh, "
             "on PCA-whitened data; stops once the identifiable components are stable, then refines those alone to tol",
}


class SeedBars:
    """One progress bar per FastICA seed, showing the iteration and how many components settled."""

    def __init__(self, label: str, k: int, max_iter: int):
        self.label, self.k, self.max_iter = label, k, max_iter
        self.bar: tqdm | None = None
        self.seed: int | None = None
        self.phase = ""

    def __call__(self, seed: int, phase: str, iteration: int, n_settled: int) -> None:
        if seed != self.seed:
            self.close()
            self.seed, self.phase = seed, phase
            self.bar = tqdm(total=self.max_iter, desc=f"{self.label} seed {seed}", unit="it", leave=True)
        assert self.bar is not None
        if phase != self.phase:  # the settled rows are refined alone: a new count of iterations
            self.phase = phase
            self.bar.set_description(f"{self.label} seed {seed} ({phase})")
            self.bar.reset(total=self.max_iter)
        self.bar.update(1)
        self.bar.set_postfix_str(f"settled {n_settled}/{self.k}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _ks(ctx: StepContext, pca: stats.PCA, n_fit: int) -> tuple[list[int], int]:
    i = ctx.cfg.ica
    try:
        ks, top = sweep_ks(pca, n_fit, i.samples_per_parameter)
    except ValueError as exc:
        raise DarkMatterError(str(exc)) from exc
    if i.n_components:
        return [i.n_components], top
    if i.max_components:
        ks = [k for k in ks if k <= i.max_components] or [min(i.max_components, top)]
    return ks, top


def _point(f: KFit, stable_cos: float) -> KSweepPoint:
    c = f.control
    return KSweepPoint(k=f.k, variance_kept=f.decomposition.whitening.explained,
                       n_settled=int(f.decomposition.settled.sum()), n_stable=f.decomposition.n_stable(stable_cos),
                       n_above_floor=int(f.floor.above.sum()), n_reproducible=f.n_reproducible(stable_cos),
                       control_max_kurtosis=f.floor.floor if c else None,
                       control_n_stable=int((c.stability >= stable_cos).sum()) if c else None,
                       design_effect=f.design_effect, seconds_fit=round(f.seconds_fit, 2),
                       seconds_control=round(f.seconds_control, 2))


def _whitened(ctx: StepContext, resid: np.ndarray, white: ica.Whitening, fit_rows: np.ndarray | None, n_fit: int,
              chunk: int, scratch: Callable[[str, tuple[int, ...]], np.memmap]) -> RowShard:
    """This process's rows of the top-K whitened residual: in memory (on the device) when they fit
    in ``--memory-gb``, else in a scratch memmap streamed chunk by chunk. Under torchrun each rank
    holds a contiguous block of whole chunks, and every FastICA sum is all-reduced."""
    comm = current()
    lo, hi = chunk_range(n_fit, chunk, comm)
    shape = (hi - lo, white.k)
    in_memory = shape[0] * shape[1] * 4 <= ctx.cfg.run.memory_gb * 2**30
    out = np.empty(shape, dtype=np.float32) if in_memory else scratch("whitened", shape)
    ica.whiten_rows(resid, white, fit_rows, chunk, out=out, lo=lo)
    if isinstance(out, np.memmap):
        out.flush()
        print(f"  rank {comm.rank}: {shape[0]:,} × {shape[1]} whitened rows ({out.nbytes / 2**30:.1f} GB) exceed "
              f"--memory-gb {ctx.cfg.run.memory_gb:g}: streamed from disk each iteration")
    data = torch.as_tensor(out, device=ctx.device) if in_memory else out
    return RowShard(data, lo=lo, n_rows=n_fit, comm=comm, chunk=chunk, device=ctx.device)


def run(ctx: StepContext) -> None:
    """The k sweep, then sources, artifact flags and ica.json at the chosen k."""
    setup = ctx.read(SetupResult)
    ctx.read(CollectResult)
    ctx.read(ResidualDiagnostics)
    cfg, store, i = ctx.cfg, ctx.store, ctx.cfg.ica
    (resid,) = ctx.arrays("residuals.npy", d_model=setup.d_model)
    index = store.load_npy("token_index.npy", mmap=False)
    tokens = store.load_npy("tokens.npy", mmap=False) if store.exists("tokens.npy") else None
    pca = stats.PCA(store.load_npy("pca_eigenvalues.npy", mmap=False), store.load_npy("pca_components.npy", mmap=False))
    mean = store.load_npy("residual_mean.npy", mmap=False)
    n = resid.shape[0]
    if index.shape != (n, 2):
        raise DarkMatterError("token_index.npy does not match residuals.npy: rerun scripts/02_collect_activations.py")
    fit_rows = (None if not i.ica_max_tokens or i.ica_max_tokens >= n
                else stats.random_rows(n, i.ica_max_tokens, cfg.source.seed))
    n_fit = n if fit_rows is None else len(fit_rows)
    ks, top = _ks(ctx, pca, n_fit)
    try:
        white_top = ica.pca_whitening(pca, mean, max(ks))
    except ValueError as exc:
        raise DarkMatterError(f"{exc}; pass a smaller --n-components") from exc
    units_all, unit_name = ctx.units()
    units = units_all if fit_rows is None else units_all[fit_rows]
    seeds = [cfg.source.seed + s for s in range(i.ica_seeds)]
    try:
        restarts = resampling.restart_rows(units, len(seeds) - 1, i.ica_resample, cfg.source.seed)
    except ValueError as exc:
        raise DarkMatterError(f"{exc}; pass --ica-resample 1 or collect more text") from exc
    chunk = max(cfg.run.sae_chunk_size, 16384)
    comm = current()
    if comm.is_main:
        print(f"k sweep {ks} on {n_fit:,} tokens ({len(np.unique(units)):,} {unit_name}s; n ≥ "
              f"{i.samples_per_parameter:g}·k² allows k ≤ {top}), seeds {seeds[0]}..{seeds[-1]}")
    fits: dict[int, KFit] = {}
    with store.scratch() as scratch:
        z_top = _whitened(ctx, resid, white_top, fit_rows, n_fit, chunk, scratch)
        for k in ks:
            bars, cbars = ((SeedBars(f"k={k} FastICA", k, i.ica_max_iter),
                            SeedBars(f"k={k} control", k, i.ica_max_iter)) if comm.is_main else (None, None))
            fits[k] = fit_k(z_top, pca, mean, k, seeds, units, restarts, i.ica_max_iter, i.ica_tol, i.ica_backend,
                            ctx.device, i.gaussian_control, bars, cbars,
                            scratch=None if z_top.in_memory else (lambda shape: scratch("control", shape)))
            if bars and cbars:
                bars.close()
                cbars.close()
                p = _point(fits[k], i.stable_cos)
                print(f"  k={k}: {p.variance_kept:.1%} of variance, {p.n_settled} settled, {p.n_stable} stable, "
                      f"{p.n_above_floor} above the floor, {p.n_reproducible} all three ({p.seconds_fit:.0f} s + "
                      f"control {p.seconds_control:.0f} s)")
        del z_top
    if not comm.is_main:  # the other ranks helped with every sum; rank 0 writes
        return
    points = [_point(fits[k], i.stable_cos) for k in ks]
    k, k_rule = ((i.n_components, "--n-components") if i.n_components
                 else choose_k(ks, [p.n_reproducible for p in points]))
    f = fits[k]
    dec, white = f.decomposition, f.decomposition.whitening
    for fit in dec.fits:
        _print_fit(fit.record(), k)
    with store.transaction():
        ctx.record_config()
        sources = store.open_npy("ica_activations.npy", (n, k), np.float32)
        explained = write_sources(resid, dec, sources, chunk)
        sources.flush()
        check_reconstruction(explained, white)
        positions = index[:, 1] if tokens is not None else None
        token_ids = tokens[index[:, 0], index[:, 1]] if tokens is not None else None
        flags = artifacts.flag(artifacts.top_rows(sources), units_all, positions, token_ids)
        del sources
        store.save_npy("ica_directions.npy", dec.directions.astype(np.float32))
        store.save_npy("ica_mixing.npy", dec.mixing.astype(np.float32))
        store.save_npy("ica_unmixing.npy", dec.unmixing.astype(np.float32))
        stable = dec.stability >= i.stable_cos
        control = f.control.summary(i.stable_cos, i.ica_max_iter) if f.control else None
        result = ICAResult(
            k=k, k_rule=k_rule, k_sweep=points, samples_per_parameter=i.samples_per_parameter, max_supported_k=top,
            n_tokens=n, n_fit_tokens=n_fit, resampling_unit=unit_name, n_units=int(len(np.unique(units))),
            algorithm=ALGORITHM[i.ica_backend], backend=i.ica_backend, seeds=[x.record() for x in dec.fits],
            restart_resample=i.ica_resample, all_converged=all(x.converged for x in dec.fits),
            all_settled_converged=all(x.converged or (x.stopped_on_stability and bool(x.settled_converged))
                                      for x in dec.fits),
            max_iter=i.ica_max_iter, tol=i.ica_tol, stable_threshold=i.stable_cos, n_stable=int(stable.sum()),
            n_settled=int(dec.settled.sum()), n_above_floor=int(f.floor.above.sum()),
            n_reproducible=f.n_reproducible(i.stable_cos), pca_variance_kept=white.explained,
            reconstruction_variance_explained=explained, reconstruction_matches_pca=True,
            component_order="descending excess kurtosis of the source over every fitted token; sign: positive skew",
            gaussian_control=control, noise_floor=_floor_text(f, unit_name),
            design_effect=f.design_effect, effective_tokens=n_fit / max(f.design_effect, 1e-12),
            components=[ComponentFit(
                component=c, stability=float(dec.stability[c]), stable=bool(stable[c]), settled=bool(dec.settled[c]),
                source_excess_kurtosis=float(dec.source_excess_kurtosis[c]), kurtosis_se=float(f.kurtosis_se[c]),
                floor_z=float(f.floor.z[c]), floor_p=float(f.floor.p[c]), above_floor=bool(f.floor.above[c]),
                artifact=flags[c]) for c in range(k)])
        ctx.write(result)
    print(f"k = {k} ({k_rule}); {result.n_stable}/{k} stable across {unit_name} halves, {result.n_settled} settled, "
          f"{result.n_above_floor} above the noise floor, {result.n_reproducible} all three; reconstruction explains "
          f"{explained:.4f} of residual variance (PCA kept {white.explained:.4f})")
    print(f"noise floor: {result.noise_floor}")


def _floor_text(f: KFit, unit: str) -> str:
    if f.control is None:
        return ("excess kurtosis 0 (Gaussian control switched off), one-sided z with a "
                f"{unit} block-bootstrap SE, Holm over k at α = {ALPHA}")
    return (f"the largest source excess kurtosis ({f.floor.floor:.3f}) FastICA extracted from a whitened Gaussian "
            "surrogate of the same shape with the same seeds, restarts and optimisation; one-sided z with a "
            f"{unit} block-bootstrap SE (design effect {f.design_effect:.2f}), Holm over k at α = {ALPHA}")


def _print_fit(r: ica.SeedFit, k: int) -> None:
    done = " (settled ones converged)" if r.settled_converged else ""
    how = (f"stopped on stability with {r.n_settled}/{k} settled{done}"
           if r.stopped_on_stability else f"converged={r.converged}")
    change = "" if r.final_change is None else f", final change {r.final_change:.1e}"
    print(f"  seed {r.seed} ({r.n_tokens:,} tokens): {r.n_iter} iterations, {how}{change}")

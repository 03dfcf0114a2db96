"""Step 04: the k sweep, the decomposition at the chosen k, the matched control and the floor test.

For each k the sweep tries (:func:`darkmatter.analysis.decompose.sweep_ks`: round values, the 90%
count and the full rank, as far as n ≥ 20·k² allows, and then as far as the *effective* sample size
allows, :func:`darkmatter.analysis.ksweep.sweep`), FastICA restarts fit both halves of several
random document splits, the matched control repeats exactly that optimisation on a norm-matched
elliptical surrogate of the same rows, and each source's excess kurtosis is tested against the
control's largest by a paired percentile bootstrap over documents. k is ``--n-components`` or the
sweep's choice (:func:`darkmatter.analysis.decompose.choose_k`). Sources are written for every
token at that k; components whose top activations sit on the first positions are flagged
(excluded), and concentration on one token or document is labelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from darkmatter.analysis import artifacts, ica, resampling, stats
from darkmatter.analysis.candidates import ALPHA
from darkmatter.analysis.decompose import check_reconstruction, write_sources
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.ica_engine import RowShard, default_chunk
from darkmatter.analysis.ksweep import FitOptions, KFit, SweepData, sweep
from darkmatter.analysis.search import SearchOptions, choose, sweep_plan
from darkmatter.distributed import chunk_range, current
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.config import as_flags
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CollectResult, ComponentFit, ICAResult, KSweepPoint, SetupResult
from darkmatter.pipeline.steps.bars import FitBar, bar

ALGORITHM = {
    "sklearn": "scikit-learn FastICA, parallel, logcosh, whiten=False on PCA-whitened data",
    "torch": "darkmatter.analysis.ica_engine FastICA (PyTorch, float32 products, float64 sums), parallel, logcosh, "
             "on PCA-whitened data; stops once the identifiable components are stable, then refines those alone to tol",
}


def search_options(ctx: StepContext) -> SearchOptions:
    """The ICA and compare sections of the config as the search's options (steps 04, 05 and the
    completeness step use the same)."""
    i, cfg = ctx.cfg.ica, ctx.cfg
    fit = FitOptions(seed=cfg.source.seed, splits=i.stability_splits, resample=i.ica_resample,
                     max_iter=i.ica_max_iter, tol=i.ica_tol, backend=i.ica_backend, device=ctx.device,
                     control=i.control, stable_cos=i.stable_cos, stable_frequency=i.stable_frequency,
                     samples_per_parameter=i.samples_per_parameter)
    return SearchOptions(fit=fit, n_components=i.n_components, max_components=i.max_components,
                         null_draws=cfg.compare.null_draws, keep_artifacts=cfg.compare.keep_artifacts,
                         chunk=max(cfg.run.sae_chunk_size, 16384), memory_bytes=cfg.run.memory_gb * 2**30)


def point(f: KFit) -> KSweepPoint:
    """One k of the sweep, for ica.json."""
    c = f.control
    return KSweepPoint(k=f.k, variance_kept=f.decomposition.whitening.explained,
                       n_settled=int(f.decomposition.settled.sum()), n_stable=f.decomposition.n_stable,
                       n_undetermined=int(f.decomposition.reappearance.undetermined.sum()),
                       n_above_floor=int(f.floor.above.sum()), n_reproducible=f.n_reproducible,
                       control_max_kurtosis=f.floor.floor if c else None,
                       control_n_stable=int(c.reappearance.stable.sum()) if c else None,
                       design_effect=f.design_effect, effective_tokens=f.effective_tokens, k_bound=f.k_bound,
                       admissible=f.admissible, seconds_fit=round(f.seconds_fit, 2),
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
    with bar(f"whitening (top {white.k} principal components)", shape[0], "row") as b:
        ica.whiten_rows(resid, white, fit_rows, chunk, out=out, lo=lo, progress=b.update)
    if isinstance(out, np.memmap):
        out.flush()
        print(f"  rank {comm.rank}: {shape[0]:,} × {shape[1]} whitened rows ({out.nbytes / 2**30:.1f} GB) exceed "
              f"--memory-gb {ctx.cfg.run.memory_gb:g}: streamed from disk each iteration")
    data = torch.as_tensor(out, device=ctx.device) if in_memory else out
    # one process: the engine's products in the device's own chunk (CUDA: 1M rows); sharded: the
    # ranks' common chunk grid, so every rank's sums are the same whatever the sharding
    step = chunk if comm.sharded else max(chunk, default_chunk(ctx.device))
    return RowShard(data, lo=lo, n_rows=n_fit, comm=comm, chunk=step, device=ctx.device)


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
        raise DarkMatterError("token_index.npy does not match residuals.npy: rerun "
                              f"scripts/{table.producer('token_index.npy')}")
    fit_rows = (None if not i.ica_max_tokens or i.ica_max_tokens >= n
                else stats.random_rows(n, i.ica_max_tokens, cfg.source.seed))
    n_fit = n if fit_rows is None else len(fit_rows)
    sopts = search_options(ctx)
    opts = sopts.fit
    try:
        ks, top = sweep_plan(pca, n_fit, sopts)
    except ValueError as exc:
        raise DarkMatterError(str(exc)) from exc
    try:
        white_top = ica.pca_whitening(pca, mean, max(ks))
    except ValueError as exc:
        raise DarkMatterError(f"{exc}; pass a smaller --n-components") from exc
    units_all, unit_name = ctx.units()
    units = units_all if fit_rows is None else units_all[fit_rows]
    try:
        restarts = resampling.restart_rows(units, opts.n_restarts, i.ica_resample, cfg.source.seed)
    except ValueError as exc:
        raise DarkMatterError(f"{exc}; pass --ica-resample 1 or collect more text") from exc
    chunk = sopts.chunk
    comm = current()
    if comm.is_main:
        print(f"k sweep {ks} on {n_fit:,} tokens ({len(np.unique(units)):,} {unit_name}s; n ≥ "
              f"{i.samples_per_parameter:g}·k² allows k ≤ {top}; the effective-n rule is checked at each k), "
              f"FastICA seeds {opts.seeds[0]}..{opts.seeds[-1]} (all rows, then {i.stability_splits} splits × 2 "
              "halves)")

    def bars(k: int) -> tuple[Any, Any, Callable[[], None]]:
        """One bar over the k's FastICA fits, one over its control's (each: a fit per seed)."""
        if not comm.is_main:
            return None, None, lambda: None
        where = f"{ks.index(k) + 1}/{len(ks)}" if k in ks else "the effective-n bound"
        n_fits = len(opts.seeds)
        real = FitBar(f"k={k} ({where}): FastICA fits", n_fits, k)
        ctrl = FitBar(f"k={k} ({where}): control fits", n_fits, k)

        def close() -> None:
            real.close()
            ctrl.close()

        return real, ctrl, close

    def report(f: KFit) -> None:
        if comm.is_main:
            p = point(f)
            print(f"  k={k_text(p)}")

    with store.scratch() as scratch:
        z_top = _whitened(ctx, resid, white_top, fit_rows, n_fit, chunk, scratch)
        fits, skipped = sweep(SweepData(z_top, pca, mean, units, restarts), ks, opts, bars=bars,
                              scratch=None if z_top.in_memory else (lambda shape: scratch("control", shape)),
                              report=report)
        del z_top
    if not comm.is_main:  # the other ranks helped with every sum; rank 0 writes
        return
    if skipped:
        print(f"  k = {', '.join(map(str, skipped))} skipped: the effective sample size at k = {max(fits)} "
              f"({fits[max(fits)].effective_tokens:,.0f} tokens) supports k ≤ {fits[max(fits)].k_bound}")
    points = [point(fits[k]) for k in sorted(fits)]
    k, k_rule = choose(fits, sopts)
    f = fits[k]
    dec, white = f.decomposition, f.decomposition.whitening
    for fit in dec.fits[:3]:
        _print_fit(fit.record(), k)
    if len(dec.fits) > 3:
        print(f"  ... {len(dec.fits) - 3} more restarts; settled rows per restart: "
              + ", ".join(str(x.n_settled) for x in dec.fits[1:]))
    with store.transaction():
        sources = store.open_npy("ica_activations.npy", (n, k), np.float32)
        with bar(f"sources at k={k}", n, "row") as b:
            explained = write_sources(resid, dec, sources, chunk, progress=b.update)
        sources.flush()
        check_reconstruction(explained, white)
        positions = index[:, 1]  # window (or planted document) position; 0 where there is none: never "first"
        token_ids = tokens[index[:, 0], index[:, 1]] if tokens is not None else None
        flags = artifacts.flag(artifacts.top_rows(sources), artifacts.tail_rows(sources), units_all, positions,
                               token_ids, seed=cfg.source.seed)
        del sources
        store.save_npy("ica_directions.npy", dec.directions.astype(np.float32))
        store.save_npy("ica_mixing.npy", dec.mixing.astype(np.float32))
        store.save_npy("ica_unmixing.npy", dec.unmixing.astype(np.float32))
        result = ica_result(f, points, k_rule, skipped, top, n, n_fit, unit_name, len(np.unique(units)), opts,
                            explained, flags, i.ica_backend)
        ctx.write(result)
    print(f"k = {k} ({as_flags(k_rule)}); {result.n_stable}/{k} stable across {unit_name} splits "
          f"({result.n_undetermined} undetermined), {result.n_settled} settled, {result.n_above_floor} above the "
          "noise floor, "
          f"{result.n_reproducible} all three; reconstruction explains {explained:.4f} of residual variance "
          f"(PCA kept {white.explained:.4f})")
    print(f"noise floor: {result.noise_floor}")


def k_text(p: KSweepPoint) -> str:
    """One k of the sweep in a line."""
    return (f"{p.k}: {p.variance_kept:.1%} of variance, {p.n_settled} settled, {p.n_stable} stable "
            f"({p.n_undetermined} undetermined), {p.n_above_floor} above the floor, {p.n_reproducible} all three; "
            f"design effect {p.design_effect:.1f}, n_eff {p.effective_tokens:,.0f} allows k ≤ {p.k_bound}"
            f"{'' if p.admissible else ' (not admissible)'} ({p.seconds_fit:.0f} s + control "
            f"{p.seconds_control:.0f} s)")


def ica_result(f: KFit, points: list[KSweepPoint], k_rule: str, skipped: list[int], top: int, n: int, n_fit: int,
               unit_name: str, n_units: int, opts: FitOptions, explained: float,
               flags: list[artifacts.ArtifactFlag], backend: str) -> ICAResult:
    """ica.json at the chosen k (also the completeness step's record of each injection run)."""
    dec, white = f.decomposition, f.decomposition.whitening
    again = dec.reappearance
    control = f.control.summary(opts.max_iter) if f.control else None
    k = f.k
    status = again.status()
    return ICAResult(
        k=k, k_rule=k_rule, k_sweep=points, k_skipped=skipped, samples_per_parameter=opts.samples_per_parameter,
        max_supported_k=top, n_tokens=n, n_fit_tokens=n_fit, resampling_unit=unit_name, n_units=n_units,
        algorithm=ALGORITHM[backend], backend=backend, seeds=[x.record() for x in dec.fits],
        stability_splits=opts.splits, restart_resample=opts.resample, stable_frequency=opts.stable_frequency,
        all_converged=all(x.converged for x in dec.fits),
        all_settled_converged=all(x.converged or (x.stopped_on_stability and bool(x.settled_converged))
                                  for x in dec.fits),
        max_iter=opts.max_iter, tol=opts.tol, stable_threshold=opts.stable_cos, n_stable=dec.n_stable,
        n_undetermined=int(again.undetermined.sum()), n_settled=int(dec.settled.sum()),
        n_above_floor=int(f.floor.above.sum()), n_reproducible=f.n_reproducible, pca_variance_kept=white.explained,
        reconstruction_variance_explained=explained, reconstruction_matches_pca=True,
        component_order="descending excess kurtosis of the source over every fitted token; sign: positive skew",
        control=control, control_null=ica.CONTROL_NULL if control else None,
        noise_floor=_floor_text(f, unit_name), floor=f.floor.floor, floor_interval=f.floor.floor_interval,
        floor_draws=f.floor.n_boot, design_effect=f.design_effect, effective_tokens=f.effective_tokens,
        k_bound=f.k_bound,
        components=[ComponentFit(
            component=c, stability=float(np.nan_to_num(again.frequency[c])), stability_status=status[c],
            restarts_determined=int(again.n_determined[c]), restarts=int(again.matched_cos.shape[1]),
            matched_cos_median=float(np.median(again.matched_cos[c])) if again.matched_cos.shape[1] else 1.0,
            stable=bool(again.stable[c]), settled=bool(dec.settled[c]),
            source_excess_kurtosis=float(dec.source_excess_kurtosis[c]), kurtosis_se=float(f.kurtosis_se[c]),
            floor_z=float(f.floor.z[c]), floor_p=float(f.floor.p[c]), above_floor=bool(f.floor.above[c]),
            artifact=flags[c]) for c in range(k)])


def _floor_text(f: KFit, unit: str) -> str:
    if f.control is None:
        return ("excess kurtosis 0 (control switched off), paired percentile bootstrap over "
                f"{unit}s, Holm over k at α = {ALPHA}")
    lo, hi = f.floor.floor_interval
    return (f"the largest |source excess kurtosis| ({f.floor.floor:.3f}; 95% of bootstrap draws {lo:.3f}–{hi:.3f}) "
            f"FastICA extracted from {ica.CONTROL_NULL}; each component against it by a paired percentile bootstrap "
            f"over {unit}s ({f.floor.n_boot:,} draws; design effect {f.design_effect:.2f}), Holm over k at α = {ALPHA}")


def _print_fit(r: ica.SeedFit, k: int) -> None:
    done = " (settled ones converged)" if r.settled_converged else ""
    how = (f"stopped on stability with {r.n_settled}/{k} settled{done}"
           if r.stopped_on_stability else f"converged={r.converged}")
    change = "" if r.final_change is None else f", final change {r.final_change:.1e}"
    print(f"  seed {r.seed} ({r.n_tokens:,} tokens): {r.n_iter} iterations, {how}{change}")

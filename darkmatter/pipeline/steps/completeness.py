"""Step 07's completeness grid: injection–recovery on the real activations, and the false-candidate
count on a structureless surrogate (:mod:`darkmatter.analysis.injection`, :mod:`darkmatter.analysis.search`).

Each injection run adds a grid of synthetic sparse features to ``activations.npy`` before the SAE,
passes x' through the run's SAE in chunks, and runs the whole search (k sweep, restarts, matched
control, floor test, candidate rule) on x' − SAE(x') with the run's own settings. The null run
searches a norm-matched elliptical surrogate of the real residual (every token keeps its norm and
document, directions at random, the residual's covariance), where every candidate is a false one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from darkmatter.analysis import ica, injection, stats
from darkmatter.analysis.groundtruth import FOUND_COS
from darkmatter.analysis.injection import CompletenessResult, InjectedFeature, RunRecord
from darkmatter.analysis.search import Outcome, SearchOptions, search
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import SetupResult
from darkmatter.sources.saes import decoder_rows


def _record(run: int, arm: str, out: Outcome, other: int, seconds: float) -> RunRecord:
    return RunRecord(run=run, arm=arm, k=out.k, n_reproducible=out.fit.n_reproducible,
                     n_candidates=len(out.candidates), other_candidates=other, seconds=round(seconds, 1))


def run(ctx: StepContext, opts: SearchOptions) -> CompletenessResult | None:
    """The completeness grid (``--completeness-runs`` injection runs and the null run), or None when
    switched off."""
    cfg, store = ctx.cfg, ctx.store
    c = cfg.completeness
    if c.completeness_runs <= 0:
        return None
    t0 = time.perf_counter()
    setup_d = ctx.read(SetupResult).d_model
    acts, resid = ctx.arrays("activations.npy", "residuals.npy", d_model=setup_d)
    pca = stats.PCA(store.load_npy("pca_eigenvalues.npy", mmap=False), store.load_npy("pca_components.npy", mmap=False))
    mean = store.load_npy("residual_mean.npy", mmap=False).astype(np.float64)
    index = store.load_npy("token_index.npy", mmap=False)
    tokens = store.load_npy("tokens.npy", mmap=False) if store.exists("tokens.npy") else None
    positions = index[:, 1]
    token_ids = tokens[index[:, 0], index[:, 1]] if tokens is not None else None
    units, _ = ctx.units()
    sae = ctx.sae()
    W_dec = decoder_rows(sae, setup_d)
    grid = injection.Grid(runs=c.completeness_runs)
    per_run = len(grid.rates) * (len(grid.shares) + 1)
    if 2 * per_run > setup_d:
        raise DarkMatterError(f"the completeness grid injects {per_run} mutually orthogonal features per run, too "
                              f"many for d_model {setup_d}: pass --completeness-runs 0")
    n = resid.shape[0]
    seed = cfg.source.seed + 7000
    chunk = opts.chunk
    features: list[InjectedFeature] = []
    records: list[RunRecord] = []

    @torch.no_grad()
    def reconstruct(x: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(x, device=ctx.device)
        return sae.decode(sae.encode(t)).float().cpu().numpy()

    with tqdm(total=grid.runs + int(c.completeness_null), desc="completeness (searches)", unit="search") as bar:
        for r in range(grid.runs):
            t1 = time.perf_counter()
            planned = injection.plan(grid, r, pca, units, seed)
            with store.scratch() as scratch:
                big = n * setup_d * 4 > opts.memory_bytes
                rows = scratch("injected", (n, setup_d)) if big else np.empty((n, setup_d), dtype=np.float32)
                for s in range(0, n, chunk):
                    x = injection.inject(acts[s:s + chunk], planned, units, s)
                    rows[s:s + chunk] = x - reconstruct(x)
                out = search(rows, units, positions, token_ids, W_dec, opts, scratch, ctx.device)
            found = injection.score(planned, out.directions, out.verdicts, FOUND_COS)
            kept = {g.component for g in found if g.kept}
            features += [InjectedFeature(run=r, rate=f.rate, share=f.share, spread=f.spread, kind=f.kind,
                                         best_cos=g.best_cos, component=g.component, recovered=g.recovered,
                                         kept=g.kept, reasons=g.reasons) for f, g in zip(planned, found)]
            arm = injection.ARMS[r % len(injection.ARMS)]
            records.append(_record(r, arm, out, len(set(out.candidates) - kept), time.perf_counter() - t1))
            bar.update(1)
            bar.set_postfix_str(f"run {r}: k={out.k}, kept {sum(g.kept for g in found)}/{len(found)}")
        null = None
        if c.completeness_null:
            t1 = time.perf_counter()
            with store.scratch() as scratch:
                big = n * setup_d * 4 > opts.memory_bytes
                rows = scratch("surrogate", (n, setup_d)) if big else np.empty((n, setup_d), dtype=np.float32)
                elliptical_residual(resid, pca, mean, seed, rows, chunk,
                                    (lambda name, shape: scratch(name, shape)) if big else None)
                out = search(rows, units, positions, token_ids, W_dec, opts, scratch, ctx.device)
            null = _record(-1, "none: a structureless surrogate", out, len(out.candidates), time.perf_counter() - t1)
            bar.update(1)
    table = injection.cells(features)
    lims = injection.limits(table)
    trials = min((cl.trials for cl in table if (cl.spread, cl.kind) == injection.MAIN), default=0)
    false = null.n_candidates if null is not None else None
    return CompletenessResult(
        grid={"rates": list(grid.rates), "shares": list(grid.shares), "arm_share": grid.arm_share,
              "few_documents": grid.few_documents, "runs": grid.runs, "found_cos": FOUND_COS, "level": 0.9,
              "magnitude_sigma": injection.MAGNITUDE_SIGMA, "top_pcs": injection.TOP_PCS},
        residual_variance=float(pca.eigenvalues.sum()), features=features, cells=table, limits=lims, runs=records,
        null=null, false_candidates=false, statement=injection.statement(lims, trials, false, max(grid.shares)),
        seconds=round(time.perf_counter() - t0, 1))


def elliptical_residual(resid: np.ndarray, pca: stats.PCA, mean: np.ndarray, seed: int, out: np.ndarray,
                        chunk: int = 16384, scratch: Callable[[str, tuple[int, int]], np.ndarray] | None = None
                        ) -> np.ndarray:
    """A structureless surrogate of the residual: whitened in every non-degenerate direction, each row
    keeps its norm (and its place, so its document) and gets a uniformly random direction
    (:func:`darkmatter.analysis.ica.norm_matched_surrogate`), then the residual's covariance and mean
    are put back.

    Args:
        resid: float[n, d_model]; out: float32[n, d_model] to fill (a memmap is fine).
        scratch: makes the float32 arrays of the whitened rows and their surrogate (None: memory).
    Returns:
        ``out``.
    """
    rank = int((pca.eigenvalues > 1e-9 * pca.eigenvalues[0]).sum())
    white = ica.pca_whitening(pca, mean, rank)
    n = len(out)
    z = ica.whiten_rows(resid, white, None, chunk, out=None if scratch is None else scratch("whitened", (n, rank)))
    surrogate = ica.norm_matched_surrogate(z, seed, chunk,
                                           None if scratch is None else (lambda shape: scratch("ellipse", shape)))
    del z
    for s in range(0, len(out), chunk):
        out[s:s + chunk] = (np.asarray(surrogate[s:s + chunk], dtype=np.float64) @ white.dewhitener + mean)
    return out

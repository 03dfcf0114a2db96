"""Step 04: whiten the residual to k components, decompose it, and run the Gaussian control.

k is ``--n-components`` or the default rule of :func:`darkmatter.analysis.decompose.default_k`
(this step owns ``--max-components``). The control repeats the same FastICA, same tokens, k
and seeds, on a whitened Gaussian surrogate: what ICA reports there is the noise floor.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from darkmatter.analysis import ica, stats
from darkmatter.analysis.decompose import Decomposition, check_reconstruction, decompose, default_k, write_sources
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CollectResult, ICAResult, SetupResult

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


def _control_budget(ctx: StepContext, dec: Decomposition) -> int:
    """The control gets the symmetric iterations the real fits needed to settle: the question is
    whether noise settles as soon as the real components did (on Gaussian rows nothing settles,
    so it would otherwise always run to the cap); the refine that follows only polishes settled
    rows, and a control has none."""
    i = ctx.cfg.ica
    if i.ica_backend == "sklearn":
        return i.ica_max_iter
    return min(i.ica_max_iter, max(f.n_iter_symmetric or f.n_iter for f in dec.fits))


def run(ctx: StepContext) -> None:
    """PCA-whiten the residual to k components, FastICA over seeds, match, fix signs, write sources."""
    setup = ctx.read(SetupResult)
    ctx.read(CollectResult)
    ctx.read(ResidualDiagnostics)
    cfg, store, i = ctx.cfg, ctx.store, ctx.cfg.ica
    (resid,) = ctx.arrays("residuals.npy", d_model=setup.d_model)
    pca = stats.PCA(store.load_npy("pca_eigenvalues.npy", mmap=False), store.load_npy("pca_components.npy", mmap=False))
    k, k_rule = (i.n_components, "--n-components") if i.n_components else default_k(pca, i.max_components)
    try:
        white = ica.pca_whitening(pca, store.load_npy("residual_mean.npy", mmap=False), k)
    except ValueError as exc:
        raise DarkMatterError(f"{exc}; pass a smaller --n-components") from exc
    n = resid.shape[0]
    fit_rows = (None if not i.ica_max_tokens or i.ica_max_tokens >= n
                else stats.random_rows(n, i.ica_max_tokens, cfg.source.seed))
    chunk = max(cfg.run.sae_chunk_size, 16384)
    z = ica.whiten_rows(resid, white, fit_rows, chunk)  # n × k × 4 bytes: the one array 04 holds whole
    seeds = [cfg.source.seed + s for s in range(i.ica_seeds)]
    print(f"FastICA on {len(z):,} tokens × k={k} ({white.explained:.1%} of residual variance), "
          f"seeds {seeds[0]}..{seeds[-1]}")
    bars = SeedBars("FastICA", k, i.ica_max_iter)
    dec = decompose(z, white, seeds, i.ica_max_iter, i.ica_tol, i.ica_resample, i.ica_backend, ctx.device, bars)
    bars.close()
    for f in dec.fits:
        _print_fit(f.record(), k)
    n_fit = len(z)
    del z  # before the control, which builds its own n × k array
    control = None
    if i.gaussian_control:
        budget = _control_budget(ctx, dec)
        print(f"Gaussian control: FastICA on {n_fit:,} × {k} whitened Gaussian rows, same seeds, ≤ {budget} iterations")
        bars = SeedBars("control", k, budget)
        control = ica.gaussian_control(n_fit, k, seeds, budget, i.ica_tol, white, i.ica_resample, i.ica_backend,
                                       ctx.device, bars).summary(i.stable_cos, budget)
        bars.close()
    stable = dec.stability >= i.stable_cos  # as Decomposition.n_stable counts them
    with store.transaction():
        ctx.record_config()
        sources = store.open_npy("ica_activations.npy", (n, k), np.float32)
        explained = write_sources(resid, dec, sources, chunk)
        sources.flush()
        del sources
        check_reconstruction(explained, white)
        store.save_npy("ica_directions.npy", dec.directions.astype(np.float32))
        store.save_npy("ica_mixing.npy", dec.mixing.astype(np.float32))
        store.save_npy("ica_unmixing.npy", dec.unmixing.astype(np.float32))
        result = ICAResult(
            k=k, k_rule=k_rule, n_tokens=n, n_fit_tokens=n_fit, algorithm=ALGORITHM[i.ica_backend],
            backend=i.ica_backend, seeds=[f.record() for f in dec.fits], restart_resample=i.ica_resample,
            all_converged=all(f.converged for f in dec.fits),
            all_settled_converged=all(f.converged or (f.stopped_on_stability and bool(f.settled_converged))
                                      for f in dec.fits),
            max_iter=i.ica_max_iter, tol=i.ica_tol, stability_min_abs_cos=dec.stability.tolist(),
            stable_threshold=i.stable_cos, n_stable=dec.n_stable(i.stable_cos), pca_variance_kept=white.explained,
            reconstruction_variance_explained=explained, reconstruction_matches_pca=True,
            component_order="descending excess kurtosis of the source; sign: positive skew",
            source_excess_kurtosis_sample=dec.source_excess_kurtosis.tolist(), gaussian_control=control,
            n_stable_above_control=(int((stable & (dec.source_excess_kurtosis > control.source_excess_kurtosis_max_abs))
                                        .sum()) if control else None))
        ctx.write(result)
    print(f"{result.n_stable}/{k} components stable across seeds (matched |cos| ≥ {i.stable_cos}); "
          f"k-component reconstruction explains {explained:.4f} of residual variance (PCA kept {white.explained:.4f})")
    if control:
        print(f"Gaussian control (noise floor): {control.n_stable}/{k} stable, max |source excess kurtosis| "
              f"{control.source_excess_kurtosis_max_abs:.3f}; real components stable and above that kurtosis: "
              f"{result.n_stable_above_control}")


def _print_fit(r: ica.SeedFit, k: int) -> None:
    done = " (settled ones converged)" if r.settled_converged else ""
    how = (f"stopped on stability with {r.n_settled}/{k} settled{done}"
           if r.stopped_on_stability else f"converged={r.converged}")
    change = "" if r.final_change is None else f", final change {r.final_change:.1e}"
    print(f"  seed {r.seed} ({r.n_tokens:,} tokens): {r.n_iter} iterations, {how}{change}")

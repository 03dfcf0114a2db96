"""Step 03: is the residual Gaussian noise? Moments, kurtosis against a Gaussian surrogate, PCA."""

from __future__ import annotations

import numpy as np

from darkmatter.analysis import resampling, stats
from darkmatter.analysis.amplitude import Amplitude, measure
from darkmatter.analysis.diagnostics import diagnose
from darkmatter.distributed import chunk_range, current
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.report import plots
from darkmatter.pipeline.results import CollectResult, SetupResult
from darkmatter.sources.saes import decoder_rows

#: Random token rows for the Gaussianity test and the top-PC kurtosis.
GAUSSIAN_TEST_ROWS = 20_000


DEFF_COLUMNS = 256
"""The design effect (a median over dimensions) is measured on at most this many evenly spaced
residual dimensions, so its per-document sums stay small at d_model 4,096."""


#: Random token rows the amplitude error is measured on.
AMPLITUDE_ROWS = 20_000


def amplitude_error(ctx: StepContext, acts: np.ndarray, d_model: int) -> Amplitude | None:
    """The residual along the active latents' decoder rows, on a seeded subsample of tokens
    (:func:`darkmatter.analysis.amplitude.measure`); None for a run without an SAE to read (one started
    at step 03 from given arrays, :mod:`darkmatter.pipeline.synthetic`)."""
    if ctx.cfg.trains_sae and not ctx.store.exists("sae"):
        return None
    sae = ctx.sae()
    rows = np.sort(stats.random_rows(acts.shape[0], min(AMPLITUDE_ROWS, acts.shape[0]), ctx.cfg.source.seed + 3))
    x = np.asarray(acts[rows], dtype=np.float32)
    b_dec = sae.b_dec.detach().double().cpu().numpy()
    return measure(x, lambda t: sae.encode(t.to(ctx.device)).cpu(), decoder_rows(sae, d_model), b_dec,
                   lambda f: sae.decode(f.to(ctx.device)).cpu(), ctx.cfg.source.seed,
                   chunk=max(1, min(1024, ctx.cfg.run.sae_chunk_size)))


def run(ctx: StepContext) -> None:
    """FVU, per-dimension excess kurtosis, Gaussianity test and full-spectrum PCA of the residual."""
    setup = ctx.read(SetupResult)
    ctx.read(CollectResult)
    cfg, store = ctx.cfg, ctx.store
    acts, resid = ctx.arrays("activations.npy", "residuals.npy", d_model=setup.d_model)
    chunk = max(cfg.run.sae_chunk_size, 16384)
    m_act = ctx.moments(acts, "activations.npy", chunk)
    m_res = ctx.moments(resid, "residuals.npy", chunk)
    surrogate = stats.GaussianSurrogate(m_res.mean, m_res.cov, m_res.n, cfg.source.seed)
    m_sur = ctx.moments(surrogate, "the Gaussian surrogate", chunk, with_cov=False)
    rows = stats.random_rows(m_res.n, GAUSSIAN_TEST_ROWS, cfg.source.seed)
    units, _ = ctx.units()
    comm = current()
    lo, hi = chunk_range(m_res.n, chunk, comm)
    cols = np.unique(np.linspace(0, setup.d_model - 1, min(setup.d_model, DEFF_COLUMNS)).astype(int))
    deff, _ = resampling.design_effect(stats.RowRange(resid, lo, hi, cols), units, cfg.source.seed,  # type: ignore[arg-type]
                                       shift=m_res.mean[cols], lo=lo, comm=comm)
    if not comm.is_main:  # the other ranks helped with every sum; rank 0 writes
        return
    diag, pca_res, pca_act = diagnose(m_act, m_res, m_sur, np.asarray(resid[rows], dtype=np.float64),
                                      np.asarray(acts[rows], dtype=np.float64), deff)
    amp = amplitude_error(ctx, acts, setup.d_model)
    title = f"{setup.hook.hook_name}, {m_res.n:,} tokens"
    marks = {float(k.rstrip("%")) / 100: v for k, v in diag.pca_components_for.items()}
    with store.transaction():
        store.save_npy("residual_mean.npy", m_res.mean)
        store.save_npy("pca_eigenvalues.npy", pca_res.eigenvalues)
        store.save_npy("pca_components.npy", pca_res.components)
        ctx.write(diag)
        if amp is not None:
            ctx.write(amp)
        ctx.discard_unless({"amplitude.json"} if amp is not None else set(), "amplitude.json")
        store.save_figure("residual_kurtosis.png", plots.residual_kurtosis(
            m_res.excess_kurtosis, m_act.excess_kurtosis, diag.kurtosis_standard_error_effective,
            f"SAE residual vs activations: {title}", diag.gaussian_surrogate.max_abs))
        store.save_figure("residual_pca.png", plots.residual_pca(
            pca_res.eigenvalues, pca_act.eigenvalues, marks, f"PCA of the SAE residual: {title}"))
    print(f"FVU {diag.fvu:.4f}")
    if amp is not None:
        print(f"amplitude error ({amp.n_rows:,} tokens): {amp.share_in_active_span:.1%} of the residual's energy "
              f"lies along the active latents' decoder rows (null, as many rows of latents that did not fire: "
              f"{amp.share_in_null_span:.1%}); refitting their amplitudes lowers FVU {amp.fvu:.4f} → "
              f"{amp.fvu_refit:.4f} ({amp.amplitude_share:.1%} of the residual is amplitude error); "
              f"{amp.share_shrunk:.0%} of active latents wrote too little (median relative error "
              f"{amp.relative_error_median:+.3f})")
    print(f"verdict: {diag.verdict}")

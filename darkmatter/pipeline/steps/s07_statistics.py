"""Step 07: heavy tails of the ICA sources against the SAE's features, like for like, beside the
matched control."""

from __future__ import annotations

import numpy as np

from darkmatter.analysis.stats import tail_fraction
from darkmatter.analysis.tails import ALIVE_FREQUENCY, compare_tails
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.report import plots
from darkmatter.pipeline.results import CollectResult, ICAResult
from darkmatter.pipeline.steps import completeness
from darkmatter.pipeline.steps.s04_ica import search_options


def run(ctx: StepContext) -> None:
    """Excess kurtosis and sparsity of ICA sources against SAE feature activations."""
    sae_stats, ica = ctx.read(CollectResult), ctx.read(ICAResult)
    store = ctx.store
    sources = store.load_npy("ica_activations.npy")
    n, k = sources.shape
    chunk = max(ctx.cfg.run.sae_chunk_size, 65536)
    m_ica = ctx.moments(sources, "ica_activations.npy", chunk)
    tail = tail_fraction(sources, m_ica.mean, np.sqrt(m_ica.var), 3.0, chunk)
    fm = store.load_npy("sae_feature_moments.npy", mmap=False)
    if sae_stats.metrics.n_tokens != n or fm.shape != (5, sae_stats.metrics.d_sae):
        raise DarkMatterError("ica_activations.npy / sae_feature_moments.npy do not match sae_stats.json: "
                              f"rerun scripts/{table.producer('sae_feature_moments.npy')} and the steps after it")
    control = ica.control
    result, features = compare_tails(m_ica, tail, fm, ica.n_stable,
                                     control.source_excess_kurtosis_max_abs if control else None,
                                     control.n_stable if control else None, ica.n_above_floor,
                                     control.source_excess_kurtosis if control else None)
    ica_k = m_ica.excess_kurtosis
    found = completeness.run(ctx, search_options(ctx))
    with store.transaction():  # the step's outputs land as one unit
        ctx.write(result)
        store.save_figure("ica_vs_sae_kurtosis.png", plots.kurtosis_vs_sae(
            ica_k, np.array(control.source_excess_kurtosis) if control else None, features.excess_kurtosis,
            features.excess_kurtosis_active, features.frequency,
            control.source_excess_kurtosis_max_abs if control else None,
            f"ICA sources of the residual vs SAE features ({n:,} tokens)"))
        if found is not None:
            ctx.write(found)
            store.save_figure("completeness.png", plots.completeness(
                found.cells, found.limits, f"Injection–recovery on {n:,} tokens: {found.grid['runs']} runs, "
                f"{len(found.features)} injected features",
                found.statement))
        else:
            ctx.discard_unless(set(), "completeness.json", "completeness.png")
    if found is not None:
        print(found.statement)
        for r in found.runs:
            print(f"  injection run {r.run} ({r.arm}): k = {r.k}, {r.n_candidates} candidates ({r.other_candidates} "
                  f"not an injected feature), {r.seconds:.0f} s")
    sae = result.sae_excess_kurtosis
    med = [s.median if s else float("nan") for s in (sae.summary, sae.summary_zeros_only, sae.summary_active)]
    print(f"excess kurtosis: ICA median {np.median(ica_k):.2f} (max {ica_k.max():.1f}); SAE features firing ≥ "
          f"{ALIVE_FREQUENCY:.1%} (n={sae.n_features_counted}): median {med[0]:.1f} over all tokens (zeros alone "
          f"give {med[1]:.1f}), {med[2]:.2f} over active tokens")
    gc = result.control
    if gc:
        print(f"noise floor (ICA on a Gaussian surrogate): max |excess kurtosis| "
              f"{gc.source_excess_kurtosis_max_abs:.3f}, {gc.n_stable} stable; real: "
              f"{gc.n_ica_components_above_floor}/{k} components above it (floor test), {gc.n_ica_stable} stable")

"""The results document: every step's typed result, the headline, the noise floor, the step table.

:func:`aggregate` builds :class:`~darkmatter.pipeline.results.document.Results` from typed results
only; :mod:`darkmatter.pipeline.report.markdown` renders it. Direction sets are iterated, never named,
so a registered baseline appears in every table.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from darkmatter.analysis.amplitude import Amplitude
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.directions import ICA
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.injection import CompletenessResult
from darkmatter.analysis.tails import TailComparison
from darkmatter.pipeline.report.causal_table import causal_line
from darkmatter.pipeline.report.verdict import verdict
from darkmatter.pipeline.results import (
    CausalResult,
    CollectResult,
    FeatureBank,
    ICAResult,
    LinearSplitResult,
    SetupResult,
    SimilarityResult,
    TrainingRecord,
)
from darkmatter.pipeline.results.document import (
    ArrayInfo,
    ComponentRow,
    LayerRow,
    LayersSummary,
    NoiseFloor,
    Results,
    StepRecord,
)

PLOTS = ("residual_kurtosis.png", "residual_pca.png", "ica_sae_similarity.png", "causal_topm.png",
         "ica_vs_sae_kurtosis.png", "completeness.png", "groundtruth_recovery.png")


@dataclass(frozen=True)
class Parts:
    """The typed results step 08 aggregates (optional ones None)."""

    setup: SetupResult
    sae_stats: CollectResult
    diagnostics: ResidualDiagnostics
    ica: ICAResult
    similarity: SimilarityResult
    bank: FeatureBank
    statistics: TailComparison
    groundtruth: GroundTruthScores | None = None
    sae_training: TrainingRecord | None = None
    linear_split: LinearSplitResult | None = None
    causal: CausalResult | None = None
    completeness: CompletenessResult | None = None
    amplitude: Amplitude | None = None


def limit_text(p: Parts) -> str:
    """What every count of candidates is read against: the detection limit and the false-candidate
    count (or that the completeness grid did not run)."""
    if p.completeness is None:
        return "detection limit not measured (--completeness-runs 0)"
    return p.completeness.statement


def stability_text(ica: ICAResult) -> str:
    """How stability was measured, and by which unit, in a phrase."""
    unit = ica.resampling_unit
    text = (f"stable across {ica.stability_splits} random splits of the {unit}s (reappears in ≥ "
            f"{ica.stable_frequency:.0%} of the {2 * ica.stability_splits} half-fits that can tell)")
    if unit != "document":
        text += f"; by {unit}s, not documents: the source gives no document ids"
    return text


def candidates(p: Parts) -> list[int]:
    """The components that pass the one candidate rule (:mod:`darkmatter.analysis.candidates`,
    applied by step 05)."""
    return list(p.similarity.candidates)


def noise_floor(p: Parts) -> NoiseFloor | None:
    control, ica = p.ica.control, p.ica
    if control is None:
        return None
    return NoiseFloor(null=ica.noise_floor, control_n_stable=control.n_stable, control_n_settled=control.n_settled,
                      control_max_abs_source_excess_kurtosis=control.source_excess_kurtosis_max_abs,
                      control_median_source_excess_kurtosis=control.source_excess_kurtosis_median,
                      n_above_floor=ica.n_above_floor, n_reproducible=ica.n_reproducible,
                      n_candidates=len(p.similarity.candidates), design_effect=ica.design_effect,
                      effective_tokens=ica.effective_tokens,
                      residual_dims_above_surrogate_kurtosis=p.diagnostics.gaussian_surrogate.n_residual_dims_above_max_abs)


def _convergence(ica: ICAResult) -> str:
    """One phrase on how the FastICA runs ended (the verdict's convergence line says what it means)."""
    if ica.all_converged:
        return "converged in every seed"
    stopped = [r for r in ica.seeds if r.stopped_on_stability]
    if not stopped:
        return f"no fit met the tolerance within {ica.max_iter} iterations (see Convergence at the top)"
    settled = "/".join(str(r.n_settled) for r in ica.seeds)
    done = " and refined to tol" if ica.all_settled_converged else ""
    capped = len(ica.seeds) - len(stopped) - sum(r.converged for r in ica.seeds if not r.stopped_on_stability)
    return (f"{len(stopped)} of {len(ica.seeds)} fits stopped once stable ({settled} of {ica.k} components settled"
            f"{done})" + (f", {capped} hit the iteration cap" if capped else ""))


def exclusions(p: Parts) -> str:
    """The BOS and massive-activation tokens left out, and the FVU with and without them."""
    s = p.sae_stats
    text = (f"{s.bos_positions_excluded:,} BOS positions and {s.massive_tokens_excluded:,} massive-activation tokens "
            f"excluded; FVU {s.metrics.fvu:.4f} without them")
    return text + (f", {s.metrics_with_excluded.fvu:.4f} with them" if s.metrics_with_excluded else "")


def headline(p: Parts, novel: list[int], floor: NoiseFloor | None) -> list[str]:
    """One-line findings, each with the figure it is compared against."""
    m, d, ica, st, sim = p.sae_stats.metrics, p.diagnostics, p.ica, p.statistics, p.similarity
    an, anp = sim.against_null, sim.against_null_projected
    sweep = ", ".join(f"k={x.k}: {x.n_reproducible}" for x in ica.k_sweep)
    lines = [
        f"SAE: FVU {m.fvu:.4f}, L0 {m.mean_l0:.1f}, dead {m.dead_fraction:.1%} ({exclusions(p)})",
        f"residual: median excess kurtosis {d.residual_excess_kurtosis.median:.2f}, "
        f"{d.pca_components_for['90%']} PCA components for 90% of its variance",
        f"k sweep (settled, stable and above the noise floor): {sweep}; n_eff ≥ {ica.samples_per_parameter:g}·k² "
        f"for the half-fits allows k ≤ {ica.k_bound} at the chosen k (n_eff = n / design effect "
        f"{ica.design_effect:.2f} = {ica.effective_tokens:,.0f} tokens; raw n allows {ica.max_supported_k})"
        + (f"; k = {', '.join(map(str, ica.k_skipped))} not fitted" if ica.k_skipped else ""),
        f"ICA: k={ica.k} ({ica.pca_variance_kept:.1%} of residual variance), {_convergence(ica)}; "
        f"{ica.n_stable}/{ica.k} {stability_text(ica)}, {ica.n_undetermined} undetermined, {ica.n_settled} settled, "
        f"{ica.n_above_floor} above the noise floor, {ica.n_reproducible} all three",
        f"mean max |cos| to the SAE (settled ICA components; raw / projected into the whitened subspace): ICA "
        f"{sim.sets['ICA'].mean_max_abs_cos:.3f} / {sim.sets_projected['ICA'].mean_max_abs_cos:.3f}; matched null "
        f"({sim.null_draws} random rotations) {an.null_mean:.3f} / {anp.null_mean:.3f}, 99th percentile "
        f"{an.null_p99:.3f} / {anp.null_p99:.3f}; ICA above it {an.share_above_p99:.0%} / {anp.share_above_p99:.0%}",
        f"{len(novel)} dark-matter candidates" + (f" {novel[:20]}" if novel else "") + f" — {limit_text(p)}",
    ]
    if floor is not None:
        lines.append(
            f"noise floor (the matched null: a norm-matched elliptical surrogate): {floor.control_n_stable} of {ica.k} "
            f"control components stable, largest control excess kurtosis "
            f"{floor.control_max_abs_source_excess_kurtosis:.3f} (95% of bootstrap draws {ica.floor_interval[0]:.3f}–"
            f"{ica.floor_interval[1]:.3f}); effective sample size {floor.effective_tokens:,.0f} tokens (design effect "
            f"{floor.design_effect:.2f} of the sources' excess kurtosis)")
    if p.amplitude is not None:
        a = p.amplitude
        lines.append(f"amplitude error: {a.share_in_active_span:.1%} of the residual's energy lies along the active "
                     f"latents' decoder rows (null, as many rows of latents that did not fire: "
                     f"{a.share_in_null_span:.1%}); refitting their amplitudes lowers FVU {a.fvu:.4f} → "
                     f"{a.fvu_refit:.4f} ({a.amplitude_share:.1%} of the residual is amplitude error)")
    if p.groundtruth is not None:
        g = p.groundtruth
        lines.append(f"planted ground truth, {len(g.dark_features)} dark features: found at |cos| > {g.found_cos}: "
                     + ", ".join(f"{n} {s.n_found}" for n, s in g.sets.items())
                     + f"; ICA false discoveries {g.sets[ICA].n_false_discoveries}/{g.k}")
    if p.linear_split is not None:
        ls = p.linear_split
        lines.append(f"linear part (Engels et al. 2024, held-out {ls.unit}s): {ls.split.variance_predicted:.1%} of "
                     f"residual variance and R² {ls.split.norm_predicted:.2f} of its norm are linear in x; components "
                     "in the linear / nonlinear part / both / neither: "
                     + " / ".join(str(ls.counts[c]) for c in ("linear", "nonlinear", "both", "neither")))
    if p.causal is not None:
        lines.append(causal_line(p.causal))
    sae_kurt = st.sae_excess_kurtosis.summary
    lines.append(f"excess kurtosis (effect sizes, all tokens): ICA sources median "
                 f"{st.ica_excess_kurtosis.summary.median:.2f}; SAE features median "
                 + ("n/a" if sae_kurt is None else f"{sae_kurt.median:.2f}")
                 + " (mostly their zeros: see statistics)")
    return lines


def aggregate(config: dict[str, Any], p: Parts, steps: list[StepRecord], arrays: dict[str, ArrayInfo],
              plots: list[str]) -> Results:
    """Build the results document from the steps' typed results.

    Args:
        config: the resolved config by section.
        steps: the step table as it ran; arrays: every .npy present; plots: every PNG present.
    """
    novel, floor = candidates(p), noise_floor(p)
    env = p.setup.environment
    return Results(
        generated=datetime.date.today().isoformat(),
        machine=f"{env.cpu_count} CPU cores, {env.gpu or env.device}, {env.platform}",
        config=config, headline=headline(p, novel, floor), verdict=p.diagnostics.verdict,
        candidate_dark_matter_components=novel, setup=p.setup, sae_training=p.sae_training,
        sae_stats=p.sae_stats, diagnostics=p.diagnostics, ica=p.ica, similarity=p.similarity,
        statistics=p.statistics, groundtruth=p.groundtruth, noise_floor=floor, linear_split=p.linear_split,
        causal=p.causal, completeness=p.completeness, amplitude=p.amplitude, detection_limit=limit_text(p),
        answer=verdict(p, novel),
        components=[ComponentRow(component=c.component, max_abs_cos_to_sae=s.max_abs_cos,
                                 max_abs_cos_to_sae_projected=s.max_abs_cos_projected,
                                 best_sae_feature=s.best_feature, stability=f.stability,
                                 stability_status=f.stability_status, settled=f.settled,
                                 excess_kurtosis=f.source_excess_kurtosis, above_floor=f.above_floor,
                                 candidate=s.candidate, not_candidate_because=s.not_candidate_because,
                                 labels=f.artifact.labels,
                                 top_tokens=[t for t, _ in c.token_histogram[:5]], linear_share=c.linear_share,
                                 gap_closed=c.causal.add_back.share if c.causal and c.causal.add_back else None)
                    for c, s, f in zip(p.bank.components, p.similarity.components, p.ica.components)],
        steps=steps, arrays=arrays, plots=plots)


def layers_summary(results: dict[int, Results]) -> LayersSummary:
    """One row per layer from each layer's results."""
    rows = []
    for layer, r in sorted(results.items()):
        f = r.noise_floor
        rows.append(LayerRow(
            layer=layer, hook_name=r.setup.hook.hook_name, outputs=r.config["run"]["outputs"],
            sae_fvu=r.sae_stats.metrics.fvu, sae_l0=r.sae_stats.metrics.mean_l0,
            sae_dead_fraction=r.sae_stats.metrics.dead_fraction,
            residual_median_excess_kurtosis=r.diagnostics.residual_excess_kurtosis.median,
            pca_components_for_90=r.diagnostics.pca_components_for["90%"], k=r.ica.k, n_stable=r.ica.n_stable,
            control_n_stable=f.control_n_stable if f else None,
            n_stable_above_noise_floor=r.ica.n_reproducible,
            mean_max_abs_cos_to_sae={n: s.mean_max_abs_cos for n, s in r.similarity.sets.items()},
            ica_median_excess_kurtosis=r.statistics.ica_excess_kurtosis.summary.median,
            n_candidate_dark_matter=len(r.candidate_dark_matter_components), detection_limit=r.detection_limit))
    return LayersSummary(layers=rows)

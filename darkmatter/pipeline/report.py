"""The results document: every step's typed result, the headline, the noise floor, the step table.

:func:`aggregate` builds :class:`~darkmatter.pipeline.document.Results` from typed results
only; :mod:`darkmatter.pipeline.markdown` renders it. Direction sets are iterated, never named,
so a registered baseline appears in every table.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from darkmatter.analysis.compare import LOW
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.directions import ICA
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.tails import TailComparison
from darkmatter.pipeline.document import (
    ArrayInfo,
    ComponentRow,
    LayerRow,
    LayersSummary,
    NoiseFloor,
    Results,
    StepRecord,
)
from darkmatter.pipeline.results import (
    CollectResult,
    ICAResult,
    InterpretationsResult,
    SetupResult,
    SimilarityResult,
    TrainingRecord,
)

PLOTS = ("residual_kurtosis.png", "residual_pca.png", "ica_sae_similarity.png", "ica_vs_sae_kurtosis.png",
         "groundtruth_recovery.png")


@dataclass(frozen=True)
class Parts:
    """The typed results step 08 aggregates (optional ones None)."""

    setup: SetupResult
    sae_stats: CollectResult
    diagnostics: ResidualDiagnostics
    ica: ICAResult
    similarity: SimilarityResult
    interpretations: InterpretationsResult
    statistics: TailComparison
    groundtruth: GroundTruthScores | None = None
    sae_training: TrainingRecord | None = None


def candidates(p: Parts) -> list[int]:
    """Stable components with max |cos| < 0.3 to every SAE decoder row."""
    return [c.component for c in p.similarity.components if c.max_abs_cos < LOW and p.ica.is_stable(c.component)]


def noise_floor(p: Parts) -> NoiseFloor | None:
    control, st = p.ica.gaussian_control, p.statistics.gaussian_control
    if control is None or st is None:
        return None
    return NoiseFloor(control_n_stable=control.n_stable,
                      control_max_abs_source_excess_kurtosis=control.source_excess_kurtosis_max_abs,
                      n_ica_above_control_kurtosis=st.n_ica_components_above_floor,
                      n_ica_stable_and_above_control_kurtosis=p.ica.n_stable_above_control,
                      residual_dims_above_surrogate_kurtosis=p.diagnostics.gaussian_surrogate.n_residual_dims_above_max_abs)


def _convergence(ica: ICAResult) -> str:
    """One phrase on how the FastICA runs ended."""
    if ica.all_converged:
        return "converged in every seed"
    if all(r.stopped_on_stability for r in ica.seeds):
        settled = "/".join(str(r.n_settled) for r in ica.seeds)
        done = " and refined to tol" if ica.all_settled_converged else ""
        return f"stopped once stable in every seed ({settled} of {ica.k} components settled{done})"
    return "NOT converged (hit the iteration cap)"


def headline(p: Parts, novel: list[int], floor: NoiseFloor | None) -> list[str]:
    """One-line findings, each with the figure it is compared against."""
    m, d, ica, st = p.sae_stats.metrics, p.diagnostics, p.ica, p.statistics
    sae_kurt = st.sae_excess_kurtosis.summary
    lines = [
        f"SAE: FVU {m.fvu:.4f}, L0 {m.mean_l0:.1f}, dead {m.dead_fraction:.1%} "
        f"({p.sae_stats.bos_positions_excluded:,} BOS positions and {p.sae_stats.massive_tokens_excluded:,} "
        "massive-activation tokens excluded)",
        f"residual: mean excess kurtosis {d.residual_excess_kurtosis.mean:.2f}, "
        f"{d.pca_components_for['90%']} PCA components for 90% of its variance",
        f"ICA: k={ica.k}, {_convergence(ica)} (iterations {[r.n_iter for r in ica.seeds]}), "
        f"{ica.n_stable}/{ica.k} stable across seeds",
        "mean max |cos| to the SAE: " + ", ".join(
            f"{name} {s.mean_max_abs_cos:.3f}" for name, s in p.similarity.sets.items()),
        f"excess kurtosis: ICA median {st.ica_excess_kurtosis.summary.median:.2f} vs SAE features "
        + ("n/a" if sae_kurt is None else f"{sae_kurt.median:.2f}"),
        f"{len(novel)} stable ICA components lie far (|cos| < {LOW}) from every SAE feature: {novel[:20]}",
    ]
    if floor is not None:
        lines.append(
            f"noise floor (ICA on a Gaussian surrogate, same n, k, seeds): {floor.control_n_stable} stable, max "
            f"|excess kurtosis| {floor.control_max_abs_source_excess_kurtosis:.3f}; real components above it "
            f"{floor.n_ica_above_control_kurtosis}/{ica.k}, stable and above it "
            f"{floor.n_ica_stable_and_above_control_kurtosis}")
    if p.groundtruth is not None:
        g = p.groundtruth
        lines.append(f"planted ground truth, {len(g.dark_features)} dark features: found at |cos| > {g.found_cos}: "
                     + ", ".join(f"{n} {s.n_found}" for n, s in g.sets.items())
                     + f"; ICA false discoveries {g.sets[ICA].n_false_discoveries}/{g.k}")
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
    kurt = p.statistics.ica_excess_kurtosis.per_component
    return Results(
        generated=datetime.date.today().isoformat(),
        machine=f"{env.cpu_count} CPU cores, {env.gpu or env.device}, {env.platform}",
        config=config, headline=headline(p, novel, floor), verdict=p.diagnostics.verdict,
        candidate_dark_matter_components=novel, setup=p.setup, sae_training=p.sae_training,
        sae_stats=p.sae_stats, diagnostics=p.diagnostics, ica=p.ica, similarity=p.similarity,
        statistics=p.statistics, groundtruth=p.groundtruth, noise_floor=floor,
        components=[ComponentRow(component=c.component, max_abs_cos_to_sae=s.max_abs_cos,
                                 best_sae_feature=s.best_feature, stability=p.ica.stability_min_abs_cos[c.component],
                                 excess_kurtosis=kurt[c.component],
                                 top_tokens=[t for t, _ in c.frequent_top_tokens[:5]])
                    for c, s in zip(p.interpretations.components, p.similarity.components)],
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
            n_stable_above_noise_floor=f.n_ica_stable_and_above_control_kurtosis if f else None,
            mean_max_abs_cos_to_sae={n: s.mean_max_abs_cos for n, s in r.similarity.sets.items()},
            ica_median_excess_kurtosis=r.statistics.ica_excess_kurtosis.summary.median,
            n_candidate_dark_matter=len(r.candidate_dark_matter_components)))
    return LayersSummary(layers=rows)

"""The results document (ica_dark_matter_results.json, step 08) and the per-layer summary
(layers_summary.json, ``run_pipeline.py --layers``), as typed results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from darkmatter.analysis.amplitude import Amplitude
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.injection import CompletenessResult
from darkmatter.analysis.tails import TailComparison
from darkmatter.pipeline.results import (
    CausalResult,
    CollectResult,
    ICAResult,
    LinearSplitResult,
    SetupResult,
    SimilarityResult,
    TrainingRecord,
    register_result,
)


@dataclass(frozen=True)
class Timing:
    """One script's wall time (seconds) and peak resident memory (MiB)."""

    seconds: float
    peak_rss_mb: float


@dataclass(frozen=True)
class StepRecord:
    """A step of the table as it ran: number, script, summary, outputs present, timing."""

    number: int
    script: str
    summary: str
    outputs: list[str]
    timing: Timing | None


@dataclass(frozen=True)
class ArrayInfo:
    shape: list[int]
    dtype: str


@dataclass(frozen=True)
class NoiseFloor:
    """The real run against the matched control (a norm-matched elliptical surrogate: same n, k, seeds,
    restarts and optimisation).

    Attributes:
        null: how the floor test is made, in words (ica.json ``noise_floor``).
        control_n_stable, control_n_settled: what FastICA reports on pure noise.
        control_max_abs_source_excess_kurtosis, control_median_source_excess_kurtosis: of its sources.
        n_above_floor: components whose kurtosis passes the floor test; n_reproducible: and are
            settled and stable; n_candidates: and pass the rest of the candidate rule.
        design_effect, effective_tokens: Kish's design effect of source kurtosis and n / it.
        residual_dims_above_surrogate_kurtosis: step 03's per-dimension figure.
    """

    null: str
    control_n_stable: int
    control_n_settled: int | None
    control_max_abs_source_excess_kurtosis: float
    control_median_source_excess_kurtosis: float
    n_above_floor: int
    n_reproducible: int
    n_candidates: int
    design_effect: float
    effective_tokens: float
    residual_dims_above_surrogate_kurtosis: int


@dataclass(frozen=True)
class ComponentRow:
    """One line per component of the results file."""

    component: int
    max_abs_cos_to_sae: float
    max_abs_cos_to_sae_projected: float
    best_sae_feature: int
    stability: float
    stability_status: str
    settled: bool
    excess_kurtosis: float
    above_floor: bool
    candidate: bool
    not_candidate_because: list[str]
    labels: list[str]
    top_tokens: list[str]
    linear_share: float | None = None
    gap_closed: float | None = None


@dataclass(frozen=True)
class Results:
    """ica_dark_matter_results.json (step 08): every step's typed result plus the headline.

    Attributes:
        generated: ISO date the report was built; machine: one line (CPU count, device, platform).
        config: the resolved config by section.
        headline: one-line findings; verdict: step 03's decision-point sentence.
        candidate_dark_matter_components: the candidate rule's components (similarity.json).
        noise_floor: the real run against the matched control (None without a control).
        components: one row per component.
        steps: every step of the table with its outputs and timing.
        arrays: shape and dtype of every .npy; plots: the PNG names.
        linear_split: step 06's linear/nonlinear split; causal: its causal tests (None where they did not run).
        completeness: step 07's injection–recovery grid; amplitude: step 03's amplitude error;
        detection_limit: the sentence every count of candidates is read against.
        answer: the verdict in four ``"<label>: <sentence>"`` lines (:mod:`darkmatter.pipeline.report.verdict`):
            what was found against which null, the detection limit, what would change it, convergence.
    """

    generated: str
    machine: str
    config: dict[str, Any]
    headline: list[str]
    verdict: str
    candidate_dark_matter_components: list[int]
    setup: SetupResult
    sae_training: TrainingRecord | None
    sae_stats: CollectResult
    diagnostics: ResidualDiagnostics
    ica: ICAResult
    similarity: SimilarityResult
    statistics: TailComparison
    groundtruth: GroundTruthScores | None
    noise_floor: NoiseFloor | None
    components: list[ComponentRow]
    steps: list[StepRecord]
    arrays: dict[str, ArrayInfo]
    plots: list[str]
    linear_split: LinearSplitResult | None = None
    causal: CausalResult | None = None
    completeness: CompletenessResult | None = None
    amplitude: Amplitude | None = None
    detection_limit: str | None = None
    answer: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LayerRow:
    """One layer of ``run_pipeline.py --layers``."""

    layer: int
    hook_name: str
    outputs: str
    sae_fvu: float
    sae_l0: float
    sae_dead_fraction: float
    residual_median_excess_kurtosis: float
    pca_components_for_90: int
    k: int
    n_stable: int
    control_n_stable: int | None
    n_stable_above_noise_floor: int | None
    mean_max_abs_cos_to_sae: dict[str, float]
    ica_median_excess_kurtosis: float
    n_candidate_dark_matter: int
    detection_limit: str | None = None


@dataclass(frozen=True)
class LayersSummary:
    """layers_summary.json."""

    layers: list[LayerRow]


register_result(Results, "ica_dark_matter_results.json")
register_result(LayersSummary, "layers_summary.json")

"""Typed stage results: what each step writes as JSON, as frozen dataclasses.

The store serialises a result with ``dataclasses.asdict`` plus two stamps (``schema_version``
and the writing step's ``run_id``) and reads it back through pydantic, so a key exists once,
as a field. :data:`SCHEMA_VERSION` is the one version number of every JSON the pipeline
writes; it changes whenever any of these classes (or those of
:mod:`darkmatter.pipeline.results.document`) does. :data:`RESULT_FILES` maps each class to its file
(the step table says which step writes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from darkmatter.analysis.amplitude import Amplitude
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.injection import CompletenessResult
from darkmatter.analysis.linear_split import LinearSplit
from darkmatter.analysis.tails import TailComparison
from darkmatter.experiments.training import SAETrainingResult
from darkmatter.pipeline.results.bank import (
    BankEntry,
    CausalResult,
    Example,
    FeatureBank,
    Histogram,
    LogitLens,
    NearestFeature,
)
from darkmatter.pipeline.results.ica import ComponentFit, ComponentMatch, ICAResult, KSweepPoint, SimilarityResult
from darkmatter.sources.base import HookInfo
from darkmatter.sources.collect import SAEMetrics, ThroughputRecord

SCHEMA_VERSION = 7
__all__ = ["ComponentFit", "ComponentMatch", "ICAResult", "KSweepPoint", "SimilarityResult",  # re-exported
           "BankEntry", "CausalResult", "Example", "FeatureBank", "Histogram", "LogitLens", "NearestFeature"]


@dataclass(frozen=True)
class Environment:
    """The machine and library versions of a run."""

    python: str
    platform: str
    cpu_count: int | None
    ram_free_gb: float
    device: str
    packages: dict[str, str | None]
    gpu: str | None = None
    gpu_free_gb: float | None = None
    gpu_total_gb: float | None = None


@dataclass(frozen=True)
class SAEInfo:
    """The SAE under analysis: its source (release/id or folder), SAELens class, widths, ``W_dec``
    as stored (and whether it had to be turned to [d_sae, d_model]), the hook its metadata names,
    and who made it (pretrained, trained here, or brought by the source)."""

    source: str
    sae_class: str
    d_sae: int
    d_in: int
    W_dec_shape: list[int]
    W_dec_transposed: bool
    hook_name: str | None
    made_by: str


@dataclass(frozen=True)
class SetupResult:
    """setup.json (step 01)."""

    environment: Environment
    source_kind: str
    description: str
    hook: HookInfo
    sae: SAEInfo
    sae_train_windows: int
    source_details: dict[str, Any]

    @property
    def d_model(self) -> int:
        return self.hook.d_model


@dataclass(frozen=True)
class TrainingRecord:
    """sae_training.json (step 01, when it trains the SAE): the training run without its history
    (which is in sae_history.json)."""

    train_windows: int
    n_train_tokens: int
    seconds_activations: float
    seconds_training: float
    result: SAETrainingResult


@dataclass(frozen=True)
class TrainingHistory:
    """sae_history.json (step 01, when it trains the SAE): SAELens losses every ``log_every``
    steps and the evenly spaced validation evaluations of the kept run."""

    history: list[dict[str, float]]
    evals: list[dict[str, float]]


@dataclass(frozen=True)
class CollectResult:
    """sae_stats.json (step 02): the SAE on the analysed tokens and what was excluded
    (``metrics_with_excluded``: the SAE on the analysed and excluded tokens together, None when
    nothing was excluded)."""

    metrics: SAEMetrics
    massive_tokens_excluded: int
    bos_positions_excluded: int
    max_norm_ratio: float | None
    throughput: ThroughputRecord | None
    n_windows: int
    context_size: int | None
    metrics_with_excluded: SAEMetrics | None = None


@dataclass(frozen=True)
class ComponentLinearity:
    """Where one ICA component of the residual lives (linear_split.json ``components``).

    Attributes:
        linear_share: share of its source's variance the linear map from x predicts (held out).
        nonlinear_match: its largest |cos| to the ICA components of the nonlinear part.
        lives_in: "linear", "nonlinear", "both" or "neither" (see ``analysis.linear_split.lives_in``).
    """

    component: int
    linear_share: float
    nonlinear_match: float
    lives_in: str


@dataclass(frozen=True)
class LinearSplitResult:
    """linear_split.json (step 07): the linear/nonlinear split of the residual (Engels et al. 2024).

    Attributes:
        split: the held-out fractions, overall and per principal-component band.
        unit, n_units: what the halves are made of (documents or windows).
        k: the residual's ICA components; nonlinear_k: the nonlinear part's (k, or its rank if lower);
        nonlinear_n_stable: how many of those are stable (same seeds and restarts as step 04).
        counts: components per ``lives_in`` class.
        components: per residual component.
    """

    split: LinearSplit
    unit: str
    n_units: int
    k: int
    nonlinear_k: int
    nonlinear_n_stable: int
    counts: dict[str, int]
    components: list[ComponentLinearity]


#: Each typed result and the file it is written to (:func:`register_result` adds more).
RESULT_FILES: dict[type, str] = {
    SetupResult: "setup.json", TrainingRecord: "sae_training.json", TrainingHistory: "sae_history.json",
    CollectResult: "sae_stats.json",
    ResidualDiagnostics: "diagnostics.json", ICAResult: "ica.json", SimilarityResult: "similarity.json",
    GroundTruthScores: "groundtruth.json", FeatureBank: "feature_bank.json", CausalResult: "causal.json",
    TailComparison: "statistics.json", LinearSplitResult: "linear_split.json",
    CompletenessResult: "completeness.json", Amplitude: "amplitude.json",
}


def register_result(cls: type, name: str) -> None:
    """Name the file a typed result is written to. Raises ValueError if either is taken."""
    if cls in RESULT_FILES or name in RESULT_FILES.values():
        raise ValueError(f"{cls.__name__} or {name} already has a result file")
    RESULT_FILES[cls] = name

"""Typed results of steps 04 and 05: the k sweep, the decomposition and the SAE comparison
(re-exported by :mod:`darkmatter.pipeline.results`, which registers their files)."""

from __future__ import annotations

from dataclasses import dataclass

from darkmatter.analysis.artifacts import ArtifactFlag
from darkmatter.analysis.compare import AgainstNull, MatchSummary
from darkmatter.analysis.ica import ControlSummary, SeedFit
from darkmatter.analysis.stats import Summary


@dataclass(frozen=True)
class KSweepPoint:
    """One k of step 04's sweep.

    Attributes:
        k: components; variance_kept: share of residual variance in the top-k PCA subspace.
        n_settled: rows of the first fit the engine called settled.
        n_stable: stable across the restarts on document halves; n_undetermined: too few restarts could tell.
        n_above_floor: source kurtosis above the control's largest (Holm-corrected test).
        n_reproducible: settled, stable and above the floor (what the default rule maximises).
        control_max_kurtosis: the control's largest source excess kurtosis; control_n_stable.
        design_effect: Kish's design effect of source kurtosis (see ``ICAResult.design_effect``);
        effective_tokens: n / design_effect; k_bound: the largest k the effective-n rule allows at it;
        admissible: k ≤ k_bound (only admissible k can be chosen).
        seconds_fit, seconds_control: wall time of the restarts and of the control.
    """

    k: int
    variance_kept: float
    n_settled: int
    n_stable: int
    n_undetermined: int
    n_above_floor: int
    n_reproducible: int
    control_max_kurtosis: float | None
    control_n_stable: int | None
    design_effect: float
    effective_tokens: float
    k_bound: int
    admissible: bool
    seconds_fit: float
    seconds_control: float


@dataclass(frozen=True)
class ComponentFit:
    """One component at the chosen k (ica.json ``components``, in component order).

    Attributes:
        stability: reappearance frequency: the share of the restarts that can tell (whose matching row
            settled, or where it reappears) in which it reappears at matched |cos| ≥ the threshold;
        stability_status: "stable", "unstable" or "undetermined" (too few restarts could tell);
        restarts_determined, restarts: restarts that could tell, and all restarts;
        matched_cos_median: median matched |cos| over the restarts; stable: status is "stable".
        settled: the engine's row for it stopped moving (False: "unsettled", an arbitrary
            completion of the settled rows, excluded from candidates and similarity means).
        source_excess_kurtosis: over every fitted token; kurtosis_se: its document
            block-bootstrap standard error.
        floor_z: (kurtosis − floor) / SE, for reading; floor_p: the paired percentile-bootstrap p-value;
        above_floor: rejected after Holm's correction.
        artifact: where its strongest activations concentrate (positional flag, token / document labels).
    """

    component: int
    stability: float
    stability_status: str
    restarts_determined: int
    restarts: int
    matched_cos_median: float
    stable: bool
    settled: bool
    source_excess_kurtosis: float
    kurtosis_se: float
    floor_z: float
    floor_p: float
    above_floor: bool
    artifact: ArtifactFlag


@dataclass(frozen=True)
class ICAResult:
    """ica.json (step 04).

    Attributes:
        k, k_rule: components and the rule that chose k.
        k_sweep: what each swept k gave (one point when --n-components fixes k).
        samples_per_parameter, max_supported_k: the rule n ≥ c·k² bounding the sweep.
        n_tokens, n_fit_tokens: tokens with sources, tokens FastICA saw.
        k_skipped: swept k not fitted because the effective sample size at the k before could not support them.
        resampling_unit, n_units: what restarts and the bootstrap draw ("document", "window" or "row").
        algorithm, backend: the estimator.
        seeds: how each fit ended (the all-rows fit, then the restarts);
        stability_splits, restart_resample: document splits (both halves refitted) and the share each
        restart fits; stable_frequency: the reappearance a stable component needs.
        all_converged, all_settled_converged: over seeds.
        max_iter, tol: the settings.
        stable_threshold, n_stable, n_undetermined, n_settled, n_above_floor, n_reproducible: counts at
            the chosen k.
        pca_variance_kept: share of residual variance in the whitened subspace;
        reconstruction_variance_explained: the same measured through the unmixing (must agree).
        component_order: how components are ordered and signed.
        control: FastICA on the matched null (None when switched off); control_null: that null in words.
        noise_floor: how the floor test is made (the null, in words); floor, floor_interval: the control's
            largest |kurtosis| and its 95% bootstrap range; floor_draws: bootstrap draws of the test.
        design_effect, effective_tokens: Kish's design effect of source kurtosis and n / it;
        k_bound: the largest k the effective-n rule allows at the chosen k.
        components: per component, in component order.
    """

    k: int
    k_rule: str
    k_sweep: list[KSweepPoint]
    k_skipped: list[int]
    samples_per_parameter: float
    max_supported_k: int
    n_tokens: int
    n_fit_tokens: int
    resampling_unit: str
    n_units: int
    algorithm: str
    backend: str
    seeds: list[SeedFit]
    stability_splits: int
    restart_resample: float
    stable_frequency: float
    all_converged: bool
    all_settled_converged: bool
    max_iter: int
    tol: float
    stable_threshold: float
    n_stable: int
    n_undetermined: int
    n_settled: int
    n_above_floor: int
    n_reproducible: int
    pca_variance_kept: float
    reconstruction_variance_explained: float
    reconstruction_matches_pca: bool
    component_order: str
    control: ControlSummary | None
    control_null: str | None
    noise_floor: str
    floor: float
    floor_interval: list[float]
    floor_draws: int
    design_effect: float
    effective_tokens: float
    k_bound: int
    components: list[ComponentFit]

    def is_stable(self, component: int) -> bool:
        return self.components[component].stable

    @property
    def stability(self) -> list[float]:
        """Reappearance frequency of every component."""
        return [c.stability for c in self.components]

    @property
    def source_excess_kurtosis(self) -> list[float]:
        return [c.source_excess_kurtosis for c in self.components]


@dataclass(frozen=True)
class ComponentMatch:
    """One ICA component's nearest SAE decoder rows."""

    component: int
    max_abs_cos: float
    best_feature: int
    top_features: list[int]
    top_cos: list[float]
    neuronpedia: str | None
    max_abs_cos_projected: float
    best_feature_projected: int
    best_feature_share_in_subspace: float
    candidate: bool
    not_candidate_because: list[str]


@dataclass(frozen=True)
class SimilarityResult:
    """similarity.json (step 05): every direction set against the SAE decoder, and the candidates.

    Attributes:
        k, d_sae: directions per set, decoder rows.
        thresholds: (low, high) |cos| cuts.
        sets: {set name: MatchSummary} against the raw decoder rows, ICA first, then every
            registered baseline (one draw each); the ICA summary counts settled components only.
        sets_projected: the same against decoder rows projected into the whitened subspace.
        descriptions: {baseline name: what it is}.
        n_unsettled_excluded: ICA components left out of the ICA summaries (never settled).
        null_draws: rotations pooled in the matched null's distribution.
        against_null, against_null_projected: settled ICA components against that distribution.
        novelty_cuts: max |cos| (raw, projected) below which a component is far from the SAE.
        decoder_share_in_subspace: share of each (non-zero) decoder row's norm inside the subspace.
        candidate_rule: the rule (:mod:`darkmatter.analysis.candidates`); candidates: its components.
        components: per ICA component.
    """

    k: int
    d_sae: int
    thresholds: list[float]
    sets: dict[str, MatchSummary]
    sets_projected: dict[str, MatchSummary]
    descriptions: dict[str, str]
    n_unsettled_excluded: int
    null_draws: int
    against_null: AgainstNull
    against_null_projected: AgainstNull
    novelty_cuts: list[float]
    decoder_share_in_subspace: Summary
    candidate_rule: str
    candidates: list[int]
    components: list[ComponentMatch]

"""Typed results of step 06: the causal tests (causal.json) and the feature bank
(feature_bank.json), one entry per ICA component holding everything the tool knows of it
(re-exported by :mod:`darkmatter.pipeline.results`, which registers their files)."""

from __future__ import annotations

from dataclasses import dataclass

from darkmatter.analysis.causal import CausalTable, ComponentEffect
from darkmatter.analysis.groundtruth import ComponentTruth


@dataclass(frozen=True)
class Example:
    """One analysed row shown for a component: where it is, what it says, the source's value.

    Attributes:
        token, context: the row's token and its context with the token marked ``[[like this]]``.
        activation: the component's source value there (unit variance).
        window, position, row: where it sits; unit: its document (or window) id.
        quantile: for quantile samples, the quantile it stands for.
        tokens, values: the context token by token and the source's value at each (None where a
            token is not an analysed row: BOS, a massive activation); at: the marked token's index.
    """

    token: str
    context: str
    activation: float
    window: int | None = None
    position: int | None = None
    row: int | None = None
    quantile: float | None = None
    unit: int | None = None
    tokens: list[str] | None = None
    values: list[float | None] | None = None
    at: int | None = None


@dataclass(frozen=True)
class NearestFeature:
    """An SAE decoder row near a component (signed cos), with its Neuronpedia id on GPT-2."""

    feature: int
    cos: float
    neuronpedia: str | None = None


@dataclass(frozen=True)
class LogitLens:
    """Tokens a direction promotes and suppresses through the unembedding: (token, logit)."""

    top: list[tuple[str, float]]
    bottom: list[tuple[str, float]]


@dataclass(frozen=True)
class Histogram:
    """A source's histogram over every analysed token: ``counts[i]`` in [edges[i], edges[i+1])."""

    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class CausalResult:
    """causal.json (step 06): the causal tests (:mod:`darkmatter.analysis.causal`).

    Attributes:
        table: every figure.
        held_out: which data they ran on, in words; route: how the layers after the hook ran.
        seconds: wall time.
    """

    table: CausalTable
    held_out: str
    route: str
    seconds: float


@dataclass(frozen=True)
class BankEntry:
    """One component: its statistics, verdicts, examples, readings and causal figures.

    Attributes:
        source_excess_kurtosis, kurtosis_se, stability (reappearance frequency), stability_status, stable, settled,
            above_floor: from ica.json.
        artifact: where its strongest activations concentrate: "first positions" (a positional artifact,
            excluded), "one token", "one document" (labels); "" when nowhere.
        max_abs_cos, max_abs_cos_projected: to the SAE decoder rows (raw, projected); novelty = 1 − max_abs_cos.
        candidate, not_candidate_because: the candidate rule's verdict (similarity.json).
        rate_above, rate_below: share of tokens whose source is above +2 / below −2 (a Gaussian: 2.3% each).
        histogram: of the source over every analysed token.
        top, bottom: extreme examples, at most one per document; quantiles: one per quantile.
        token_histogram: tokens among the top activations, with counts.
        logit_lens: tokens its direction promotes/suppresses through W_U (None without one).
        nearest_sae_features: decoder rows nearest its direction; nearest_true_feature: planted runs.
        linear_share, lives_in: the linear/nonlinear split (linear_split.json).
        causal: its causal figures (None where the tests did not run).
    """

    component: int
    source_excess_kurtosis: float
    kurtosis_se: float
    stability: float
    stability_status: str
    stable: bool
    settled: bool
    above_floor: bool
    artifact: str
    max_abs_cos: float
    max_abs_cos_projected: float
    novelty: float
    candidate: bool
    not_candidate_because: list[str]
    rate_above: float
    rate_below: float
    histogram: Histogram
    top: list[Example]
    bottom: list[Example]
    quantiles: list[Example]
    token_histogram: list[tuple[str, int]]
    logit_lens: LogitLens | None
    nearest_sae_features: list[NearestFeature]
    nearest_true_feature: ComponentTruth | None
    linear_share: float | None
    lives_in: str | None
    causal: ComponentEffect | None


@dataclass(frozen=True)
class FeatureBank:
    """feature_bank.json (step 06): one entry per ICA component, the one source of truth for what
    each component is (the dashboard, components.md and the notebook read it).

    Attributes:
        k: components; n_tokens: analysed tokens the statistics run over.
        description, hook_name: the model and hook.
        note: what the source could not show (None when nothing is missing).
        neuronpedia: the SAE's Neuronpedia id prefix (GPT-2 preset), or None.
        loss_name, divergence_name: of the causal figures (None without them).
        components: in component order.
    """

    k: int
    n_tokens: int
    description: str
    hook_name: str
    note: str | None
    neuronpedia: str | None
    loss_name: str | None
    divergence_name: str | None
    components: list[BankEntry]

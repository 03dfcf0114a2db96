"""Step 07's comparison: heavy tails and sparsity of ICA sources against SAE feature activations.

SAE features are sparse by construction (most tokens 0), so their excess kurtosis over all tokens
is dominated by the zeros: a feature firing on a share p of tokens with a constant value has excess
kurtosis (1 − 6p(1 − p)) / (p(1 − p)) − 0 ≈ 1/p, whatever its values look like. Comparing that with
the excess kurtosis of dense ICA sources mostly restates firing rates, so the like-for-like figure
is the SAE features' excess kurtosis *conditional on activity* (over the tokens where they fire),
beside the zeros-only prediction from the firing rate. Both are summarised from streamed moments:
the sources' from :func:`darkmatter.analysis.stats.streaming_moments`, the features' from the
per-feature power sums step 02 kept (the ``[n_tokens, d_sae]`` matrix never exists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkmatter.analysis.stats import (
    GAUSS_TAIL_3SD,
    Moments,
    Summary,
    central_from_raw,
    kurtosis_standard_error,
    max_offdiag_correlation,
)

#: SAE features firing on fewer tokens than this share are left out of the kurtosis comparison.
ALIVE_FREQUENCY = 1e-3


@dataclass(frozen=True)
class SourceKurtosis:
    """Excess kurtosis of the ICA sources over all tokens."""

    summary: Summary
    per_component: list[float]
    n_above_5_se: int


@dataclass(frozen=True)
class FeatureKurtosis:
    """Excess kurtosis of SAE feature activations (features firing on ≥ ``min_firing_frequency``).

    Attributes:
        summary: over all tokens, zeros included.
        summary_active: conditional on activity (over the tokens where each feature fires): the
            figure comparable with dense ICA sources.
        summary_zeros_only: what the firing rate alone predicts, (1 − 6pq)/(pq) with q = 1 − p.
    """

    summary: Summary | None
    n_features_counted: int
    min_firing_frequency: float
    summary_active: Summary | None = None
    summary_zeros_only: Summary | None = None


def bernoulli_excess_kurtosis(p: np.ndarray) -> np.ndarray:
    """float[m]: excess kurtosis of a variable that is a constant ≠ 0 with probability p, else 0."""
    pq = np.asarray(p, dtype=np.float64) * (1 - np.asarray(p, dtype=np.float64))
    return (1 - 6 * pq) / np.maximum(pq, 1e-300)


@dataclass(frozen=True)
class TailShare:
    """Share of tokens with |s − mean| > 3 sd, per ICA source; ``gaussian`` is N(0, 1)'s."""

    summary: Summary
    gaussian: float


@dataclass(frozen=True)
class Firing:
    """Firing frequency of alive SAE features, and the SAE's mean L0."""

    summary: Summary | None
    mean_l0: float


@dataclass(frozen=True)
class ControlComparison:
    """The real sources against the matched control (the floor test's counts come from ica.json)."""

    source_excess_kurtosis_max_abs: float
    n_stable: int
    n_ica_components_above_floor: int
    n_ica_stable: int
    what: str
    control_source_excess_kurtosis: list[float]


@dataclass(frozen=True)
class TailComparison:
    """statistics.json."""

    n_tokens: int
    k: int
    kurtosis_standard_error: float
    ica_excess_kurtosis: SourceKurtosis
    sae_excess_kurtosis: FeatureKurtosis
    ica_tail_fraction_3sd: TailShare
    sae_firing_frequency: Firing
    ica_max_abs_offdiag_correlation: float
    control: ControlComparison | None


@dataclass(frozen=True)
class FeatureTails:
    """Per-feature numbers the plot needs: excess kurtosis and firing frequency of alive features."""

    excess_kurtosis: np.ndarray
    frequency: np.ndarray
    excess_kurtosis_active: np.ndarray


def compare_tails(m_ica: Moments, tail: np.ndarray, feature_moments: np.ndarray, n_stable: int,
                  control_floor: float | None, control_n_stable: int | None, n_above_floor: int = 0,
                  control_kurtosis: list[float] | None = None) -> tuple[TailComparison, FeatureTails]:
    """Compare ICA sources with SAE features.

    Args:
        m_ica: moments (with covariance) of the sources, float[n, k].
        tail: float[k] share of tokens beyond 3 sd per source (:func:`~darkmatter.analysis.stats.tail_fraction`).
        feature_moments: float64[5, d_sae]: firing count, Σf, Σf², Σf³, Σf⁴ per SAE feature.
        n_stable: stable ICA components.
        control_floor, control_n_stable: the matched control's largest |source excess kurtosis| and
            stable count (None without a control).
        n_above_floor: components passing step 04's noise-floor test; control_kurtosis: the
            control's whole source excess kurtosis distribution.
    Raises:
        ValueError: the sources' moments were taken without covariance.
    """
    if m_ica.cov is None:
        raise ValueError("compare_tails needs the covariance of the sources (with_cov=True)")
    n, k = m_ica.n, len(m_ica.mean)
    fm = feature_moments
    freq = fm[0] / n
    alive = freq >= ALIVE_FREQUENCY
    _, _, _, sae_kurt = central_from_raw(n, fm[1], fm[2], fm[3], fm[4])
    _, _, _, active_kurt = central_from_raw(np.maximum(fm[0], 1), fm[1], fm[2], fm[3], fm[4])
    se = kurtosis_standard_error(n)
    ica_k = m_ica.excess_kurtosis
    control = None
    if control_floor is not None and control_n_stable is not None:
        control = ControlComparison(
            source_excess_kurtosis_max_abs=control_floor, n_stable=control_n_stable,
            n_ica_components_above_floor=n_above_floor, n_ica_stable=n_stable,
            what="FastICA with the same tokens, k, seeds, restarts and optimisation on a whitened Gaussian surrogate",
            control_source_excess_kurtosis=list(control_kurtosis or []))
    result = TailComparison(
        n_tokens=n, k=k, kurtosis_standard_error=se,
        ica_excess_kurtosis=SourceKurtosis(summary=Summary.of(ica_k), per_component=ica_k.tolist(),
                                           n_above_5_se=int((ica_k > 5 * se).sum())),
        sae_excess_kurtosis=FeatureKurtosis(summary=Summary.of(sae_kurt[alive]) if alive.any() else None,
                                            n_features_counted=int(alive.sum()),
                                            min_firing_frequency=ALIVE_FREQUENCY,
                                            summary_active=Summary.of(active_kurt[alive]) if alive.any() else None,
                                            summary_zeros_only=(Summary.of(bernoulli_excess_kurtosis(freq[alive]))
                                                                if alive.any() else None)),
        ica_tail_fraction_3sd=TailShare(summary=Summary.of(tail), gaussian=GAUSS_TAIL_3SD),
        sae_firing_frequency=Firing(summary=Summary.of(freq[alive]) if alive.any() else None,
                                    mean_l0=float(fm[0].sum() / n)),
        ica_max_abs_offdiag_correlation=max_offdiag_correlation(m_ica.cov, np.sqrt(m_ica.var)),
        control=control)
    return result, FeatureTails(excess_kurtosis=sae_kurt[alive], frequency=freq[alive],
                                excess_kurtosis_active=active_kurt[alive])

"""Step 03's question: is the SAE residual Gaussian noise, or does it carry heavy tails?

:func:`diagnose` turns streamed moments of the activations, the residual and a Gaussian
surrogate of the residual (same mean, covariance and token count) into the numbers of
``diagnostics.json`` and the decision-point verdict of the research plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kurtosis

from darkmatter.analysis.stats import (
    PCA,
    GaussianityTest,
    Moments,
    Summary,
    gaussianity_test,
    kurtosis_standard_error,
    pca_from_cov,
)

#: Leading residual principal components whose excess kurtosis is measured on the test sample.
TOP_PCS = 100
#: Variance fractions for which the number of principal components is reported.
VARIANCE_MARKS = (0.9, 0.95, 0.99)


@dataclass(frozen=True)
class SurrogateFloor:
    """Per-dimension excess kurtosis of N(residual mean, residual covariance) at the same n.

    Attributes:
        summary: of the surrogate's per-dimension excess kurtosis.
        max_abs: its largest |excess kurtosis|: the sampling noise floor.
        n_residual_dims_above_max_abs: residual dimensions whose excess kurtosis exceeds it.
        what: the null, in words.
    """

    summary: Summary
    max_abs: float
    n_residual_dims_above_max_abs: int
    what: str


@dataclass(frozen=True)
class TopPCKurtosis:
    """Excess kurtosis of the residual's projections on its leading principal components."""

    summary: Summary
    n_components: int
    n_sample: int


@dataclass(frozen=True)
class ResidualDiagnostics:
    """diagnostics.json.

    Attributes:
        n_tokens, d_model: the residual's shape.
        fvu: Σ‖r‖² / (n · total activation variance) (fraction of variance unexplained).
        residual_variance_fraction: residual variance / activation variance (about its mean).
        kurtosis_standard_error: √(24/n), the iid Gaussian standard error of excess kurtosis.
        design_effect: Kish's design effect of per-dimension excess kurtosis (document-block over
            token bootstrap variance, median over dimensions; 1 when not measured).
        effective_tokens: n / design_effect.
        kurtosis_standard_error_effective: √(24 · design_effect / n), the band the plots draw.
        residual_excess_kurtosis, activation_excess_kurtosis: per-dimension summaries.
        gaussian_surrogate: the noise floor (see :class:`SurrogateFloor`).
        residual_top_pc_excess_kurtosis: on a random sample of tokens.
        gaussianity_residual, gaussianity_activations: D'Agostino-Pearson on that sample (a
            footnote: at this n it rejects any visible departure; the effect sizes carry the evidence).
        pca_components_for: {"90%": n, "95%": n, "99%": n} residual components for that variance.
        residual_explained_ratio_first_10: cumulative variance share of the first 10 components.
        residual_is_non_gaussian: median excess kurtosis above max(0.5, 5 effective standard errors).
        verdict: the decision-point sentence.
    """

    n_tokens: int
    d_model: int
    fvu: float
    residual_variance_fraction: float
    kurtosis_standard_error: float
    design_effect: float
    effective_tokens: float
    kurtosis_standard_error_effective: float
    residual_excess_kurtosis: Summary
    activation_excess_kurtosis: Summary
    gaussian_surrogate: SurrogateFloor
    residual_top_pc_excess_kurtosis: TopPCKurtosis
    gaussianity_residual: GaussianityTest
    gaussianity_activations: GaussianityTest
    pca_components_for: dict[str, int]
    residual_explained_ratio_first_10: list[float]
    residual_is_non_gaussian: bool
    verdict: str


def diagnose(m_act: Moments, m_res: Moments, m_surrogate: Moments, resid_sample: np.ndarray,
             act_sample: np.ndarray, design_effect: float = 1.0) -> tuple[ResidualDiagnostics, PCA, PCA]:
    """Diagnostics of an SAE residual.

    Args:
        m_act, m_res: streamed moments (with covariance) of activations and residual, float[n, d_model].
        m_surrogate: moments of a Gaussian surrogate of the residual (same mean, covariance, n).
        resid_sample, act_sample: float64[m, d_model] the same random token rows of each (m ≤ n).
        design_effect: Kish's design effect of the residual's per-dimension kurtosis
            (:func:`darkmatter.analysis.resampling.design_effect`); widens the Gaussian band.
    Returns:
        (diagnostics, PCA of the residual, PCA of the activations).
    Raises:
        ValueError: the moments of the activations or residual were taken without covariance.
    """
    if m_act.cov is None or m_res.cov is None:
        raise ValueError("diagnose needs the covariance of activations and residual (with_cov=True)")
    n = m_res.n
    fvu = m_res.sum_sq / (n * m_act.total_variance)
    se = kurtosis_standard_error(n)
    se_eff = se * float(np.sqrt(max(design_effect, 1.0)))
    pca_res, pca_act = pca_from_cov(m_res.cov), pca_from_cov(m_act.cov)
    marks = {f: pca_res.n_for(f) for f in VARIANCE_MARKS}
    top = min(TOP_PCS, pca_res.components.shape[0])
    pc_kurt = kurtosis((resid_sample - m_res.mean) @ pca_res.components[:top].T, axis=0)
    kurt = m_res.excess_kurtosis
    floor = float(np.abs(m_surrogate.excess_kurtosis).max())
    non_gaussian = bool(np.median(kurt) > max(0.5, 5 * se_eff))
    n_above = int((kurt > floor).sum())
    diag = ResidualDiagnostics(
        n_tokens=n, d_model=len(m_res.mean), fvu=float(fvu),
        residual_variance_fraction=m_res.total_variance / m_act.total_variance,
        kurtosis_standard_error=se, design_effect=float(design_effect), effective_tokens=n / max(design_effect, 1e-12),
        kurtosis_standard_error_effective=se_eff,
        residual_excess_kurtosis=Summary.of(kurt), activation_excess_kurtosis=Summary.of(m_act.excess_kurtosis),
        gaussian_surrogate=SurrogateFloor(
            summary=Summary.of(m_surrogate.excess_kurtosis), max_abs=floor, n_residual_dims_above_max_abs=n_above,
            what="per-dimension excess kurtosis of N(residual mean, residual covariance) at the same "
                 "number of tokens: the sampling noise floor"),
        residual_top_pc_excess_kurtosis=TopPCKurtosis(summary=Summary.of(pc_kurt), n_components=top,
                                                      n_sample=len(resid_sample)),
        gaussianity_residual=gaussianity_test(resid_sample), gaussianity_activations=gaussianity_test(act_sample),
        pca_components_for={f"{int(f * 100)}%": v for f, v in marks.items()},
        residual_explained_ratio_first_10=pca_res.explained_ratio[:10].tolist(),
        residual_is_non_gaussian=non_gaussian,
        verdict=verdict(kurt, se_eff, floor, non_gaussian, n, marks, pca_res.components.shape[0]))
    return diag, pca_res, pca_act


def verdict(kurt: np.ndarray, se: float, floor: float, non_gaussian: bool, n: int,
            marks: dict[float, int], d: int) -> str:
    """The decision-point sentence of step 03 (``ica_dark_matter_plan.md``, decision point 1).

    Args:
        kurt: float[d] per-dimension excess kurtosis of the residual.
        se: √(24 · design effect / n); floor: the surrogate's largest |excess kurtosis|;
        marks: {fraction: components}.
    """
    return (
        f"residual median excess kurtosis {np.median(kurt):.2f} (mean {kurt.mean():.2f}; Gaussian 0 ± {se:.3f}, one "
        "standard error at the effective sample size): "
        + ("the residual is heavy-tailed, not Gaussian noise; ICA can look for structure in it."
           if non_gaussian else
           "the residual is close to Gaussian per dimension; ICA may still find non-Gaussian "
           "directions, but expect few.")
        + f" {int((kurt > floor).sum())} of {len(kurt)} dimensions exceed the largest |excess kurtosis| "
        f"({floor:.3f}) of a Gaussian surrogate with the same covariance and {n:,} tokens."
        + " PCA: " + " / ".join(str(v) for v in marks.values()) + f" of {d} components hold "
        + "/".join(f"{int(f * 100)}" for f in marks) + "% of residual variance.")

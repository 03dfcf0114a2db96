"""The one dark-matter candidate rule, and the noise-floor test it uses.

A component is a **dark-matter candidate** when all of these hold:

1. **settled**: the FastICA engine's row for it stopped moving (an unsettled row is an arbitrary
   completion of the settled ones, not an estimate);
2. **stable**: its mixing direction reappears (matched |cos| ≥ the stability threshold) in every
   restart, and the restarts fit disjoint halves of the documents;
3. **above the noise floor**: its source's excess kurtosis (over every fitted row) exceeds the
   largest excess kurtosis FastICA extracted from the matched Gaussian control (same n, k,
   seeds, restarts and optimisation), one-sided, with the component's standard error from a
   block bootstrap over documents, after Holm's step-down correction over the k components at
   family-wise :data:`ALPHA` (:func:`noise_floor_test`);
4. **novel**: its max |cos| to the SAE's decoder rows is below the novelty cut both for the raw rows
   and for the rows projected into the whitened subspace the component lives in. The cut is
   ``LOW`` (0.3), or the matched null's 99th percentile where chance alone lies above 0.3 (a
   small d_model with many decoder rows): a component no closer to the SAE than random
   directions in its subspace are (:func:`novelty_cut`);
5. **not an artifact**: its top activations do not concentrate on the first positions of a
   window, on one document or on one token id (:mod:`darkmatter.analysis.artifacts`).

Step 05 applies the rule (:func:`classify`); the headline, report, results JSON and plots read
its verdicts and never re-derive them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

#: Family-wise error rate of the noise-floor test over the k components.
ALPHA = 0.01
RULE = ("settled, stable across document halves, source excess kurtosis above the Gaussian control's "
        f"largest (one-sided z with a document block-bootstrap SE, Holm over k at α = {ALPHA}), max |cos| to "
        "the SAE decoder below {low} raw and below {low_projected} projected into the whitened subspace (0.3, or "
        "the matched null's 99th percentile where chance lies above 0.3), and not an artifact")


def novelty_cut(low: float, null_p99: float) -> float:
    """The max |cos| below which a component counts as far from the SAE: ``low``, raised to the
    matched null's 99th percentile where random directions in the same subspace already lie
    above ``low``."""
    return float(max(low, null_p99))


def holm(p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Holm's step-down procedure (Holm 1979): bool[m], which null hypotheses are rejected at
    family-wise error rate ``alpha``.

    Args:
        p: float[m] p-values.
    """
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    reject = np.zeros(m, dtype=bool)
    for rank, i in enumerate(order):
        if p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


@dataclass(frozen=True)
class FloorTest:
    """Each component's excess kurtosis against the noise floor.

    Attributes:
        floor: the Gaussian control's largest source excess kurtosis.
        z: float[k], (kurtosis − floor) / block-bootstrap SE.
        p: float[k], one-sided p-values, 1 − Φ(z).
        above: bool[k], rejected by Holm at ``alpha``.
        alpha: the family-wise error rate.
    """

    floor: float
    z: np.ndarray
    p: np.ndarray
    above: np.ndarray
    alpha: float


def noise_floor_test(kurtosis: np.ndarray, se: np.ndarray, floor: float, alpha: float = ALPHA) -> FloorTest:
    """Is each source's excess kurtosis above what FastICA extracts from matched Gaussian noise?

    The control's maximum carries the optimisation's bias (FastICA picks the most non-Gaussian
    directions of finite noise); the block-bootstrap SE carries this component's sampling error
    with the within-document dependence kept.

    Args:
        kurtosis: float[k] source excess kurtosis; se: float[k] its standard error (> 0).
        floor: the control's largest source excess kurtosis.
    Returns:
        FloorTest.
    Raises:
        ValueError: shapes differ.
    """
    kurtosis, se = np.asarray(kurtosis, dtype=np.float64), np.asarray(se, dtype=np.float64)
    if kurtosis.shape != se.shape:
        raise ValueError(f"kurtosis {kurtosis.shape} and standard errors {se.shape} differ")
    z = (kurtosis - floor) / np.maximum(se, 1e-12)
    p = norm.sf(z)
    return FloorTest(floor=float(floor), z=z, p=p, above=holm(p, alpha), alpha=alpha)


#: Why a component is not a candidate, in the order the rule checks them.
REASONS = ("unsettled", "unstable", "below noise floor", "near SAE (raw)", "near SAE (projected)", "artifact")


def classify(settled: np.ndarray, stable: np.ndarray, above_floor: np.ndarray, max_cos: np.ndarray,
             max_cos_projected: np.ndarray, artifact: np.ndarray, low: float,
             low_projected: float | None = None) -> list[list[str]]:
    """Apply the candidate rule to k components.

    Args:
        settled, stable, above_floor, artifact: bool[k].
        max_cos, max_cos_projected: float[k] max |cos| to the raw and the projected decoder rows.
        low, low_projected: the novelty cuts (:func:`novelty_cut`) for the raw and the projected
            rows (``low_projected`` defaults to ``low``).
    Returns:
        per component, the reasons (from :data:`REASONS`) it is not a candidate; an empty list
        marks a candidate.
    """
    low_p = low if low_projected is None else low_projected
    checks = (~np.asarray(settled, bool), ~np.asarray(stable, bool), ~np.asarray(above_floor, bool),
              np.asarray(max_cos) >= low, np.asarray(max_cos_projected) >= low_p, np.asarray(artifact, bool))
    return [[r for r, fails in zip(REASONS, col) if fails] for col in zip(*checks)]

"""The one dark-matter candidate rule, and the noise-floor test it uses.

A component is a **dark-matter candidate** when all of these hold:

1. **settled**: the FastICA engine's row for it stopped moving (an unsettled row is an arbitrary
   completion of the settled ones, not an estimate);
2. **stable**: its mixing direction reappears (matched |cos| ≥ the stability threshold) in at
   least 90% of the restarts that can tell, where the restarts fit both halves of several random
   splits of the documents (:func:`darkmatter.analysis.decompose.reappearance`); a component
   that too few restarts can tell about (their matching rows never settled) is *undetermined*;
3. **above the noise floor**: its source's excess kurtosis (over every fitted row) exceeds the
   largest |excess kurtosis| FastICA extracts from the matched null (a norm-matched elliptical
   surrogate: same tokens, norms, documents, k, seeds, restarts and optimisation), by a paired
   percentile bootstrap over documents, after Holm's step-down correction over the k components at
   family-wise :data:`ALPHA` (:func:`noise_floor_test`);
4. **novel**: its max |cos| to the SAE's decoder rows is below the novelty cut both for the raw rows
   and for the rows projected into the whitened subspace the component lives in. The cut is
   ``LOW`` (0.3), or the matched null's 99th percentile where chance alone lies above 0.3 (a
   small d_model with many decoder rows): a component no closer to the SAE than random
   directions in its subspace are (:func:`novelty_cut`);
5. **not positional**: its top activations do not concentrate on the first positions of a window
   (:mod:`darkmatter.analysis.artifacts`). Concentration on one token or one document is a
   *label* shown beside the component, not an exclusion: token-level directions are exactly what
   dark matter linear in x can hold (Engels et al. 2024).

Step 05 applies the rule (:func:`classify`); the headline, report, results JSON and plots read
its verdicts and never re-derive them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from darkmatter.analysis.resampling import UnitSums, paired_bootstrap

#: Family-wise error rate of the noise-floor test over the k components.
ALPHA = 0.01
RULE = ("settled, stable (reappears in ≥ 90% of the restarts on document halves that can tell), source excess "
        "kurtosis above the matched null's largest (norm-matched elliptical surrogate; paired percentile bootstrap "
        f"over documents, Holm over k at α = {ALPHA}), max |cos| to the SAE decoder below {{low}} raw and below "
        "{low_projected} projected into the whitened subspace (0.3, or the matched null's 99th percentile where "
        "chance lies above 0.3), and not a positional artifact (token and document concentration are labels)")


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


#: Fewest bootstrap draws of the floor test (more where Holm over k needs smaller p-values).
MIN_FLOOR_DRAWS = 2000


def floor_draws(k: int, alpha: float = ALPHA) -> int:
    """Bootstrap draws the floor test makes at k components: enough that the smallest attainable
    p-value, 1 / (B + 1), is half Holm's first threshold α / k."""
    return max(MIN_FLOOR_DRAWS, int(np.ceil(2 * k / alpha)))


@dataclass(frozen=True)
class FloorTest:
    """Each component's excess kurtosis against the noise floor.

    Attributes:
        floor: the control's largest |source excess kurtosis| (0 without a control: a Gaussian's).
        floor_interval: the 2.5th and 97.5th percentiles of the floor over the bootstrap draws.
        se: float[k] bootstrap standard error of each component's excess kurtosis.
        z: float[k], (kurtosis − floor) / se (for reading; the test uses ``p``).
        p: float[k], one-sided percentile-bootstrap p-values (see :func:`noise_floor_test`).
        above: bool[k], rejected by Holm at ``alpha``.
        alpha: the family-wise error rate; n_boot: the bootstrap draws.
    """

    floor: float
    floor_interval: list[float]
    se: np.ndarray
    z: np.ndarray
    p: np.ndarray
    above: np.ndarray
    alpha: float
    n_boot: int


def noise_floor_test(real: UnitSums, control: UnitSums | None, seed: int, alpha: float = ALPHA,
                     n_boot: int | None = None) -> FloorTest:
    """Is each source's excess kurtosis above what FastICA extracts from the matched null?

    A paired percentile bootstrap over documents (Efron & Tibshirani 1993, ch. 13 and 16): each draw
    resamples the same documents for the real sources and for the control's, and compares every
    real component's kurtosis with the control's largest |kurtosis| *in that draw*. The p-value of
    component c is (1 + #{draws where its kurtosis ≤ the floor}) / (B + 1); Holm's step-down
    procedure over the k components controls the family-wise error at ``alpha``. The percentile
    test needs no normal approximation, which under-covers here: kurtosis of heavy-tailed,
    document-clustered data has a skewed sampling distribution.

    Args:
        real: per-unit power sums of the k real sources; control: of the control's sources on the same
            units (None: the floor is 0, a Gaussian's excess kurtosis).
        seed: the draws' seed; n_boot: draws (default :func:`floor_draws`).
    Returns:
        FloorTest.
    Raises:
        ValueError: the sums cover different units.
    """
    k = real.sums.shape[2]
    n_boot = n_boot or floor_draws(k, alpha)
    kurt = real.excess_kurtosis()
    floor = float(np.abs(control.excess_kurtosis()).max()) if control is not None else 0.0
    below = np.zeros(k)
    total, total2 = np.zeros(k), np.zeros(k)
    floors = []
    sets = [real] if control is None else [real, control]
    for draws in paired_bootstrap(sets, n_boot, seed):
        kr = draws[0]
        fl = np.abs(draws[1]).max(1) if control is not None else np.zeros(len(kr))
        below += (kr <= fl[:, None]).sum(0)
        total += kr.sum(0)
        total2 += (kr ** 2).sum(0)
        floors.append(fl)
    mean = total / n_boot
    se = np.sqrt(np.maximum(total2 / n_boot - mean ** 2, 0.0) * n_boot / max(n_boot - 1, 1))
    p = (1 + below) / (n_boot + 1)
    fl_all = np.concatenate(floors)
    interval = [float(np.percentile(fl_all, 2.5)), float(np.percentile(fl_all, 97.5))]
    return FloorTest(floor=floor, floor_interval=interval, se=se, z=(kurt - floor) / np.maximum(se, 1e-12), p=p,
                     above=holm(p, alpha), alpha=alpha, n_boot=n_boot)


#: Why a component is not a candidate, in the order the rule checks them.
REASONS = ("unsettled", "unstable", "stability undetermined", "below noise floor", "near SAE (raw)",
           "near SAE (projected)", "positional artifact")


def classify(settled: np.ndarray, stable: np.ndarray, above_floor: np.ndarray, max_cos: np.ndarray,
             max_cos_projected: np.ndarray, artifact: np.ndarray, low: float,
             low_projected: float | None = None, undetermined: np.ndarray | None = None) -> list[list[str]]:
    """Apply the candidate rule to k components.

    Args:
        settled, stable, above_floor: bool[k]; artifact: bool[k] positional artifacts (excluded);
        undetermined: bool[k] stability undetermined (reported instead of "unstable"; default none).
        max_cos, max_cos_projected: float[k] max |cos| to the raw and the projected decoder rows.
        low, low_projected: the novelty cuts (:func:`novelty_cut`) for the raw and the projected
            rows (``low_projected`` defaults to ``low``).
    Returns:
        per component, the reasons (from :data:`REASONS`) it is not a candidate; an empty list
        marks a candidate.
    """
    low_p = low if low_projected is None else low_projected
    und = np.zeros(len(settled), dtype=bool) if undetermined is None else np.asarray(undetermined, bool)
    stable = np.asarray(stable, bool)
    checks = (~np.asarray(settled, bool), ~stable & ~und, und, ~np.asarray(above_floor, bool),
              np.asarray(max_cos) >= low, np.asarray(max_cos_projected) >= low_p, np.asarray(artifact, bool))
    return [[r for r, fails in zip(REASONS, col) if fails] for col in zip(*checks)]

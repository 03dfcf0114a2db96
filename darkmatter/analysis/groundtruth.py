"""Scoring direction sets against a known answer: which planted dark features they recover.

A dark feature counts as *found* by a direction set when some direction has |cos| >
:data:`FOUND_COS` with it; a direction is a *false discovery* when its |cos| to every true
feature is below :data:`FALSE_COS`. Used by step 05 on sources with a ground truth (planted
activations) and by the sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOUND_COS = 0.9  # a dark feature counts as found by a direction with |cos| above this
FALSE_COS = 0.3  # a direction with |cos| below this to every true feature is a false discovery


@dataclass(frozen=True)
class RecoverySummary:
    """Summary of a :class:`Recovery`.

    Attributes:
        mean_max_abs_cos, min_max_abs_cos: over dark features, of their best |cos| to any direction.
        n_found: dark features found (|cos| > :data:`FOUND_COS`).
        n_dark: dark features.
        n_false_discoveries: directions with |cos| < :data:`FALSE_COS` to every true feature.
        n_directions: directions in the set.
    """

    mean_max_abs_cos: float
    min_max_abs_cos: float
    n_found: int
    n_dark: int
    n_false_discoveries: int
    n_directions: int


@dataclass(frozen=True)
class Recovery:
    """How well k unit directions recover a set of dark features.

    Attributes:
        max_abs_cos: float64[n_dark]: for each dark feature, its best |cos| to any direction.
        best_direction: int64[n_dark]: the direction giving it.
        nearest_true_cos: float64[k]: for each direction, its best |cos| to any true feature.
        nearest_true: int64[k]: that feature's id.
    """

    max_abs_cos: np.ndarray
    best_direction: np.ndarray
    nearest_true_cos: np.ndarray
    nearest_true: np.ndarray

    def summary(self) -> RecoverySummary:
        """Mean and min max |cos| over dark features, how many are found, and false discoveries."""
        c = self.max_abs_cos
        return RecoverySummary(
            mean_max_abs_cos=float(c.mean()) if len(c) else float("nan"),
            min_max_abs_cos=float(c.min()) if len(c) else float("nan"),
            n_found=int((c > FOUND_COS).sum()), n_dark=int(len(c)),
            n_false_discoveries=int((self.nearest_true_cos < FALSE_COS).sum()),
            n_directions=int(len(self.nearest_true_cos)))


def score(directions: np.ndarray, true_directions: np.ndarray, dark: np.ndarray) -> Recovery:
    """Score directions against the planted truth.

    Args:
        directions: float[k, d_model] (rows need not be unit: they are normalised).
        true_directions: float[n_features, d_model] unit rows.
        dark: int[n_dark] ids of the features that should be found in the residual.
    Raises:
        ValueError: widths differ.
    """
    if directions.shape[1] != true_directions.shape[1]:
        raise ValueError(f"directions are {directions.shape[1]} wide, true features "
                         f"{true_directions.shape[1]}")
    u = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    sim = np.abs(u @ true_directions.T)  # [k, n_features]
    dark_sim = sim[:, dark]
    return Recovery(max_abs_cos=dark_sim.max(0) if len(u) else np.zeros(len(dark)),
                    best_direction=dark_sim.argmax(0) if len(u) else np.zeros(len(dark), dtype=int),
                    nearest_true_cos=sim.max(1), nearest_true=sim.argmax(1))


def missed_by_decoder(W_dec: np.ndarray, true_directions: np.ndarray, cos: float = FOUND_COS) -> np.ndarray:
    """int64[n]: ids of true features no SAE decoder row matches at |cos| > ``cos``.

    Args:
        W_dec: float[d_sae, d_model] decoder rows.
        true_directions: float[n_features, d_model] unit rows.
    """
    u = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    return np.flatnonzero(np.abs(true_directions @ u.T).max(1) <= cos)


@dataclass(frozen=True)
class DarkFeatureRow:
    """One dark feature: its best |cos| to each direction set, and the ICA component giving it."""

    feature: int
    max_abs_cos: dict[str, float]
    ica_component: int


@dataclass(frozen=True)
class ComponentTruth:
    """One ICA component: its nearest true feature."""

    component: int
    nearest_true_feature: int
    abs_cos: float
    is_dark: bool


@dataclass(frozen=True)
class GroundTruthScores:
    """Every direction set scored against the dark features (groundtruth.json).

    Attributes:
        n_true_features: planted features.
        dark_features: ids of the features that should be found in the residual.
        dark_rule: how they were chosen (withheld from an oracle SAE, or missed by a trained one).
        found_cos, false_discovery_cos: the thresholds.
        k: directions per set.
        sets: {set name: RecoverySummary}, ICA first.
        n_stable: stable ICA components; n_stable_false_discoveries: false discoveries among them.
        sae_decoder_matches: true features some decoder row matches at |cos| > found_cos.
        d_sae: decoder rows.
        per_dark_feature, per_component: the detail.
    """

    n_true_features: int
    dark_features: list[int]
    dark_rule: str
    found_cos: float
    false_discovery_cos: float
    k: int
    sets: dict[str, RecoverySummary]
    n_stable: int
    n_stable_false_discoveries: int
    sae_decoder_matches: int
    d_sae: int
    per_dark_feature: list[DarkFeatureRow]
    per_component: list[ComponentTruth]


def score_sets(sets: dict[str, np.ndarray], truth: np.ndarray, dark: np.ndarray, rule: str,
               stable: np.ndarray, W_dec: np.ndarray, ica_name: str) -> tuple[GroundTruthScores, dict[str, Recovery]]:
    """Score every direction set against the dark features.

    Args:
        sets: {name: float[k, d_model]} (see :func:`darkmatter.analysis.directions.direction_sets`).
        truth: float64[n_features, d_model] unit true directions.
        dark: int64[n_dark] dark feature ids.
        rule: how ``dark`` was chosen, for the record.
        stable: bool[k], which ICA components are stable across restarts.
        W_dec: float[d_sae, d_model] SAE decoder rows.
        ica_name: key of the ICA set in ``sets``.
    Returns:
        (the record, {name: Recovery} for plots).
    """
    scores = {name: score(d, truth, dark) for name, d in sets.items()}
    ica = scores[ica_name]
    dark_set = set(dark.tolist())
    decoder = score(W_dec, truth, np.arange(len(truth)))
    record = GroundTruthScores(
        n_true_features=len(truth), dark_features=[int(f) for f in dark], dark_rule=rule,
        found_cos=FOUND_COS, false_discovery_cos=FALSE_COS, k=len(sets[ica_name]),
        sets={name: sc.summary() for name, sc in scores.items()},
        n_stable=int(stable.sum()),
        n_stable_false_discoveries=int((ica.nearest_true_cos[stable] < FALSE_COS).sum()),
        sae_decoder_matches=int((decoder.max_abs_cos > FOUND_COS).sum()), d_sae=int(W_dec.shape[0]),
        per_dark_feature=[DarkFeatureRow(feature=int(f), ica_component=int(ica.best_direction[j]),
                                         max_abs_cos={n: float(sc.max_abs_cos[j]) for n, sc in scores.items()})
                          for j, f in enumerate(dark)],
        per_component=[ComponentTruth(component=i, nearest_true_feature=int(ica.nearest_true[i]),
                                      abs_cos=float(ica.nearest_true_cos[i]),
                                      is_dark=bool(int(ica.nearest_true[i]) in dark_set))
                       for i in range(len(ica.nearest_true))])
    return record, scores

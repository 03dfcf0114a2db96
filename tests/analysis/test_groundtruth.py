"""Scoring direction sets against planted dark features, and recovery on an oracle SAE's residual."""

import numpy as np
import pytest

from darkmatter.analysis import directions, groundtruth, ica, stats
from darkmatter.analysis.decompose import decompose, default_k
from darkmatter.sources import planted

from helpers import oracle_residual

SMALL = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, magnitude_sigma=0.3, seed=42)


def test_score_counts_found_and_false_discoveries():
    truth = np.eye(4)
    dirs = np.array([[1.0, 0.05, 0, 0], [0, 0, 0.2, 0.98]])
    s = groundtruth.score(dirs, truth, np.array([0, 2])).summary()
    assert s.n_found == 1 and s.n_false_discoveries == 0
    assert s.mean_max_abs_cos == pytest.approx((0.99875 + 0.2) / 2, abs=1e-3)
    s = groundtruth.score(np.array([[1.0, 1, 1, 1]]), truth, np.array([0])).summary()
    assert s.n_false_discoveries == 0  # |cos| 0.5 to each: near a true feature
    s = groundtruth.score(np.array([[1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]), np.eye(12), np.array([0])).summary()
    assert s.n_false_discoveries == 1  # |cos| 0.29 to every true feature


def test_every_direction_set_is_scored_and_only_ica_finds_the_withheld_features():
    _, _, r = oracle_residual(SMALL, 20_000)
    m = stats.streaming_moments(r)
    pca = stats.pca_from_cov(m.cov)
    k, _ = default_k(pca, 100)
    white = ica.pca_whitening(pca, m.mean, k)
    dec = decompose(white.apply(r), white, [0], backend="sklearn")
    sets = directions.direction_sets(dec.directions, directions.DirectionContext(
        k=k, d_model=32, seed=1, pca_components=pca.components, dewhitener=white.dewhitener))
    truth, dark = SMALL.directions(), SMALL.withheld()
    W_dec = truth[SMALL.known()]
    record, _ = groundtruth.score_sets(sets, truth, dark, "withheld", np.ones(k, dtype=bool), W_dec, directions.ICA)
    assert list(record.sets) == directions.set_names()
    i = record.sets[directions.ICA]
    assert i.n_found == 8 and i.min_max_abs_cos > 0.95 and i.n_false_discoveries == 0
    for name in directions.set_names()[1:]:
        assert record.sets[name].n_found == 0 and record.sets[name].mean_max_abs_cos < 0.7
    assert record.sae_decoder_matches == 40 and record.n_stable == k and record.n_stable_false_discoveries == 0
    assert [row.feature for row in record.per_dark_feature] == dark.tolist()
    assert sum(c.is_dark for c in record.per_component) >= 8

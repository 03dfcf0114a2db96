"""decompose(): the one whitening → FastICA → match → sign → order assembly, and the default k."""

import numpy as np
import pytest
from scipy.stats import kurtosis, skew

from darkmatter.analysis import ica, stats
from darkmatter.analysis.compare import unit_rows
from darkmatter.analysis.decompose import (
    check_reconstruction,
    choose_k,
    decompose,
    default_k,
    max_supported_k,
    sweep_ks,
    write_sources,
)

N, D, K = 20_000, 24, 6


def planted(seed=0, noise=0.3):
    """Sparse heavy-tailed sources (different firing rates, so different kurtosis) along known unit
    directions, plus isotropic Gaussian noise."""
    rng = np.random.default_rng(seed)
    truth = unit_rows(rng.standard_normal((K, D)))
    p = np.linspace(0.05, 0.3, K)
    sources = (rng.random((N, K)) < p) * rng.exponential(size=(N, K))
    sources = (sources - sources.mean(0)) / sources.std(0)
    return truth, (sources @ truth + noise * rng.standard_normal((N, D))).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    truth, resid = planted()
    m = stats.streaming_moments(resid)
    white = ica.pca_whitening(stats.pca_from_cov(m.cov), m.mean, K)
    z = ica.whiten_rows(resid, white)
    return truth, resid, white, decompose(z, white, [0, 1, 2], backend="torch")


def test_recovers_orders_and_signs_the_planted_sources(fitted):
    truth, resid, white, dec = fitted
    assert dec.k == K and dec.directions.shape == (K, D)
    best = np.abs(dec.directions @ truth.T).max(0)
    assert best.min() > 0.95, best
    assert dec.n_stable == K and dec.stability.min() == 1.0  # every component reappears in both restarts
    assert dec.reappearance.matched_cos.min() > 0.9
    s = (resid.astype(np.float64) - white.mean) @ dec.unmixing.T
    np.testing.assert_allclose(s.std(0), 1.0, atol=0.02)  # unit-variance sources
    assert (skew(s, axis=0) > 0).all()  # positive-skew signs
    kurt = kurtosis(s, axis=0)
    assert (np.diff(kurt) <= 1e-6).all()  # most heavy-tailed first
    np.testing.assert_allclose(dec.source_excess_kurtosis, kurt, rtol=1e-6)
    np.testing.assert_allclose(dec.unmixing @ dec.mixing, np.eye(K), atol=1e-8)


def test_write_sources_explains_what_the_whitening_kept(fitted):
    _, resid, white, dec = fitted
    out = np.empty((N, K), dtype=np.float32)
    explained = write_sources(resid, dec, out, chunk_size=777)
    assert explained == pytest.approx(white.explained, abs=1e-6)
    assert check_reconstruction(explained, white)
    np.testing.assert_allclose(out[:5], (resid[:5].astype(np.float64) - white.mean) @ dec.unmixing.T, rtol=1e-5)
    with pytest.raises(RuntimeError, match="inconsistent"):
        check_reconstruction(explained - 0.01, white)


def test_one_seed_with_scikit_learn_gives_the_same_directions(fitted):
    _, resid, white, dec = fitted
    ref = decompose(ica.whiten_rows(resid, white), white, [0], backend="sklearn")
    _, cos = ica.match(dec.directions, ref.directions)
    assert cos.min() > 0.99
    assert ref.reappearance.undetermined.all() and ref.n_stable == 0  # one seed: no restart can tell


def test_default_k_is_the_90_percent_count_capped():
    pca = stats.PCA(np.array([5.0, 3.0, 1.0, 0.5, 0.5]), np.eye(5))
    assert default_k(pca, 100)[0] == 3  # 9 of 10 units of variance
    assert default_k(pca, 2) == (2, "PCA 90% rule, capped at 2")
    with pytest.raises(ValueError, match="max_components"):
        default_k(pca, 0)


def test_sweep_ks_respect_the_samples_per_parameter_rule():
    pca = stats.PCA(np.geomspace(10, 1, 300), np.eye(300))
    assert max_supported_k(200_000) == 100 and max_supported_k(200_000, 5) == 200
    ks, top = sweep_ks(pca, 200_000)
    assert top == 100 and ks == sorted(set(ks)) and ks[-1] == 100
    assert {25, 50, 100} <= set(ks) and all(k <= 100 for k in ks)
    ks, top = sweep_ks(pca, 10_000_000)  # enough rows for the full rank
    assert top == 300 and 300 in ks and pca.n_for(0.9) in ks
    with pytest.raises(ValueError, match="support no ICA"):
        sweep_ks(pca, 50)


def test_choose_k_takes_the_most_reproducible_and_the_smaller_on_ties():
    assert choose_k([25, 50, 100], [3, 9, 9])[0] == 50
    assert choose_k([25, 50], [4, 1])[0] == 25
    with pytest.raises(ValueError):
        choose_k([25], [1, 2])


def test_width_mismatch_is_refused(fitted):
    _, resid, white, _ = fitted
    with pytest.raises(ValueError, match="columns"):
        decompose(np.zeros((100, K + 1)), white, [0])

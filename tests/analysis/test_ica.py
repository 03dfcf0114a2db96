"""Whitening, matching, stability and the norm-matched control."""

import numpy as np
import pytest

from darkmatter.analysis import ica, resampling, stats
from darkmatter.analysis.compare import unit_rows


def test_matching_and_stability():
    rng = np.random.default_rng(0)
    a = unit_rows(rng.standard_normal((5, 10)))
    perm = np.array([3, 0, 4, 1, 2])
    b = -a[perm]
    got, cos = ica.match(a, b)
    np.testing.assert_array_equal(b[got], -a)
    np.testing.assert_allclose(cos, 1.0)
    assert ica.stability(a, [b, a]).min() == pytest.approx(1.0)


def test_whitening_refuses_degenerate_components():
    pca = stats.PCA(np.array([3.0, 2.0, 1.0, 0.0, 0.0]), np.eye(5))
    assert ica.pca_whitening(pca, np.zeros(5), 3).explained == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-degenerate"):
        ica.pca_whitening(pca, np.zeros(5), 4)


def test_whiten_rows_in_chunks_equals_whole():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1000, 6)).astype(np.float32) * np.arange(1, 7)
    m = stats.streaming_moments(x)
    white = ica.pca_whitening(stats.pca_from_cov(m.cov), m.mean, 4)
    rows = np.arange(0, 1000, 3)
    np.testing.assert_allclose(ica.whiten_rows(x, white, rows, chunk_size=37), white.apply(x[rows]), rtol=1e-6)
    np.testing.assert_allclose(np.cov(ica.whiten_rows(x, white).T, bias=True), np.eye(4), atol=1e-5)


def test_the_norm_matched_surrogate_keeps_norms_and_places_but_no_direction():
    rng = np.random.default_rng(0)
    n, k = 20_000, 6
    z = rng.standard_normal((n, k)).astype(np.float32)
    z[:, 0] *= rng.lognormal(0, 0.8, n)  # one heavy-tailed direction
    z = ica.whiten_rows(z, ica.pca_whitening(stats.pca_from_cov(np.cov(z.T)), z.mean(0), k))
    sur = ica.norm_matched_surrogate(z, seed=3, chunk=777)
    np.testing.assert_allclose(np.cov(sur.T, bias=True), np.eye(k), atol=1e-5)  # re-whitened
    r = np.linalg.norm(z, axis=1) / np.linalg.norm(sur, axis=1)
    assert np.corrcoef(np.log(np.linalg.norm(z, axis=1)), np.log(np.linalg.norm(sur, axis=1)))[0, 1] > 0.99
    assert r.std() / r.mean() < 0.05  # every row keeps its norm (up to the re-whitening)
    kz = stats.streaming_moments(z).excess_kurtosis
    ks = stats.streaming_moments(sur).excess_kurtosis
    assert kz[0] > 3 * ks.max() and ks.min() > 1.0  # the heavy tail is spread over every direction
    np.testing.assert_array_equal(sur, ica.norm_matched_surrogate(z, seed=3, chunk=777))


def test_the_matched_control_finds_no_stable_component():
    units = np.arange(20_000) // 50  # 400 windows of 50 rows
    restarts = resampling.restart_rows(units, 2, 0.5, seed=0)
    assert not set(restarts[0]) & set(restarts[1])  # a complementary pair of halves
    z = np.random.default_rng(1).standard_normal((20_000, 10)).astype(np.float32)
    control = ica.matched_control(z, [0, 1, 2], max_iter=200, tol=1e-6, restarts=restarts)
    s = control.summary(max_iter=200)
    assert s.n_stable == 0
    assert s.source_excess_kurtosis_max_abs < 10 * stats.kurtosis_standard_error(20_000)
    assert len(s.source_excess_kurtosis) == 10 and s.source_excess_kurtosis == sorted(s.source_excess_kurtosis,
                                                                                        reverse=True)
    assert s.source_excess_kurtosis[0] == pytest.approx(s.source_excess_kurtosis_max)


def test_gaussian_surrogate_has_the_covariance_and_no_kurtosis():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T
    sur = stats.GaussianSurrogate(np.arange(5.0), cov, 50_000, seed=3)
    np.testing.assert_array_equal(sur[100:20_000], sur[:40_000][100:20_000])  # deterministic slices
    m = stats.streaming_moments(sur, 7000)
    np.testing.assert_allclose(m.cov, cov, rtol=0.05, atol=0.05 * np.abs(cov).max())
    assert np.abs(m.excess_kurtosis).max() < 5 * stats.kurtosis_standard_error(50_000)

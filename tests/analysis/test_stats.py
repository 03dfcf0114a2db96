"""Streaming moments and PCA against direct NumPy/SciPy computation."""

import numpy as np
import pytest
from scipy import stats as sps

from darkmatter.analysis import stats


def test_streaming_moments_match_direct_computation():
    rng = np.random.default_rng(1)
    x = (rng.laplace(size=(5000, 6)) * [1, 2, 3, 4, 5, 6] + 100.0).astype(np.float32)  # large offset
    m = stats.streaming_moments(x, chunk_size=777)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(m.mean, x64.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.cov, np.cov(x64, rowvar=False, bias=True), rtol=1e-8)
    np.testing.assert_allclose(m.skew, sps.skew(x64, axis=0), atol=1e-8)
    np.testing.assert_allclose(m.excess_kurtosis, sps.kurtosis(x64, axis=0), atol=1e-8)
    assert m.sum_sq == pytest.approx((x64 ** 2).sum(), rel=1e-10)
    assert m.excess_kurtosis.mean() == pytest.approx(3.0, abs=0.4)  # Laplace: excess 3


def test_streaming_moments_reject_nan():
    x = np.ones((100, 3), dtype=np.float32)
    x[57, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stats.streaming_moments(x, chunk_size=30)


def test_pca_and_components_for_fraction():
    eig = np.array([5.0, 3.0, 1.5, 0.5])
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))
    pca = stats.pca_from_cov(q @ np.diag(eig) @ q.T)
    np.testing.assert_allclose(pca.eigenvalues, eig, rtol=1e-10)
    assert pca.n_for(0.5) == 1 and pca.n_for(0.8) == 2 and pca.n_for(0.95) == 3 and pca.n_for(0.99) == 4
    np.testing.assert_allclose(np.abs(pca.components @ q), np.eye(4), atol=1e-8)


def test_gaussianity_test_tells_gaussian_from_heavy_tailed():
    rng = np.random.default_rng(2)
    gauss = stats.gaussianity_test(rng.standard_normal((5000, 20)))
    heavy = stats.gaussianity_test(rng.laplace(size=(5000, 20)))
    assert gauss.fraction_rejected <= 0.05
    assert heavy.fraction_rejected == 1.0


def test_central_from_raw_on_sparse_feature():
    rng = np.random.default_rng(3)
    f = np.where(rng.random(100_000) < 0.01, rng.exponential(size=100_000), 0.0)
    _, var, skew, kurt = stats.central_from_raw(len(f), f.sum(), (f**2).sum(), (f**3).sum(), (f**4).sum())
    assert var == pytest.approx(f.var(), rel=1e-9)
    assert kurt == pytest.approx(sps.kurtosis(f), rel=1e-8)

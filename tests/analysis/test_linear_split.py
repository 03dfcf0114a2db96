"""The linear/nonlinear split (Engels et al. 2024) on data with a known linear share."""

import numpy as np
import pytest

from darkmatter.analysis import linear_split, stats


@pytest.fixture(scope="module")
def planted():
    """r = x @ A + b (linear, variance 1 per unit of A) + N (independent of x, variance 1): half linear."""
    rng = np.random.default_rng(0)
    n, d = 40_000, 12
    x = rng.standard_normal((n, d))
    A = np.zeros((d, d))
    A[:6, :6] = np.eye(6) * np.sqrt(3.0)  # the first 6 residual dims: 3 units linear + 1 unit noise
    noise = rng.standard_normal((n, d)) * np.r_[np.ones(6), np.full(6, 2.0)]  # the last 6: 4 units, all noise
    r = x @ A + 0.5 + noise
    return x.astype(np.float32), r.astype(np.float32)


def test_the_linear_share_is_recovered_on_held_out_rows(planted):
    x, r = planted
    n = len(x)
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)
    W = linear_split.fit_linear(x, r, train, chunk_size=3000)
    pca = stats.pca_from_cov(stats.streaming_moments(r).cov)
    readouts = np.eye(12)[[0, 11]]  # a linear dimension and a pure-noise one
    got = linear_split.evaluate_linear(x, r, test, W, pca.components, len(train), readouts=readouts,
                                       chunk_size=3000, bands=(6,))
    # total variance 6·4 + 6·4 = 48, of which 6·3 = 18 linear
    assert got.variance_predicted == pytest.approx(18 / 48, abs=0.01)
    assert got.n_train == got.n_test == n // 2
    assert got.bands == ["1-6", "7-12"] and sum(got.band_variance_share) == pytest.approx(1.0)
    assert got.readout_variance_predicted[0] == pytest.approx(0.75, abs=0.02)  # 3 of 4 units
    assert abs(got.readout_variance_predicted[1]) < 0.01
    assert 0 < got.norm_predicted < 1


def test_nonlinear_rows_remove_the_linear_part(planted):
    x, r = planted
    W = linear_split.fit_linear(x, r, np.arange(len(x)))
    out = np.empty_like(r)
    linear_split.nonlinear_rows(x, r, W, out, chunk_size=5000)
    c = np.corrcoef(x[:, 0], out[:, 0])[0, 1]
    assert abs(c) < 0.02 and out[:, :6].var(0).mean() == pytest.approx(1.0, abs=0.05)


def test_lives_in():
    assert linear_split.lives_in(np.array([0.8, 0.1, 0.7, 0.1]), np.array([0.2, 0.95, 0.95, 0.3])) == [
        "linear", "nonlinear", "both", "neither"]

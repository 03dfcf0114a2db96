"""Known answers for issue 10's statistics: the k sweep finds dark features in low-variance
directions that a capped k misses, and the matched null gives chance-level similarity figures on a
residual with no dark features."""

import numpy as np
import pytest

from darkmatter.analysis import compare, directions, ica, resampling, stats
from darkmatter.analysis.decompose import choose_k, decompose, default_k, sweep_ks
from darkmatter.analysis.ksweep import FitOptions, SweepData, fit_k
from darkmatter.sources import planted

from helpers import oracle_residual

#: Dark features outside the residual's top 20 principal components: a dense Gaussian part fills 20
#: of 32 dimensions (as the flat spectrum of a real residual fills its top components) and the 6
#: withheld features live in the other 12.
FAINT = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=6, p_fire=0.02, dense_dims=20, dense_std=0.2,
                            faint_withheld=True)
N = 24_000  # 20·k² rows for k = 34 ≥ the full rank 32


@pytest.fixture(scope="module")
def faint_residual():
    _, _, r = oracle_residual(FAINT, N)
    m = stats.streaming_moments(r)
    return r, m.mean, stats.pca_from_cov(m.cov)


def _best_cos(dirs: np.ndarray) -> np.ndarray:
    return np.abs(FAINT.directions()[FAINT.withheld()] @ dirs.T).max(1)


def test_faint_dark_features_lie_outside_the_top_components(faint_residual):
    _, _, pca = faint_residual
    top = pca.components[:20]
    inside = np.linalg.norm(FAINT.directions()[FAINT.withheld()] @ top.T, axis=1)
    assert inside.max() < 0.5  # most of each dark direction's norm is outside the top 20 (measured ≤ 0.44)


def test_capped_k_misses_them_and_the_sweep_finds_them(faint_residual):
    r, mean, pca = faint_residual
    # the old default: the 90% count capped (here at 20, the analogue of 100 on GPT-2's flat spectrum)
    k_old, _ = default_k(pca, 20)
    white = ica.pca_whitening(pca, mean, k_old)
    old = decompose(white.apply(r), white, [0])
    assert k_old == 20 and _best_cos(old.directions).max() < 0.35  # none of the 6 is found
    # the sweep: every k the samples rule allows, the default chosen by the reproducible count
    ks, top = sweep_ks(pca, N)
    assert top == 32 and ks[-1] == 32
    units = np.arange(N) // 8  # windows of 8 rows
    opts = FitOptions(seed=0, splits=1)
    restarts = resampling.restart_rows(units, opts.n_restarts, 0.5, seed=0)
    z = ica.whiten_rows(r, ica.pca_whitening(pca, mean, 32))
    data = SweepData(z_top=z, pca=pca, mean=mean, units=units, restarts=restarts)
    fits = {k: fit_k(data, k, opts) for k in (20, 32)}
    k, rule = choose_k([20, 32], [fits[k].n_reproducible for k in (20, 32)])
    assert k == 32 and "k sweep" in rule
    found = _best_cos(fits[32].decomposition.directions)
    assert (found > 0.9).sum() == 6
    assert fits[32].n_reproducible > fits[20].n_reproducible


def test_matched_null_gives_chance_on_a_residual_without_dark_features():
    rng = np.random.default_rng(0)
    d, k, n = 48, 12, 20_000
    # an anisotropic Gaussian residual: no dark feature anywhere
    scales = np.geomspace(3.0, 0.3, d)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    r = (rng.standard_normal((n, d)) * scales) @ basis.T
    # an SAE dictionary whose rows lean towards the residual's high-variance directions
    W_dec = compare.unit_rows(rng.standard_normal((300, d)) * scales @ basis.T)
    m = stats.streaming_moments(r)
    pca = stats.pca_from_cov(m.cov)
    white = ica.pca_whitening(pca, m.mean, k)
    dec = decompose(white.apply(r), white, [0])
    ctx = directions.DirectionContext(k=k, d_model=d, seed=1, pca_components=pca.components,
                                      dewhitener=white.dewhitener)
    null = np.concatenate([compare.decoder_match(x, W_dec).max_abs_cos
                           for x in directions.baseline_draws(directions.NULL, ctx, 50)])
    got = compare.against_null(compare.decoder_match(dec.directions, W_dec).max_abs_cos, null)
    assert got.share_above_p99 <= 1 / k  # at most one of 12 by chance
    assert abs(compare.decoder_match(dec.directions, W_dec).max_abs_cos.mean() - got.null_mean) < 0.05
    # the isotropic baseline ignores the subspace and sits well below what chance gives there
    iso = compare.decoder_match(directions.random_unit(k, d, 1), W_dec).max_abs_cos.mean()
    assert iso < got.null_mean - 0.1

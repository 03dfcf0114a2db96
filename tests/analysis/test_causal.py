"""The causal tests' arithmetic on known answers: a readout that sees some directions only."""

import numpy as np
import pytest
import torch

from darkmatter.analysis import causal


def _orthonormal(d: int, k: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q[:, :k].T  # float64[k, d] orthonormal rows


def _setup(n_seq: int = 40, per: int = 64, d: int = 12, seed: int = 0):
    """Rows x = s @ E with 4 unit-variance sources along orthonormal E; a "SAE" that keeps only the
    first two; a readout of sources 2 and 3 (through E's rows)."""
    rng = np.random.default_rng(seed)
    E = _orthonormal(d, 4, seed)
    s = rng.laplace(size=(n_seq * per, 4)) / np.sqrt(2)
    x = (s @ E).astype(np.float32)
    keep = torch.as_tensor(E[:2].T @ E[:2], dtype=torch.float32)

    def reconstruct(v: torch.Tensor) -> torch.Tensor:
        return v @ keep

    down = causal.ReadoutDownstream(x, E[2:].T, per=per)
    # the residual's exact decomposition: sources 2, 3 (and nothing else)
    parts = causal.Parts("ICA", unmixing=E[2:], mixing=E[2:].T, mean=np.zeros(d), order=np.array([1, 0]))
    return down, reconstruct, parts, E


def test_add_back_closes_the_gap_in_proportion_to_what_the_readout_sees():
    down, reconstruct, parts, E = _setup()
    edits = [causal.Edit("clean", "clean"), causal.Edit("spliced", "spliced"), causal.Edit("zero", "zero"),
             causal.add_back("add 0", parts, np.array([0])), causal.add_back("add 1", parts, np.array([1])),
             causal.add_back("both", parts, np.array([0, 1])),
             causal.ablate("ablate 0", E[2]), causal.ablate("ablate kept", E[0])]
    t = causal.run_edits(down, reconstruct, edits, stack=3)
    assert t["clean"].mean_loss == 0.0 and t["spliced"].mean_loss > 0.1
    both = causal.gap_closed(t["both"], t["spliced"], t["clean"])
    assert both.share == pytest.approx(1.0, abs=1e-6)
    a0, a1 = (causal.gap_closed(t[f"add {i}"], t["spliced"], t["clean"]) for i in (0, 1))
    assert a0.share + a1.share == pytest.approx(1.0, abs=0.02)  # the two halves, up to cross terms
    assert 0.3 < a0.share < 0.7 and a0.z > 5
    # ablating a direction the readout reads changes it; one it is blind to does not
    assert t["ablate 0"].mean_divergence > 0.1 and t["ablate kept"].mean_divergence < 1e-10
    assert len(t["clean"].loss) == 40 and t["clean"].positions.sum() == 40 * 64


def test_equal_variance_sets_carry_exactly_the_target_variance():
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal((10, 6))
    parts = causal.Parts("PCA", np.zeros((6, 10)), mixing, np.zeros(10), np.argsort(-(mixing ** 2).sum(0)))
    for target in (0.3, parts.variance.max(), parts.variance.sum() * 0.7, parts.variance.sum()):
        ids, scale = causal.equal_variance_set(parts, target)
        assert (parts.variance[ids] * scale ** 2).sum() == pytest.approx(target)
        assert (scale[:-1] == 1).all() and 0 <= scale[-1] <= 1
        assert list(ids) == list(parts.order[:len(ids)])


def test_rotated_parts_span_the_same_subspace_and_m_grid():
    rng = np.random.default_rng(4)
    basis = _orthonormal(8, 3, 1)
    root = np.array([3.0, 2.0, 1.0])
    white, dewhite = basis / root[:, None], basis * root[:, None]
    from darkmatter.analysis.directions import random_rotation

    null = causal.rotated_parts("null", white, dewhite, random_rotation(3, 0), np.zeros(8))
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(3), np.zeros(8))
    r = rng.standard_normal((5, 8))
    projector = basis.T @ basis
    for p in (null, pca):  # all parts together = the orthogonal projection onto the subspace
        assert np.allclose((r @ p.unmixing.T) @ p.mixing.T, r @ projector)
        assert p.variance.sum() == pytest.approx((root ** 2).sum())
    assert causal.m_grid(50) == [1, 3, 10, 30, 50] and causal.m_grid(1) == [1] and causal.m_grid(4) == [1, 3, 4]


def test_gap_closed_is_nan_without_a_gap_and_refuses_mismatched_totals():
    z = causal.EditTotals(np.zeros(3), np.zeros(3), np.ones(3))
    assert np.isnan(causal.gap_closed(z, z, z).share)
    with pytest.raises(ValueError, match="different sequences"):
        causal.gap_closed(causal.EditTotals(np.zeros(2), np.zeros(2), np.ones(2)), z, z)


def test_the_whole_table_on_a_readout():
    down, reconstruct, parts, E = _setup()
    d = E.shape[1]
    # the whitened 2-subspace of the residual (sources 2, 3: unit variance each)
    white = dewhite = E[2:]
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(2), np.zeros(d))
    table = causal.causal_tests(down, reconstruct, parts, pca, [pca], "test", str)
    assert table.subspace_gap_closed.share == pytest.approx(1.0, abs=1e-6)
    # the SAE keeps only sources the readout is blind to: splicing it in recovers nothing over zero
    assert table.loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert [row.m for row in table.top_m] == [1]
    assert table.top_m[0].variance == pytest.approx(1.0)

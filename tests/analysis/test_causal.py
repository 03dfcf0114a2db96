"""The causal tests' arithmetic on known answers: a readout that sees some directions only, a planted
readout of every other dark feature, standard errors by hand."""

import numpy as np
import pytest
import torch

from darkmatter.analysis import causal
from darkmatter.analysis.directions import random_rotation
from darkmatter.sources import planted
from darkmatter.sources.base import GroundTruth


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


def test_clustered_standard_errors_equal_a_hand_computation():
    """Six windows from three documents: the shares are ratios of document totals and the SEs the
    delta method's with G/(G − 1) over the documents, not over the windows."""
    unit = np.array([7, 7, 3, 3, 5, 5])
    pos = np.full(6, 10.0)
    clean = causal.EditTotals(np.array([1.0, 2, 1, 1, 2, 2]), np.zeros(6), pos, unit)
    spliced = causal.EditTotals(np.array([3.0, 3, 2, 4, 3, 5]), np.zeros(6), pos, unit)
    edit = causal.EditTotals(np.array([2.0, 3, 2, 3, 2, 4]), np.zeros(6), pos, unit)
    null = causal.EditTotals(np.array([3.0, 3, 2, 3, 3, 5]), np.zeros(6), pos, unit)
    # per document (sorted ids 3, 5, 7): gap g = (4, 4, 3), closed by the edit d = (1, 2, 1), by the null (1, 0, 0)
    g, d, dn = np.array([4.0, 4, 3]), np.array([1.0, 2, 1]), np.array([1.0, 0, 0])
    R = d.sum() / g.sum()
    se = np.sqrt(3 / 2 * ((d - R * g) ** 2).sum()) / g.sum()
    got = causal.gap_closed(edit, spliced, clean)
    assert got.share == pytest.approx(4 / 11) and got.se == pytest.approx(se) and got.clusters == 3
    assert np.allclose(causal.cluster_sums(spliced.loss - clean.loss, unit), g)
    diff = d - dn
    Rd = diff.sum() / g.sum()
    se_d = np.sqrt(3 / 2 * ((diff - Rd * g) ** 2).sum()) / g.sum()
    paired = causal.paired_test(edit, [null], spliced, clean)
    assert paired.difference == pytest.approx(3 / 11) and paired.se == pytest.approx(se_d)
    from scipy.stats import t

    assert paired.p == pytest.approx(t.sf(Rd / se_d, 2))
    # the same windows, each its own document: a different (per-window) standard error
    alone = [causal.EditTotals(e.loss, e.divergence, e.positions) for e in (edit, spliced, clean)]
    assert causal.gap_closed(*alone).se != pytest.approx(se)
    assert causal.gap_closed(*alone).clusters == 6


def test_halves_keep_documents_whole():
    units = np.repeat(np.arange(10), 2)[:-1]
    a, b = causal.halves(units, 42)
    assert not set(units[a]) & set(units[b]) and len(a) + len(b) == len(units)
    assert len(set(units[a])) == 5 and (np.diff(a) > 0).all()
    assert np.array_equal(causal.halves(units, 42)[0], a)


def test_random_error_has_the_residual_norm_at_every_edited_position():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((2, 5, 8)), dtype=torch.float32)
    x_hat = x * 0.5
    splice = torch.ones(2, 5, dtype=torch.bool)
    splice[:, 0] = False
    batch = causal.Batch(x=x, splice=splice, score=splice, tokens=None, unit=np.arange(2))
    out = causal._apply(causal.Edit("noise", "clean", noise=True, seed=1), x, x_hat, batch, 0)
    eps = out - x
    assert torch.allclose(eps.norm(dim=-1)[:, 1:], (x - x_hat).norm(dim=-1)[:, 1:], rtol=1e-5)
    assert torch.all(eps[:, 0] == 0)
    assert torch.abs(torch.nn.functional.cosine_similarity(eps[:, 1:], x[:, 1:] - x_hat[:, 1:], dim=-1)).max() < 0.99


def test_the_attribution_order_on_a_linear_readout_matches_the_exact_order():
    """Four sources the readout weighs differently: first-order (attribution) and exact single-part
    add-back order the parts of ICA and of a random rotation alike."""
    rng = np.random.default_rng(1)
    d, per, n_seq = 10, 64, 24
    E = _orthonormal(d, 6, 2)
    s = rng.laplace(size=(n_seq * per, 6)) / np.sqrt(2) * np.array([1, 1, 1.5, 0.7, 1.2, 0.4])
    x = (s @ E).astype(np.float32)
    keep = torch.as_tensor(E[:2].T @ E[:2], dtype=torch.float32)
    B = E[2:].T * np.array([0.3, 2.0, 1.0, 0.6])  # the readout weighs the dropped sources unequally
    down = causal.ReadoutDownstream(x, B, per=per)
    sd = s[:, 2:].std(0)
    ica = causal.Parts("ICA", E[2:] / sd[:, None], E[2:].T * sd, np.zeros(d), np.arange(4))
    white, dewhite = E[2:] / sd[:, None], E[2:] * sd[:, None]  # whitening of the (diagonal) residual subspace
    null = causal.rotated_parts("null", white, dewhite, random_rotation(4, 3), np.zeros(d))
    (pred_ica, pred_null), n_pos = causal.attribution(down, lambda v: v @ keep, [ica, null])
    assert n_pos == n_seq * per
    exact = {}
    for parts, pred in ((ica, pred_ica), (null, pred_null)):
        edits = [causal.Edit("clean", "clean"), causal.Edit("spliced", "spliced")]
        edits += [causal.add_back(f"add {c}", parts, np.array([c])) for c in range(4)]
        t = causal.run_edits(down, lambda v: v @ keep, edits)
        exact[parts.name] = np.array([t["spliced"].mean_loss - t[f"add {c}"].mean_loss for c in range(4)])
        assert list(np.argsort(-pred)) == list(np.argsort(-exact[parts.name]))
    assert list(np.argsort(-pred_ica)) == [1, 2, 0, 3]  # readout weight × source scale: 1.4, 1.2, 0.45, 0.24
    # the loss is quadratic: for parts the readout sees apart, the first-order decrease is twice the exact one
    assert pred_ica == pytest.approx(2 * exact["ICA"], rel=1e-4)


def _planted_setup(n_seq: int = 64, per: int = 128):
    """A planted run with an oracle SAE missing 8 features and the planted readout of every other one.
    The "ICA" parts recover the 8 dark features exactly (each dual vector's source, unit variance);
    the baselines are the residual's whitened top-8 subspace's PCs and random rotations."""
    spec = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, p_fire=0.03, seed=3)
    sae = planted.oracle_sae(spec)

    def reconstruct(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sae.decode(sae.encode(v))

    truth = GroundTruth(spec.directions(), spec.withheld(), "")
    B, read = planted.readout(truth)
    x_fit = torch.as_tensor(planted.sample(spec, "analysis", 20000)[0])
    r = (x_fit - reconstruct(x_fit)).double().numpy()
    mean, cov = r.mean(0), np.cov(r.T)
    U = np.linalg.pinv(truth.directions[truth.dark]).T
    sd = np.sqrt(np.einsum("kd,de,ke->k", U, cov, U))
    ica = causal.Parts("ICA", U / sd[:, None], cov @ (U / sd[:, None]).T, mean, np.arange(8))
    eig, vec = np.linalg.eigh(cov)
    top = np.argsort(eig)[::-1][:8]
    white, dewhite = vec[:, top].T / np.sqrt(eig[top])[:, None], vec[:, top].T * np.sqrt(eig[top])[:, None]
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(8), mean)
    nulls = [causal.rotated_parts("null", white, dewhite, random_rotation(8, 10 + i), mean) for i in range(20)]
    component_nulls = [causal.rotated_parts("null", white, dewhite, random_rotation(8, 100 + c), mean)
                       for c in range(8)]
    rows = np.concatenate([xb for xb, _ in planted.rows(spec, "analysis", n_seq * per, start=20000)])
    reads = np.isin(truth.dark, read)
    return causal.ReadoutDownstream(rows, B, per), reconstruct, ica, pca, nulls, component_nulls, reads


def test_on_a_planted_readout_exactly_the_read_features_close_the_gap_beyond_their_null():
    down, reconstruct, ica, pca, nulls, component_nulls, reads = _planted_setup()
    t = causal.causal_tests(down, reconstruct, ica, {"null": nulls, "PCA": [pca]}, str, tested=list(range(8)),
                            component_nulls=component_nulls, test_rule="all")
    assert list(reads) == [True, False] * 4
    closes = [e.closes_gap for e in t.components]
    assert closes == list(reads)  # the four read features, and only they
    for e, read in zip(t.components, reads):
        assert e.add_back is not None and e.versus_null is not None
        if read:
            assert e.add_back.share > 0.2 and e.holm and e.versus_null.z > 8
        else:
            assert e.add_back.share < 0.02 and not e.holm and e.versus_null.difference < 0
    assert t.subspace_gap_closed.share > 0.9 and t.n_documents == 64
    # the order fitted on half A puts the read features first; on half B they beat every null draw
    assert set(t.order[:4]) == {0, 2, 4, 6}
    assert [r.m for r in t.top_m] == [1, 3]
    assert t.baseline_draws == {"null": 20, "PCA": 1}
    for r in t.top_m:
        null, pca = r.baselines["null"], r.baselines["PCA"]
        assert list(r.baselines) == ["null", "PCA"] and len(null.draws) == 20 and len(pca.draws) == 1
        assert r.ica.share > null.high and null.versus is not None and null.versus.p < 1e-4
        assert null.versus.difference > 0.05 and null.versus.difference == pytest.approx(r.ica.share - null.gap.share)
        assert null.gap.share == pytest.approx(np.mean(null.draws)) and null.low <= null.gap.share <= null.high
        assert pca.gap.share == pca.low == pca.high == pca.draws[0] and pca.versus is not None
        assert pca.versus.difference == pytest.approx(r.ica.share - pca.gap.share)
        assert 0 < pca.parts <= 8 and 0 < null.parts <= 8  # parts added back at ICA's variance (of k = 8)
        assert r.ica.clusters == t.score_documents == 32 == null.gap.clusters
    # SAELens's loss recovered and ours agree where every position is analysed
    assert t.loss_recovered == pytest.approx(t.analysed_loss_recovered)


def test_the_whole_table_on_a_readout():
    down, reconstruct, parts, E = _setup()
    d = E.shape[1]
    # the whitened 2-subspace of the residual (sources 2, 3: unit variance each)
    white = dewhite = E[2:]
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(2), np.zeros(d))
    table = causal.causal_tests(down, reconstruct, parts, {"PCA": [pca]}, str, tested=[1], component_nulls=[pca],
                                not_tested={0: "not reproducible"})
    assert table.subspace_gap_closed.share == pytest.approx(1.0, abs=1e-6)
    # the SAE keeps only sources the readout is blind to: splicing it in recovers nothing over zero
    assert table.loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert [row.m for row in table.top_m] == [1]
    assert table.top_m[0].variance == pytest.approx(1.0)
    untested, tested = table.components
    assert not untested.tested and untested.not_tested_because == "not reproducible" and untested.add_back is None
    assert tested.tested and tested.add_back is not None and table.tested == [1]
    # the SAE's error is the whole read signal; a random error of its norm moves the readout less
    assert table.divergence_ratio > 1


def test_readout_units_are_clusters():
    down, reconstruct, parts, E = _setup(n_seq=8)
    down = causal.ReadoutDownstream(down.rows, down.B, per=64, units=np.repeat([4, 9, 1, 2], 2))
    t = causal.run_edits(down, reconstruct, [causal.Edit("clean", "clean"), causal.Edit("spliced", "spliced"),
                                             causal.add_back("add 0", parts, np.array([0]))], select=np.arange(2, 8))
    assert list(t["spliced"].unit) == [9, 9, 1, 1, 2, 2]
    assert causal.gap_closed(t["add 0"], t["spliced"], t["clean"]).clusters == 3
    with pytest.raises(ValueError, match="units"):
        causal.ReadoutDownstream(down.rows, down.B, per=64, units=np.arange(3))


@pytest.mark.parametrize("scales", [(), (1.0, -1.0)])
def test_one_progress_bar_counts_every_window_pass_of_the_causal_tests(scales):
    down, reconstruct, parts, E = _setup(n_seq=8)
    white = dewhite = E[2:]
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(2), np.zeros(E.shape[1]))
    bars = []

    class Bar:
        def __init__(self, desc, total):
            self.total, self.n, self.phases, self.closed = total, 0, {}, False
            bars.append(self)

        def set_description(self, desc):
            self.phase = desc
            self.phases[desc] = 0

        def update(self, n):
            self.n += n
            self.phases[self.phase] += n

        def close(self):
            self.closed = True

    causal.causal_tests(down, reconstruct, parts, {"PCA": [pca], "null": [pca] * 3}, str, tested=[0, 1],
                        component_nulls=[pca, pca], scales=scales, progress=Bar)
    (bar,) = bars  # one bar for the whole test, its total known up front (tqdm's ETA) and reached exactly
    assert bar.closed and bar.n == bar.total
    planned = causal.window_passes(8, 2, 2, 4, n_scales=len(scales))
    assert list(bar.phases.values()) == [v for v in planned.values() if v]
    assert [p.removeprefix("causal tests: ") for p in bar.phases] == [
        "splice and per-component edits", "attribution on half A (forward + backward)", "top-m add-back on half B",
        *(["logit effect"] if scales else [])]
    assert causal.window_passes(64, 50, 2, 21) == {"splice and components": 64 * 14, "attribution": 32,
                                                   "top-m": 32 * 89, "logit effect": 10}

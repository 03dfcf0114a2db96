"""The like-for-like replication of the original 10-5-10 toy-model figures
(darkmatter/experiments/toy_original.py) and its results file and document."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from darkmatter.experiments import toy_original as to

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "runs" / "toy_original.json"
DOC = ROOT / "docs" / "toy_replication.md"


def test_features_are_sparse_uniform_and_seeded():
    x = to.sample_features(20_000, 10, 0.9, np.random.default_rng(1))
    assert x.shape == (20_000, 10)
    assert abs(float((x == 0).mean()) - 0.9) < 0.005
    assert abs(float(x[x > 0].mean()) - 0.5) < 0.01
    np.testing.assert_array_equal(x, to.sample_features(20_000, 10, 0.9, np.random.default_rng(1)))
    np.testing.assert_array_equal(to.eval_features(100, 0.9, 123), to.eval_features(100, 0.9, 123))
    with pytest.raises(ValueError, match="sparsity"):
        to.sample_features(5, 3, 1.0, np.random.default_rng(0))


@pytest.mark.parametrize("setup", [to.BASE_SETUP, to.REPO_SETUP, replace(to.BASE_SETUP, bias=False)])
def test_ae_loss_and_gradients_match_autograd(setup):
    rng = np.random.default_rng(0)
    W, b, x = rng.normal(0, 0.5, (5, 10)), rng.normal(0, 0.1, 10), to.sample_features(64, 10, 0.5, rng)
    loss, gW, gb = to.ae_loss_and_grads(W, b, x, setup)
    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    xt = torch.tensor(x)
    weight = torch.tensor(to.importance(setup, 10)) / (10 if setup.loss == "mean" else 1)
    expected = (weight * (torch.relu(xt @ Wt.T @ Wt + bt) - xt) ** 2).sum(dim=1).mean()
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(gW, Wt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(gb, bt.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("name", sorted(to.PLAIN_VARIANTS))
def test_plain_sae_loss_and_gradients_match_autograd(name):
    settings = to.PLAIN_VARIANTS[name]
    rng = np.random.default_rng(1)
    sae = to.PlainSAE(W_enc=rng.normal(0, 0.3, (5, 10)), b_enc=rng.normal(0, 0.1, 10),
                      W_dec=rng.normal(0, 0.3, (10, 5)), b_dec=rng.normal(0, 0.1, 5))
    h = rng.normal(0, 1, (50, 5))
    loss, grads = to.plain_sae_loss_and_grads(sae, h, settings)
    params = [torch.tensor(a, requires_grad=True) for a in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
    f = torch.relu(torch.tensor(h) @ params[0] + params[1])
    err = f @ params[2] + params[3] - torch.tensor(h)
    expected = (err ** 2).sum(dim=1).mean() / (5 if settings.mse == "mean" else 1) + settings.l1 * f.sum(dim=1).mean()
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    for g, p in zip(grads, params):
        np.testing.assert_allclose(g, p.grad.numpy(), atol=1e-12)


def test_base_setup_lands_near_the_original_at_s_0_9():
    """Seed 123, S = 0.9 (the original's row: loss 0.0280, cond(W) 1.6, diagonal dominance 0.734).
    Tolerances: loss within 10 %, cond(W) within 0.35, row-norm diagonal dominance within 0.05."""
    target = to.ORIGINAL_AE[0.9]
    ae = to.train_toy_ae(to.BASE_SETUP, 0.9, 123)
    assert ae.W.shape == (5, 10) and ae.b.shape == (10,)
    figs = to.ae_figures(ae, to.eval_features(10_000, 0.9, 123))
    assert figs.ae_loss == pytest.approx(0.027427, rel=1e-3)
    assert figs.cond_W == pytest.approx(1.3149, rel=1e-3)
    assert figs.diag["feature_row_norm"] == pytest.approx(0.69361, rel=1e-3)
    assert abs(figs.ae_loss / target.ae_loss - 1) < 0.1
    assert abs(figs.cond_W - target.cond_W) < 0.35
    assert abs(figs.diag["feature_row_norm"] - target.diagonal_dominance) < 0.05
    # the repository's definition (share of |WᵀW| on the diagonal) cannot reach 0.734
    assert figs.diag["feature_share"] < 0.5
    np.testing.assert_array_equal(ae.W, to.train_toy_ae(to.BASE_SETUP, 0.9, 123).W)


def test_repo_setup_reproduces_the_repositorys_antipodal_pairs():
    """toy.py's setup (2,000 of its 10,000 Adam steps): cond(W) 1.00, share 0.50 (README)."""
    ae = to.train_toy_ae(replace(to.REPO_SETUP, steps=2000), 0.9, 123)
    figs = to.ae_figures(ae, to.eval_features(10_000, 0.9, 123))
    assert figs.cond_W == pytest.approx(1.0, abs=0.01)
    assert figs.diag["feature_share"] == pytest.approx(0.5, abs=0.01)
    assert figs.diag["feature_row_norm"] == pytest.approx(1 / math.sqrt(2), abs=0.01)
    assert figs.ae_loss == pytest.approx(figs.mse_per_feature, rel=1e-12) and figs.ae_loss < 0.002


def test_diagonal_dominance_definitions_on_known_matrices():
    pair = np.array([[1.0, -1.0]])  # an antipodal pair in one hidden dimension
    d = to.diagonal_dominance(pair)
    assert d["feature_share"] == d["feature_global"] == pytest.approx(0.5)
    assert d["feature_row_norm"] == pytest.approx(1 / math.sqrt(2))
    assert d["hidden_share"] == pytest.approx(1.0)
    W = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # WᵀW = [[2, 1, 0], [1, 1, 0], [0, 0, 0]]
    d = to.diagonal_dominance(W)
    assert d["feature_share"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert d["feature_global"] == pytest.approx(3 / 5)
    assert d["feature_row_norm"] == pytest.approx((2 / math.sqrt(5) + 1 / math.sqrt(2) + 0) / 3)
    assert d["hidden_share"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # WWᵀ = [[1, 1], [1, 2]]
    assert to.cond_W(np.diag([2.0, 1.0])) == pytest.approx(2.0)


def test_figure_distance_and_nearest():
    o = to.ORIGINAL_AE[0.9]
    assert to.figure_distance(o.ae_loss, o.cond_W, o.diagonal_dominance, o) == 0.0
    assert to.figure_distance(o.ae_loss * math.e, o.cond_W, o.diagonal_dominance + 0.1, o) == pytest.approx(2.0)

    def record(variant, s, loss, cond, diag):
        return {"variant": variant, "sparsity": s, "seed": 0,
                "figures": {"ae_loss": loss, "cond_W": cond, "diag": dict.fromkeys(to.DIAGONAL_DOMINANCE, diag)}}

    records = [record("near", 0.9, 0.03, 1.6, 0.73), record("far", 0.9, 0.003, 1.0, 0.5)]
    best = to.nearest(records, 0.9)
    assert best.variant == "near" and best.distance == pytest.approx(abs(math.log(0.03 / 0.028)) + 0.04)


def test_latent_stats_on_a_constructed_case():
    f = np.array([[0.0, 1.0, 0.0, 0.0],
                  [0.0, 2.0, 0.5, 0.0],
                  [0.0, 0.0, 0.0, 0.0]])
    s = to.latent_stats(f)
    assert s.l0 == pytest.approx(1.0) and s.dead == 2 and s.active == 2 and not s.collapsed
    np.testing.assert_array_equal(s.alive, [False, True, True, False])
    s = to.latent_stats(np.zeros((5, 10)))
    assert s.l0 == 0.0 and s.dead == 10 and s.active == 0 and s.collapsed


def test_plain_sae_figures_on_a_constructed_sae():
    """Latent i reads and writes feature direction i of W (unit columns, d_model 2, 3 features);
    latent 3 has a bias so negative that it never fires. h = x Wᵀ with one feature on per sample."""
    W = np.array([[1.0, 0.0, 1 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]])  # float[d_model, n_features]
    W_dec = np.vstack([W.T, [[1.0, 0.0]]])                                   # float[d_sae = 4, d_model]
    sae = to.PlainSAE(W_enc=W_dec.T.copy(), b_enc=np.array([-0.75, -0.75, -0.75, -100.0]), W_dec=W_dec,
                      b_dec=np.zeros(2))
    x = np.repeat(np.eye(3), 4, axis=0) * 1.0                                # 12 samples, 1 feature each
    figs = to.plain_sae_figures(sae, x @ W.T, W)
    # each sample fires its own latent (pre-activation 1 - 0.75) and none of the others (≤ 0.71 - 0.75)
    assert figs.l0 == pytest.approx(1.0) and figs.dead == 1 and figs.active == 3 and not figs.collapsed
    assert figs.procrustes == pytest.approx(1.0) and figs.matched_abs_cos == pytest.approx(1.0)
    dead = to.PlainSAE(W_enc=sae.W_enc, b_enc=np.full(4, -100.0), W_dec=W_dec, b_dec=np.zeros(2))
    figs = to.plain_sae_figures(dead, x @ W.T, W)
    assert figs.collapsed and figs.dead == 4 and figs.l0 == 0.0 and math.isnan(figs.procrustes)


def test_train_plain_sae_is_seeded_and_learns():
    """The main plain SAE on 4,000 hidden activations of the base AE at S = 0.85 (625 steps)."""
    ae = to.train_toy_ae(to.BASE_SETUP, 0.85, 123)
    h = ae.hidden(to.sample_features(4_000, 10, 0.85, np.random.default_rng(5)))
    h_eval = ae.hidden(to.eval_features(2_000, 0.85, 123))
    settings = to.PLAIN_VARIANTS["plain"]
    sae = to.train_plain_sae(h, settings, seed=7)
    assert sae.W_enc.shape == (5, 10) and sae.W_dec.shape == (10, 5)
    np.testing.assert_array_equal(sae.W_dec, to.train_plain_sae(h, settings, seed=7).W_dec)
    figs = to.plain_sae_figures(sae, h_eval, ae.W)
    assert figs.fvu == pytest.approx(0.019762, rel=1e-3) and figs.l0 == pytest.approx(8.525, abs=1e-3)
    assert figs.dead == 0 and not figs.collapsed
    with pytest.raises(ValueError, match="fewer than one batch"):
        to.train_plain_sae(h[:10], settings, seed=0)


def test_fill_generated_replaces_only_the_named_blocks():
    doc = "a\n<!-- generated: x -->\nold\n<!-- end generated -->\nb\n<!-- generated: y -->\n<!-- end generated -->\n"
    filled = to.fill_generated(doc, {"x": "| new |", "y": "two\nlines"})
    assert to.generated_blocks(filled) == {"x": "| new |", "y": "two\nlines"}
    assert filled.startswith("a\n") and "\nb\n" in filled
    assert to.fill_generated(filled, {"x": "| new |", "y": "two\nlines"}) == filled
    with pytest.raises(KeyError):
        to.fill_generated(doc, {"x": ""})


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads(RESULTS.read_text())


def test_results_file_records_the_run(results):
    assert len(results["seeds"]) >= 5 and results["settings"]["seeds"] == results["seeds"]
    for key in ("date", "platform", "python", "numpy", "torch", "sae_lens", "cpu_count", "wall_s"):
        assert key in results["meta"]
    runs = results["sae_runs"]
    assert {r["ae"] for r in runs} == set(results["replicated_setups"])
    for r in runs:
        assert set(to.PLAIN_VARIANTS) <= set(r["saes"])
        for f in r["saes"].values():
            assert f["active"] + f["dead"] == 10
    # SAELens ran on the nearest setup at S = 0.9 and on the repository's, for every seed and S
    for ae in (results["nearest"]["S=0.90"]["variant"], to.REPO_VARIANT):
        assert sum("saelens" in r["saes"] for r in runs if r["ae"] == ae) == 3 * len(results["seeds"])


def test_tables_are_generated_from_the_json_and_shown_in_the_doc(results):
    tables = to.tables(results)
    assert tables == results["tables"]
    shown = to.generated_blocks(DOC.read_text())
    assert shown == tables

"""Toy models of superposition, the SAELens SAE on their hidden layer, and ICA on its residual
(darkmatter/toy.py), plus the sweep script at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch

from darkmatter.analysis.compare import unit_rows
from darkmatter.analysis.directions import baselines
from darkmatter.experiments import toy

torch.set_num_threads(1)

TINY = toy.ToySettings(ae_steps=1500, ae_batch_size=256, n_train=4000, n_eval=2000, sae_epochs=5,
                       sae_batch_size=128, n_random_baselines=50)


@pytest.fixture(scope="module")
def tiny_run() -> toy.RunRecord:
    """10-5-10 at S = 0.9, seed 0, with a short (155-step) SAE."""
    return toy.run_one(toy.parse_architecture("10-5-10"), 0.9, seed=0, settings=TINY)


def test_features_are_sparse_uniform_and_seeded():
    x = toy.sample_features(20_000, 10, 0.9, torch.Generator().manual_seed(1))
    assert x.shape == (20_000, 10) and x.dtype == torch.float32
    assert abs(float((x == 0).float().mean()) - 0.9) < 0.005
    nonzero = x[x > 0]
    assert float(nonzero.max()) < 1.0
    assert abs(float(nonzero.mean()) - 0.5) < 0.01  # Uniform[0, 1]
    assert abs(float((x ** 2).mean()) - toy.zero_baseline_loss(0.9)) < 0.001
    again = toy.sample_features(20_000, 10, 0.9, torch.Generator().manual_seed(1))
    assert torch.equal(x, again)
    with pytest.raises(ValueError, match="sparsity"):
        toy.sample_features(5, 3, 1.0, torch.Generator())


def test_parse_architecture_and_settings_errors():
    assert toy.parse_architecture("20-10-20") == toy.Architecture(20, 10)
    assert toy.parse_architecture("20-10-20").name == "20-10-20"
    for bad in ("10-5", "10-5-9", "a-b-a", "0-0-0"):
        with pytest.raises(ValueError, match="n-m-n"):
            toy.parse_architecture(bad)
    with pytest.raises(ValueError, match="exceeds n_train"):
        toy.ToySettings(n_train=100, sae_batch_size=256)


def test_toy_autoencoder_beats_zero_baseline_and_is_deterministic():
    arch = toy.parse_architecture("10-5-10")
    model = toy.train_toy_model(arch, 0.9, seed=0, steps=1500, batch_size=256)
    assert model.W.shape == (5, 10) and model.b.shape == (10,)
    final = model.loss_history[-1][1]
    assert model.loss_history[-1][0] == 1500 and len(model.loss_history) == 10
    assert final < 0.1 * toy.zero_baseline_loss(0.9)  # 0.0018 vs 0.0333
    assert final < model.loss_history[0][1]
    again = toy.train_toy_model(arch, 0.9, seed=0, steps=1500, batch_size=256)
    np.testing.assert_array_equal(model.W, again.W)


def test_sparse_features_go_into_superposition_dense_ones_do_not():
    """20 features through 5 dimensions (Elhage et al. 2022, uniform importance): dense inputs give
    a rank-5 orthogonal projection (WWᵀ = I, ‖W‖_F² / m = 1 feature per dimension, no feature
    with norm > 0.9); at S = 0.95 all 20 features are kept with norm ≈ 1.1 (≈ 5 per dimension)."""
    arch = toy.parse_architecture("20-5-20")
    dense = toy.train_toy_model(arch, 0.0, seed=0, steps=3000, batch_size=512)
    sparse = toy.train_toy_model(arch, 0.95, seed=0, steps=3000, batch_size=512)
    dense_norms = np.linalg.norm(dense.W, axis=0)
    sparse_norms = np.linalg.norm(sparse.W, axis=0)
    assert (dense_norms > 0.9).sum() == 0
    assert abs((dense.W ** 2).sum() / 5 - 1.0) < 0.05
    np.testing.assert_allclose(np.linalg.svd(dense.W, compute_uv=False), 1.0, atol=0.05)
    assert (sparse_norms > 0.9).sum() == 20 > 5
    assert (sparse.W ** 2).sum() / 5 > 4.5


def test_diagonal_dominance_on_a_known_matrix():
    G = np.array([[3.0, -1.0, 1.0],    # 3 > 2: dominant, share 3/5
                  [1.0, 1.0, -1.0],    # 1 < 2: not, share 1/3
                  [0.0, 0.0, 0.0]])    # all zero: not dominant, share 0
    d = toy.diagonal_dominance(G)
    assert d.fraction == pytest.approx(1 / 3)
    assert d.mean_share == pytest.approx((0.6 + 1 / 3 + 0.0) / 3)
    assert toy.diagonal_dominance(np.eye(4)) == toy.DiagonalDominance(1.0, 1.0)
    # an antipodal pair (w, -w) sits exactly on the border: |G_ii| = Σ_{j≠i}|G_ij|
    W = np.array([[1.0, -1.0]])
    assert toy.diagonal_dominance(W.T @ W) == toy.DiagonalDominance(0.0, 0.5)
    with pytest.raises(ValueError, match="square"):
        toy.diagonal_dominance(np.ones((2, 3)))


def test_procrustes_similarity_conventions():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 4))
    same = toy.procrustes_similarity(A, A)
    assert same.similarity == pytest.approx(1.0) and same.mean_abs_cos == pytest.approx(1.0)
    # permuted, sign-flipped and rescaled rows: the Hungarian matching undoes all three
    perm = rng.permutation(6)
    B = (A * np.array([1, -1, 1, -1, 2, 0.5])[:, None])[perm]
    pm = toy.procrustes_similarity(A, B)
    assert pm.similarity == pytest.approx(1.0) and pm.mean_abs_cos == pytest.approx(1.0)
    np.testing.assert_array_equal(perm[pm.pairs[:, 1]], np.arange(6))
    # the whole set rotated by 0.3 rad in one plane: Procrustes forgives it, matched |cos| does not
    Q = np.eye(4)
    Q[:2, :2] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]
    rot = toy.procrustes_similarity(A, A @ Q)
    assert rot.similarity == pytest.approx(1.0)
    assert rot.mean_abs_cos < 0.99
    # unrelated directions
    assert toy.procrustes_similarity(A, rng.standard_normal((6, 4))).similarity < 0.9
    # more learned rows than true ones: every true row is matched once
    extra = toy.procrustes_similarity(A, np.vstack([rng.standard_normal((3, 4)), A]))
    assert extra.similarity == pytest.approx(1.0) and len(extra.pairs) == 6
    with pytest.raises(ValueError, match="zero norm"):
        toy.procrustes_similarity(A, np.zeros((6, 4)))


def test_residual_ica_recovers_planted_missed_directions():
    """Five sparse (exponential × Bernoulli) sources along known non-orthogonal unit directions in
    5 dimensions; three of them are declared missed. ICA finds all three, far above chance."""
    rng = np.random.default_rng(0)
    D = unit_rows(rng.standard_normal((5, 5)))
    sources = rng.exponential(1.0, (20_000, 5)) * (rng.random((20_000, 5)) < 0.2)
    residual = sources @ D + 0.01 * rng.standard_normal((20_000, 5))
    out = toy.residual_ica(residual, D[:3], seed=0, n_draws=100)
    assert out.k == 5 and out.directions.shape == (5, 5)
    assert out.n_missed == 3 and out.n_found == 3
    assert out.missed_max_cos_ica > 0.98
    assert set(out.missed_max_cos_baselines) == {b.name for b in baselines()}
    # the matched null lies in the same 5-dim subspace, so chance is high there (measured 0.86)
    assert out.missed_max_cos_ica > max(out.missed_max_cos_baselines.values()) + 0.1
    # a rank-3 residual in 5 dimensions whitens to k = 3
    flat = toy.residual_ica(sources[:, :3] @ D[:3], D[:1], seed=0, n_draws=10)
    assert flat.k == 3 and flat.n_found == 1
    # nothing left: ICA is skipped
    empty = toy.residual_ica(np.zeros((100, 5)), D[:2], seed=0)
    assert empty.k == 0 and empty.n_found == 0 and math.isnan(empty.missed_max_cos_ica)


def test_sae_on_hidden_layer_beats_the_mean(tiny_run):
    r = tiny_run
    assert r.arch == "10-5-10" and r.d_sae == 10 and r.sae_steps == 5 * (4000 // 128)
    assert not r.collapsed
    assert r.sae_dead == 0 and r.sae_active_latents == 10
    assert 0 < r.sae_fvu < 0.6          # 0.49: better than predicting the mean
    assert 1.0 < r.sae_l0 <= 10.0       # 9.2
    assert r.ae_loss < 0.2 * r.ae_loss_zero_baseline
    assert r.n_represented == 10 and r.cond_W < 1.5
    assert r.diag_share_mean == pytest.approx(0.5, abs=0.02)  # antipodal pairs
    assert 0 < r.procrustes_similarity <= 1 and 0 < r.matched_abs_cos <= 1
    # the SAE (155 steps) still misses all 10 features; ICA of its residual finds all 10
    assert r.n_missed == 10 and r.n_found_by_ica == 10
    assert r.missed_max_cos_ica > 0.95 > 0.7 > r.missed_max_cos_baselines["random"]  # chance level
    assert r.missed_max_cos_ica > max(r.missed_max_cos_baselines.values()) + 0.15
    assert r.sae_loss_per_epoch[-1] < r.sae_loss_per_epoch[0]


def test_run_is_deterministic(tiny_run):
    again = toy.run_one(toy.parse_architecture("10-5-10"), 0.9, seed=0, settings=TINY)
    assert again == tiny_run


def test_sweep_records_summary_and_script_outputs(tmp_path):
    small = toy.ToySettings(ae_steps=200, ae_batch_size=256, n_train=1000, n_eval=500, sae_epochs=2,
                            sae_batch_size=128, n_random_baselines=10)
    records = toy.run_sweep([toy.parse_architecture("6-3-6")], [0.8, 0.9], [1, 2], small)
    assert [(r.sparsity, r.seed) for r in records] == [(0.8, 1), (0.8, 2), (0.9, 1), (0.9, 2)]
    keys = set(records[0].to_dict())
    assert keys == {f.name for f in fields(toy.RunRecord)}
    assert {"ae_loss", "cond_W", "diag_dominant_fraction", "diag_share_mean", "sae_l0", "sae_dead",
            "sae_dead_fraction", "sae_active_latents", "procrustes_similarity", "matched_abs_cos",
            "sae_fvu", "collapsed", "n_missed", "n_found_by_ica", "missed_max_cos_ica",
            "missed_max_cos_baselines"} <= keys
    rows = toy.summarise(records)
    assert [(r.arch, r.sparsity, r.n_runs) for r in rows] == [("6-3-6", 0.8, 2), ("6-3-6", 0.9, 2)]
    l0 = [r.sae_l0 for r in records[:2]]
    assert rows[0].mean["sae_l0"] == pytest.approx(np.mean(l0))
    assert rows[0].std["sae_l0"] == pytest.approx(np.std(l0, ddof=1))
    assert rows[0].n_collapsed == sum(r.collapsed for r in records[:2])
    assert asdict(rows[0])["mean"].keys() == set(toy.SUMMARY_FIELDS) | {f"missed_max_cos_{b.name}" for b in baselines()}

    spec = importlib.util.spec_from_file_location("sweep_toy_models",
                                                  toy.__file__.replace("darkmatter/experiments/toy.py",
                                                                       "scripts/sweep_toy_models.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "sweep"
    assert script.main(["--architectures", "6-3-6", "--sparsities", "0.9", "--seeds", "1",
                        "--ae-steps", "200", "--n-samples", "1000", "--n-eval", "500", "--sae-epochs", "2",
                        "--sae-batch-size", "128", "--outputs", str(out)]) == 0
    doc = json.loads((out / "toy_sweep.json").read_text())
    assert doc["settings"]["sae_l1"] == 0.01 and doc["settings"]["sae_lr"] == 1e-3
    assert doc["settings"]["architectures"] == ["6-3-6"] and doc["settings"]["seeds"] == [1]
    assert set(doc["records"][0]) == keys and doc["summary"][0]["n_runs"] == 1
    table = (out / "toy_sweep.md").read_text()
    assert "| 6-3-6 | 0.9 |" in table and "collapsed" in table
    assert (out / "toy_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))

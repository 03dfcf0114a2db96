"""Planted dark matter: data with a known answer, the Gaussian-surrogate control, and the
whole pipeline on ``--preset planted``."""

import json

import numpy as np
import pytest
import torch

from darkmatter import cli, compare, ica, planted, stats

SMALL = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, magnitude_sigma=0.3, seed=42)
SMALL_FLAGS = ["--planted-d-model", "32", "--planted-features", "48", "--planted-withheld", "8",
               "--n-tokens", "20000", "--ica-seeds", "2"]


def oracle_residual(spec, n):
    x, f = planted.sample(spec, "analysis", n)
    sae = planted.oracle_sae(spec)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        r = (xt - sae.decode(sae.encode(xt))).numpy()
    return x, f, r


def test_rows_are_reproducible_and_streams_are_distinct():
    x, f = planted.sample(SMALL, "analysis", 10_000)  # spans two blocks
    rows = np.array([0, 5, 8191, 8192, 9999])
    np.testing.assert_array_equal(planted.features_at(SMALL, "analysis", rows), f[rows])
    again = np.concatenate([a for a, _ in planted.rows(SMALL, "analysis", 3000, start=7000)])
    np.testing.assert_array_equal(again, x[7000:10_000])
    x_train, _ = planted.sample(SMALL, "train", 100)
    assert not np.allclose(x_train, x[:100])
    # numpy ignores trailing zeros in seed lists; the streams must still differ from plain seed 42
    d = SMALL.directions()
    assert np.abs(d @ compare.random_directions(48, 32, 42).T).max() < 0.9
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    assert abs((f > 0).mean() - SMALL.p_fire) < 0.002


def test_spec_rejects_impossible_values():
    with pytest.raises(ValueError, match="n_withheld"):
        planted.PlantedSpec(n_features=4, n_withheld=5)
    with pytest.raises(ValueError, match="p_fire"):
        planted.PlantedSpec(p_fire=0)


def test_oracle_sae_knows_exactly_the_non_withheld_directions():
    sae = planted.oracle_sae(SMALL)
    W = sae.W_dec.detach().numpy()
    assert W.shape == (48 - 8, 32)
    truth = SMALL.directions()
    assert set(planted.missed_by_decoder(W, truth)) == set(SMALL.withheld())
    x, f, r = oracle_residual(SMALL, 20_000)
    fvu = (r ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert 0.1 < fvu < 0.6  # a realistic SAE: it explains most, not all, of the variance


def test_ica_recovers_every_withheld_direction_and_pca_random_do_not():
    _, _, r = oracle_residual(SMALL, 20_000)
    m = stats.streaming_moments(r)
    pca = stats.pca_from_cov(m.cov)
    k = pca.n_for(0.9)
    white = ica.pca_whitening(pca, m.mean, k)
    fit = ica.fastica(white.apply(r), seed=0)
    truth, dark = SMALL.directions(), SMALL.withheld()
    scores = {"ICA": planted.score(ica.mixing_directions(fit.W, white), truth, dark).summary(),
              "PCA": planted.score(pca.components[:k], truth, dark).summary(),
              "random": planted.score(compare.random_directions(k, 32, 1), truth, dark).summary()}
    assert scores["ICA"]["n_found"] == 8 and scores["ICA"]["min_max_abs_cos"] > 0.95
    assert scores["ICA"]["n_false_discoveries"] == 0
    for name in ("PCA", "random"):
        assert scores[name]["n_found"] == 0
        assert scores[name]["mean_max_abs_cos"] < 0.7


def test_score_counts_found_and_false_discoveries():
    truth = np.eye(4)
    dirs = np.array([[1.0, 0.05, 0, 0], [0, 0, 0.2, 0.98]])
    s = planted.score(dirs, truth, np.array([0, 2])).summary()
    assert s["n_found"] == 1 and s["n_false_discoveries"] == 0
    assert s["mean_max_abs_cos"] == pytest.approx((0.99875 + 0.2) / 2, abs=1e-3)
    s = planted.score(np.array([[1.0, 1, 1, 1]]), truth, np.array([0])).summary()
    assert s["n_false_discoveries"] == 0  # |cos| 0.5 to each: near a true feature
    s = planted.score(np.array([[1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]), np.eye(12), np.array([0])).summary()
    assert s["n_false_discoveries"] == 1  # |cos| 0.29 to every true feature


def test_gaussian_control_finds_no_stable_component():
    control = ica.gaussian_control(20_000, 10, [0, 1, 2], max_iter=200, tol=1e-6)
    s = control.summary(stable_cos=0.9)
    assert s["n_stable"] == 0
    assert s["source_excess_kurtosis_max_abs"] < 10 * stats.kurtosis_standard_error(20_000)


def test_gaussian_surrogate_has_the_covariance_and_no_kurtosis():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T
    sur = stats.GaussianSurrogate(np.arange(5.0), cov, 50_000, seed=3)
    np.testing.assert_array_equal(sur[100:20_000], sur[:40_000][100:20_000])  # deterministic slices
    m = stats.streaming_moments(sur, 7000)
    np.testing.assert_allclose(m.cov, cov, rtol=0.05, atol=0.05 * np.abs(cov).max())
    assert np.abs(m.excess_kurtosis).max() < 5 * stats.kurtosis_standard_error(50_000)


def test_planted_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "planted"
    assert cli.run_all(["--preset", "planted", "--outputs", str(out), *SMALL_FLAGS]) == 0
    truth = json.loads((out / "groundtruth.json").read_text())
    assert truth["dark_features"] == SMALL.withheld().tolist()
    assert truth["ICA"]["n_found"] == 8 and truth["ICA"]["n_false_discoveries"] == 0
    assert truth["PCA"]["n_found"] == 0 and truth["random"]["n_found"] == 0
    ica_info = json.loads((out / "ica.json").read_text())
    assert ica_info["gaussian_control"]["n_stable"] == 0
    assert ica_info["n_stable"] >= 8
    results = json.loads((out / "ica_dark_matter_results.json").read_text())
    assert results["summary"]["groundtruth"]["ICA"]["n_found"] == 8
    assert results["summary"]["noise_floor"]["control_n_stable"] == 0
    comps = (out / "components.md").read_text()
    assert "nearest planted feature" in comps and "*:" in comps  # dark features marked in contexts
    assert not (out / "tokens.npy").exists()
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["gaussian_surrogate_excess_kurtosis"]["n_residual_dims_above_max_abs"] == 32


def test_capacity_mode_scores_the_features_the_trained_sae_missed(tmp_path):
    out = tmp_path / "capacity"
    assert cli.run_all(["--preset", "planted", "--planted-mode", "capacity", "--outputs", str(out),
                        *SMALL_FLAGS, "--sae-expansion", "1", "--sae-l0", "2", "--sae-train-tokens", "10000",
                        "--sae-train-samples", "40000", "--sae-batch-size", "256",
                        "--gaussian-control", "false"]) == 0
    truth = json.loads((out / "groundtruth.json").read_text())
    training = json.loads((out / "sae_training.json").read_text())
    assert training["arch"] == "topk" and training["d_sae"] == 32
    assert training["validation"]["fvu"] < 1.0
    assert "decoder" in truth["dark_rule"]
    n_dark = len(truth["dark_features"])
    assert 48 - 32 <= n_dark < 48  # 32 latents cannot cover 48 features
    assert truth["ICA"]["n_found"] >= 2 and truth["PCA"]["n_found"] == 0 and truth["random"]["n_found"] == 0
    assert truth["ICA"]["mean_max_abs_cos"] > truth["PCA"]["mean_max_abs_cos"] + 0.1
    assert "gaussian_control" not in json.loads((out / "statistics.json").read_text())


def test_planted_pipeline_with_the_torch_engine(tmp_path):
    out = tmp_path / "torch"
    assert cli.run_all(["--preset", "planted", "--outputs", str(out), *SMALL_FLAGS, "--ica-backend", "torch"]) == 0
    truth = json.loads((out / "groundtruth.json").read_text())
    assert truth["ICA"]["n_found"] == 8 and truth["ICA"]["n_false_discoveries"] == 0
    ica_info = json.loads((out / "ica.json").read_text())
    assert ica_info["backend"] == "torch" and ica_info["gaussian_control"]["n_stable"] == 0

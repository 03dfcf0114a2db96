"""Planted structure: sparse heavy-tailed sources under a known mixing, plus Gaussian noise.

Steps 03 and 04 run on it exactly as on real residuals; ICA must find every planted
direction (|cos| > 0.9) and PCA must not.
"""

from dataclasses import replace

import numpy as np
import pytest

from darkmatter import ica, stats, steps
from darkmatter.compare import unit_rows
from darkmatter.config import Config
from darkmatter.errors import DarkMatterError
from darkmatter.store import OutputStore

N, D, K = 20_000, 24, 6


def planted(seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    directions = unit_rows(rng.standard_normal((K, D)))
    sources = (rng.random((N, K)) < 0.1) * rng.exponential(size=(N, K))
    sources = (sources - sources.mean(0)) / sources.std(0)
    residual = sources @ directions + noise * rng.standard_normal((N, D))
    activations = residual + 2.0 * rng.standard_normal((N, D))
    return directions, residual.astype(np.float32), activations.astype(np.float32)


@pytest.fixture
def planted_run(tmp_path):
    truth, resid, acts = planted()
    cfg = replace(Config(), outputs=str(tmp_path), n_tokens=N, n_components=K)
    store = OutputStore(tmp_path)
    write_collection(store, cfg, resid, acts)
    return cfg, store, truth


def write_collection(store, cfg, resid, acts):
    """What steps 01-02 would leave: config, stamped setup/sae_stats, the two arrays."""
    with store.transaction():
        store.write_json("config.json", cfg.to_dict())
        steps._write_stamped(store, cfg, "setup.json", {"d_model": D})
        steps._write_stamped(store, cfg, "sae_stats.json", {"n_tokens": N})
        store.save_npy("residuals.npy", resid)
        store.save_npy("activations.npy", acts)


def best_cos(found, truth):
    """For each true direction, the largest |cos| to any found direction."""
    return np.abs(unit_rows(truth) @ unit_rows(found).T).max(1)


def test_ica_recovers_every_planted_direction_and_pca_does_not(planted_run):
    cfg, store, truth = planted_run
    steps.step3_diagnostics(cfg, store)
    steps.step4_ica(cfg, store)
    diag = store.read_json("diagnostics.json")
    assert diag["residual_is_non_gaussian"]
    ica_cos = best_cos(store.load_npy("ica_directions.npy", mmap=False), truth)
    pca_cos = best_cos(store.load_npy("pca_components.npy", mmap=False)[:K], truth)
    assert ica_cos.min() > 0.9, ica_cos
    assert (pca_cos > 0.9).sum() <= 1 and pca_cos.mean() < 0.8, pca_cos
    report = store.read_json("ica.json")
    assert report["n_stable"] == K and report["all_converged"]
    sources = store.load_npy("ica_activations.npy")
    assert (sources.mean(0) ** 2).max() < 1e-6
    from scipy.stats import kurtosis

    assert kurtosis(sources, axis=0).min() > 5  # the planted sources are heavy-tailed


def test_gaussian_residual_gives_near_zero_kurtosis_verdict(tmp_path):
    rng = np.random.default_rng(5)
    resid = rng.standard_normal((N, D)).astype(np.float32)
    cfg = replace(Config(), outputs=str(tmp_path), n_tokens=N)
    store = OutputStore(tmp_path)
    write_collection(store, cfg, resid, resid * 2)
    steps.step3_diagnostics(cfg, store)
    diag = store.read_json("diagnostics.json")
    assert not diag["residual_is_non_gaussian"]
    assert abs(diag["residual_excess_kurtosis"]["mean"]) < 5 * diag["kurtosis_standard_error"]
    assert diag["fvu"] == pytest.approx(0.25, rel=0.02)


def test_matching_and_stability():
    rng = np.random.default_rng(0)
    a = unit_rows(rng.standard_normal((5, 10)))
    perm = np.array([3, 0, 4, 1, 2])
    b = -a[perm]
    got, cos = ica.match(a, b)
    np.testing.assert_array_equal(b[got], -a)
    np.testing.assert_allclose(cos, 1.0)
    assert ica.stability(a, [b, a]).min() == pytest.approx(1.0)


def test_whitening_more_components_than_the_rank_is_refused():
    pca = stats.PCA(np.array([3.0, 2.0, 1.0, 0.0, 0.0]), np.eye(5))
    assert ica.pca_whitening(pca, np.zeros(5), 3).explained == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-degenerate"):
        ica.pca_whitening(pca, np.zeros(5), 4)


def test_later_steps_refuse_files_of_a_differently_configured_run(planted_run):
    cfg, store, _ = planted_run
    steps.step3_diagnostics(cfg, store)
    other = replace(cfg, seed=7)  # as if 01 had been rerun with another seed
    with pytest.raises(DarkMatterError, match="differently configured run: rerun scripts/01_setup_and_load.py"):
        steps.step4_ica(other, store)
    diag = store.read_json("diagnostics.json")
    with store.transaction():
        store.write_json("diagnostics.json", {**diag, "run_id": "stale"})
    with pytest.raises(DarkMatterError, match="rerun scripts/03_diagnostics.py"):
        steps.step4_ica(cfg, store)
    assert not store.exists("ica.json")


def test_ica_fit_on_a_subsample_still_recovers_and_writes_every_token(planted_run):
    cfg, store, truth = planted_run
    cfg = replace(cfg, ica_max_tokens=6000)
    steps.step3_diagnostics(cfg, store)
    steps.step4_ica(cfg, store)
    assert store.read_json("ica.json")["n_fit_tokens"] == 6000
    assert store.load_npy("ica_activations.npy").shape == (N, K)
    assert best_cos(store.load_npy("ica_directions.npy", mmap=False), truth).min() > 0.9

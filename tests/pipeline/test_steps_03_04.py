"""Steps 03 and 04 on planted structure: sparse heavy-tailed sources under a known mixing, plus
Gaussian noise, written as if steps 01-02 had collected them. ICA must find every planted
direction (|cos| > 0.9) and PCA must not; stale inputs are refused.
"""

import numpy as np
import pytest

from darkmatter.analysis.compare import unit_rows
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.config import Config, with_values
from darkmatter.pipeline.storage.store import OutputStore

from helpers import run_steps, write_collection

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
    cfg = with_values(Config(), dict(outputs=str(tmp_path), n_tokens=N, n_components=K))
    write_collection(cfg, resid, acts)
    return cfg, OutputStore(tmp_path), truth


def best_cos(found, truth):
    """For each true direction, the largest |cos| to any found direction."""
    return np.abs(unit_rows(truth) @ unit_rows(found).T).max(1)


def test_ica_recovers_every_planted_direction_and_pca_does_not(planted_run):
    cfg, store, truth = planted_run
    run_steps(cfg, 3, 4)
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
    cfg = with_values(Config(), dict(outputs=str(tmp_path), n_tokens=N))
    store = OutputStore(tmp_path)
    write_collection(cfg, resid, resid * 2)
    run_steps(cfg, 3)
    diag = store.read_json("diagnostics.json")
    assert not diag["residual_is_non_gaussian"]
    assert "close to Gaussian" in diag["verdict"]
    assert abs(diag["residual_excess_kurtosis"]["mean"]) < 5 * diag["kurtosis_standard_error"]
    assert diag["fvu"] == pytest.approx(0.25, rel=0.02)


def test_later_steps_refuse_files_of_a_differently_configured_run(planted_run):
    cfg, store, _ = planted_run
    run_steps(cfg, 3)
    other = with_values(cfg, dict(seed=7))  # as if 01 had been rerun with another seed
    with pytest.raises(DarkMatterError, match="differently configured run: rerun scripts/01_setup_and_load.py"):
        run_steps(other, 4)
    diag = store.read_json("diagnostics.json")
    with store.transaction():
        store.write_json("diagnostics.json", {**diag, "run_id": "stale"})
    with pytest.raises(DarkMatterError, match="rerun scripts/03_diagnostics.py"):
        run_steps(cfg, 4)
    assert not store.exists("ica.json")


def test_ica_fit_on_a_subsample_still_recovers_and_writes_every_token(planted_run):
    cfg, store, truth = planted_run
    cfg = with_values(cfg, dict(ica_max_tokens=6000))
    run_steps(cfg, 3, 4)
    assert store.read_json("ica.json")["n_fit_tokens"] == 6000
    assert store.load_npy("ica_activations.npy").shape == (N, K)
    assert best_cos(store.load_npy("ica_directions.npy", mmap=False), truth).min() > 0.9


def test_diagnostics_no_longer_depend_on_the_ica_cap(planted_run):
    """--max-components is owned by 04: changing it must not make 03's output stale."""
    cfg, store, _ = planted_run
    run_steps(cfg, 3)
    before = store.path("diagnostics.json").read_bytes()
    run_steps(with_values(cfg, dict(max_components=3, n_components=None)), 3, 4)
    assert store.path("diagnostics.json").read_bytes() == before
    ica = store.read_json("ica.json")
    assert ica["k"] == 3 and "k sweep" in ica["k_rule"] and [p["k"] for p in ica["k_sweep"]] == [3]

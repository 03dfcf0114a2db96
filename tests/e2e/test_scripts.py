"""Every numbered script end to end, as a subprocess, on a tiny local model whose SAE is trained by 01."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from darkmatter.analysis.directions import NULL, PCA, set_names
from darkmatter.pipeline import table
from darkmatter.pipeline.results import SCHEMA_VERSION

from helpers import REPO, TINY_D_MODEL, TINY_HOOK, TINY_RUN_K, TINY_RUN_TOKENS, leftovers, run_script

SCRIPTS = [s.script for s in table.steps()]
N_TOKENS, K = TINY_RUN_TOKENS, TINY_RUN_K
EXPECTED = ["config.json", "setup.json", "sae_training.json", "sae_history.json", "sae/cfg.json", "sae_best/cfg.json",
            "activations.npy",
            "residuals.npy", "tokens.npy", "token_index.npy", "sae_stats.json", "diagnostics.json",
            "residual_kurtosis.png", "residual_pca.png", "ica.json", "ica_directions.npy",
            "ica_activations.npy", "ica_mixing.npy", "ica_unmixing.npy", "similarity.json",
            "ica_sae_similarity.png", "linear_split.json", "causal.json", "causal_topm.png", "feature_bank.json",
            "components.md",
            "statistics.json", "dashboard/index.html", "dashboard/components/0.html", "ica_sae/cfg.json",
            "ica_vs_sae_kurtosis.png", "ica_dark_matter_results.json", "report.md", "timings.json"]


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    return tiny_run


def test_every_output_is_written(run_dir):
    missing = [name for name in EXPECTED if not (run_dir / name).exists()]
    assert not missing
    assert not leftovers(run_dir), "temporary files left"
    assert (run_dir / ".darkmatter" / "manifest.json").is_file()


def test_the_trained_sae_carries_saelens_metadata(run_dir):
    from sae_lens import SAE

    for folder in ("sae", "sae_best"):
        meta = SAE.load_from_disk(str(run_dir / folder)).cfg.metadata
        assert (meta.hook_name, meta.context_size, meta.prepend_bos) == (TINY_HOOK, 32, True), folder
        assert meta.model_name and meta.model_class_name == "HookedTransformer"
        assert meta.dataset_path.endswith("*.txt") and Path(meta.dataset_path).is_absolute()  # --text-files


def test_output_shapes_and_numbers(run_dir):
    acts = np.load(run_dir / "activations.npy")
    resid = np.load(run_dir / "residuals.npy")
    assert acts.shape == resid.shape == (N_TOKENS, TINY_D_MODEL) and acts.dtype == np.float32
    tokens = np.load(run_dir / "tokens.npy")
    index = np.load(run_dir / "token_index.npy")
    assert index.shape == (N_TOKENS, 2) and tokens.shape[1] == 32
    setup = json.loads((run_dir / "setup.json").read_text())
    assert (tokens[index[:, 0], index[:, 1]] != setup["hook"]["bos_id"]).all(), "a BOS position was analysed"
    assert (tokens[:, 0] == setup["hook"]["bos_id"]).all()

    collected = json.loads((run_dir / "sae_stats.json").read_text())
    stats = collected["metrics"]
    direct_fvu = ((resid.astype(np.float64) ** 2).sum()
                  / ((acts - acts.mean(0, dtype=np.float64)) ** 2).sum())
    assert stats["fvu"] == pytest.approx(direct_fvu, rel=1e-4)
    assert stats["fvu"] < 1.0, "the trained SAE does worse than predicting the mean"
    assert stats["mean_l0"] == pytest.approx(4.0)  # TopK k=4
    assert collected["bos_positions_excluded"] > 0
    tp = collected["throughput"]
    assert 0 < tp["seconds_model"] and 0 < tp["seconds_sae"]
    assert tp["seconds_model"] + tp["seconds_sae"] + tp["seconds_write"] <= tp["seconds_total"]
    assert tp["tokens_per_second_model"] == pytest.approx(N_TOKENS / tp["seconds_model"])
    assert tp["tokens_per_second_model"] > tp["tokens_per_second_model_and_sae"] > tp["tokens_per_second_end_to_end"]

    ica = json.loads((run_dir / "ica.json").read_text())
    assert ica["k"] == K and len(ica["seeds"]) == 1 + 2 * ica["stability_splits"] and ica["seeds"][0]["seed"] == 42
    assert ica["backend"] == "torch"  # the engine is the default
    for r in ica["seeds"]:  # convergence reported per seed
        assert r["n_iter"] >= 1 and r["final_change"] >= 0 and 0 <= r["n_settled"] <= K
        assert r["converged"] or r["stopped_on_stability"] or r["n_iter"] == ica["max_iter"]
    assert ica["control"]["max_iter"] == ica["max_iter"]  # the control gets the real fits' budget
    assert ica["reconstruction_variance_explained"] == pytest.approx(ica["pca_variance_kept"], abs=1e-3)
    directions = np.load(run_dir / "ica_directions.npy")
    sources = np.load(run_dir / "ica_activations.npy")
    assert directions.shape == (K, TINY_D_MODEL) and sources.shape == (N_TOKENS, K)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sources.std(0), 1.0, atol=0.05)  # unit-variance sources
    from scipy.stats import skew

    assert (skew(sources, axis=0) >= 0).all(), "sign convention: positive skew"
    mixing, unmixing = np.load(run_dir / "ica_mixing.npy"), np.load(run_dir / "ica_unmixing.npy")
    np.testing.assert_allclose(unmixing @ mixing, np.eye(K), atol=1e-3)

    sim = json.loads((run_dir / "similarity.json").read_text())
    assert list(sim["sets"]) == set_names()
    for name, s in sim["sets"].items():  # the ICA summary leaves out unsettled components
        left_out = sim["n_unsettled_excluded"] if name == "ICA" else 0
        assert s["above_high"] + s["between"] + s["below_low"] == K - left_out
    split = json.loads((run_dir / "linear_split.json").read_text())  # 06's linear/nonlinear split
    assert 0 < split["split"]["variance_predicted"] < 1 and -1 < split["split"]["norm_predicted"] <= 1
    assert split["k"] == K and sum(split["counts"].values()) == K and len(split["components"]) == K
    assert split["split"]["n_train"] + split["split"]["n_test"] == N_TOKENS
    results = json.loads((run_dir / "ica_dark_matter_results.json").read_text())
    assert results["schema_version"] == SCHEMA_VERSION and results["linear_split"]["k"] == K
    assert [s["script"] for s in results["steps"]] == SCRIPTS
    assert all(s["timing"]["seconds"] > 0 for s in results["steps"][:-1])  # 08 is timed after it writes
    assert results["arrays"]["residuals.npy"]["shape"] == [N_TOKENS, TINY_D_MODEL]
    report = (run_dir / "report.md").read_text()
    assert "residual_pca.png" in report and "ica_activations.npy" in report
    comps = json.loads((run_dir / "feature_bank.json").read_text())["components"]
    assert len(comps) == K and "[[" in comps[0]["top"][0]["context"]
    for c in comps:  # top contexts: one per document, largest first, each token's value beside it
        top = c["top"]
        assert 5 <= len(top) <= 20 and len({e["unit"] for e in top}) == len(top)
        assert [e["activation"] for e in top] == sorted((e["activation"] for e in top), reverse=True)
        e = top[0]
        assert e["tokens"][e["at"]] == e["token"] and e["values"][e["at"]] == pytest.approx(e["activation"])
        assert sum(c["histogram"]["counts"]) == N_TOKENS and c["causal"]["tested"]  # --causal-components all
        assert set(c["causal"]["add_back"]) == {"share", "se", "clusters"} and c["causal"]["versus_null"]
    assert comps[0]["logit_lens"]["top"] and comps[0]["causal"]["output_shift"][0]["up"]
    causal = json.loads((run_dir / "causal.json").read_text())["table"]
    # random weights: splicing x̂ in need not cost loss on the held-out documents (then the gap shares are NaN)
    assert causal["n_sequences"] == 16 and 8 <= causal["n_documents"] <= 16
    assert sorted(causal["tested"]) == list(range(K))
    assert np.isfinite(causal["loss_recovered"]) and causal["saelens_positions"] >= causal["n_positions"]
    assert len(causal["components"]) == K and len(causal["top_m"]) == len([1, 3])
    assert causal["baseline_draws"] == {NULL: 10, PCA: 1}


def _without_wall_times(data: bytes) -> bytes:
    """ica.json without the k sweep's wall times (seconds differ run to run; nothing else may)."""
    doc = json.loads(data)
    for point in doc["k_sweep"]:
        point.pop("seconds_fit")
        point.pop("seconds_control")
    return json.dumps(doc).encode()


def test_rerunning_a_step_gives_the_same_files(run_dir, tmp_path):
    before = {name: (run_dir / name).read_bytes() for name in
              ("diagnostics.json", "ica_directions.npy", "ica_activations.npy", "ica.json")}
    again = tmp_path / "run"  # a copy: the session's run is read by other tests meanwhile
    shutil.copytree(run_dir, again, symlinks=True)
    run_script("03_diagnostics.py", "--outputs", str(again))
    run_script("04_run_ica.py", "--outputs", str(again))
    for name, data in before.items():
        now = (again / name).read_bytes()
        if name == "ica.json":
            now, data = _without_wall_times(now), _without_wall_times(data)
        assert now == data, f"{name} changed on rerun"


def test_a_step_may_tweak_its_own_setting(run_dir, tmp_path):
    import shutil

    out = tmp_path / "tweak"
    shutil.copytree(run_dir, out)
    run_script("04_run_ica.py", "--outputs", str(out), "--n-components", "3")
    assert np.load(out / "ica_directions.npy").shape == (3, TINY_D_MODEL)
    assert json.loads((out / "config.json").read_text())["ica"]["n_components"] == 3
    run_script("05_compare_sae.py", "--outputs", str(out))
    assert json.loads((out / "similarity.json").read_text())["k"] == 3


def test_contradicting_flag_stops_with_a_clear_message(run_dir):
    proc = run_script("02_collect_activations.py", "--outputs", str(run_dir), "--context-size", "64",
                      check=False)
    assert proc.returncode == 2
    assert "--context-size" in proc.stderr and "owned by 01_setup_and_load.py" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow(seconds=10)
def test_layers_trains_and_analyses_each_layer(tmp_path, tiny_model_dir, text_glob):
    out = tmp_path / "layers"
    run_script("run_pipeline.py", "--model", str(tiny_model_dir), "--hook-name", TINY_HOOK,
               "--layers", "2,6", "--text-files", text_glob, "--context-size", "32", "--n-tokens", "2000",
               "--sae-train-tokens", "2000", "--sae-train-samples", "6000", "--sae-batch-size", "256",
               "--sae-expansion", "4", "--sae-l0", "4", "--n-components", "4", "--batch-size", "8",
               "--stability-splits", "1", "--causal-windows", "16", "--completeness-runs", "0", "--outputs", str(out))
    table = json.loads((out / "layers_summary.json").read_text())["layers"]
    assert [(r["layer"], r["hook_name"]) for r in table] == [(2, "blocks.2.hook_resid_pre"),
                                                            (6, "blocks.6.hook_resid_pre")]
    acts = [np.load(out / f"layer_{layer:02d}" / "activations.npy") for layer in (2, 6)]
    assert not np.allclose(acts[0], acts[1])  # different hooks really were read
    for layer in (2, 6):
        cfg = json.loads((out / f"layer_{layer:02d}" / "config.json").read_text())
        assert cfg["source"]["hook_name"] == f"blocks.{layer}.hook_resid_pre"
        assert (out / f"layer_{layer:02d}" / "sae" / "cfg.json").exists()
    assert all(0 < r["sae_fvu"] < 1 for r in table)
    assert "| 6 | `blocks.6.hook_resid_pre`" in (out / "layers_summary.md").read_text()
    assert (out / "layers_summary.png").stat().st_size > 0  # written with the table, in its transaction


def test_every_numbered_script_runs_its_step():
    """The three-line scripts themselves, as subprocesses: each answers --help as its own step."""
    for step in table.steps():
        proc = subprocess.run([sys.executable, f"scripts/{step.script}", "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: {step.script}"), proc.stdout[:80]

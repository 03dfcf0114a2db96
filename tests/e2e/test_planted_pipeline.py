"""The whole pipeline on planted dark matter (known answer), in both modes, the same activations
read back as a cached source, and the full ``--preset planted`` run pinned to its numbers."""

import json

import numpy as np
import pytest

from darkmatter.analysis.directions import ICA, NULL, set_names
from darkmatter.pipeline import cli
from darkmatter.sources import planted

SMALL = planted.PlantedSpec(d_model=32, n_features=48, n_withheld=8, magnitude_sigma=0.3, seed=42)
SMALL_FLAGS = ["--planted-d-model", "32", "--planted-features", "48", "--planted-withheld", "8",
               "--n-tokens", "20000", "--stability-splits", "1", "--completeness-runs", "1"]
BASELINES = set_names()[1:]


@pytest.fixture(scope="module")
def small_run(small_planted_run):
    return small_planted_run  # conftest.SMALL_PLANTED: the preset with SMALL_FLAGS


def test_planted_pipeline_end_to_end(small_run):
    out = small_run
    truth = json.loads((out / "groundtruth.json").read_text())
    assert truth["dark_features"] == SMALL.withheld().tolist()
    assert list(truth["sets"]) == set_names()
    assert truth["sets"][ICA]["n_found"] == 8 and truth["sets"][ICA]["n_false_discoveries"] == 0
    assert all(truth["sets"][b]["n_found"] == 0 for b in BASELINES)
    ica_info = json.loads((out / "ica.json").read_text())
    assert ica_info["backend"] == "torch" and ica_info["control"]["n_stable"] == 0
    assert ica_info["n_stable"] >= 8
    results = json.loads((out / "ica_dark_matter_results.json").read_text())
    assert results["groundtruth"]["sets"][ICA]["n_found"] == 8
    assert results["noise_floor"]["control_n_stable"] == 0
    bank = json.loads((out / "feature_bank.json").read_text())["components"]
    assert all(c["nearest_true_feature"] is not None for c in bank)
    assert any("*:" in e["context"] for c in bank for e in c["top"])  # dark features marked in contexts
    assert not (out / "tokens.npy").exists()
    diag = json.loads((out / "diagnostics.json").read_text())
    assert diag["gaussian_surrogate"]["n_residual_dims_above_max_abs"] == 32


def test_the_add_back_test_finds_exactly_the_features_the_readout_reads(small_run):
    """Known answer of the causal tests: the planted readout reads every other dark feature; only
    components that recover one of them close the gap beyond their matched-null part after Holm, and
    every one of them beats its null. (A matched-null part of this small subspace, which the dark
    features fill, itself closes ~13% of the gap, so the weakest read feature can miss Holm's
    threshold over ~18 tested components.)"""
    from darkmatter.sources.base import GroundTruth

    dark = SMALL.withheld()
    _, read = planted.readout(GroundTruth(SMALL.directions(), dark, ""))
    assert len(read) == 4
    truth = {c["component"]: c for c in json.loads((small_run / "groundtruth.json").read_text())["per_component"]}
    causal = json.loads((small_run / "causal.json").read_text())["table"]
    closes = {c["component"] for c in causal["components"] if c["closes_gap"]}
    reads = {i for i, t in truth.items() if t["nearest_true_feature"] in read and t["abs_cos"] > 0.9}
    assert len(reads) == 4 and closes <= reads and len(closes) >= 3
    assert all(causal["components"][i]["versus_null"]["difference"] > 0 for i in reads)
    shares = [causal["components"][i]["add_back"]["share"] for i in reads]
    assert min(shares) > 0.1 and sum(shares) > 0.8  # together they close most of the readout's error
    others = [c["add_back"]["share"] for c in causal["components"] if c["component"] not in reads]
    # components along known features close a little (≤ 2%): the SAE's interference error along them leaks into
    # the readout's dual basis; none of them beats its null after Holm (closes ⊆ reads above)
    assert max(others) < 0.03
    assert causal["subspace_gap_closed"]["share"] > 0.95
    top = causal["top_m"][-1]  # the largest m below k: ICA beats the matched nulls at equal variance
    null = top["baselines"][NULL]
    assert top["ica"]["share"] > null["high"] and null["versus"]["p"] < 0.01


def test_cached_activations_give_the_same_decomposition(small_run, tmp_path):
    """The third source: the planted run's activations saved to disk plus its oracle SAE folder and its
    document ids (--activation-documents). 02-08 run without a model and reproduce the planted run's ICA
    exactly (restarts and bootstrap draw the same documents)."""
    x = np.load(small_run / "activations.npy")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "docs.npy", np.load(small_run / "token_index.npy")[:, 0])  # the planted documents
    out = tmp_path / "cached"
    assert cli.run_all(["--activations", str(tmp_path / "x.npy"), "--sae-path", str(small_run / "sae"),
                        "--activation-documents", str(tmp_path / "docs.npy"),
                        "--hook-name", "planted", "--max-norm-ratio", "none", "--n-tokens", "20000",
                        "--completeness-runs", "0",
                        "--stability-splits", "1", "--outputs", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["source"]["model_source"] == "cached"
    for name in ("residuals.npy", "ica_directions.npy", "ica_activations.npy"):
        np.testing.assert_array_equal(np.load(out / name), np.load(small_run / name), err_msg=name)
    assert not (out / "groundtruth.json").exists() and not (out / "tokens.npy").exists()
    bank = json.loads((out / "feature_bank.json").read_text())
    assert "no token ids" in bank["note"] and bank["components"][0]["logit_lens"] is None
    assert "no token ids" in (out / "components.md").read_text()


def test_capacity_mode_scores_the_features_the_trained_sae_missed(tmp_path):
    out = tmp_path / "capacity"
    assert cli.run_all(["--preset", "planted", "--planted-mode", "capacity", "--outputs", str(out),
                        *SMALL_FLAGS, "--sae-expansion", "1", "--sae-l0", "2", "--sae-train-tokens", "10000",
                        "--sae-train-samples", "40000", "--sae-batch-size", "256", "--completeness-runs", "0",
                        "--control", "false"]) == 0
    truth = json.loads((out / "groundtruth.json").read_text())
    training = json.loads((out / "sae_training.json").read_text())["result"]
    assert training["arch"] == "topk" and training["d_sae"] == 32
    assert training["validation"]["fvu"] < 1.0
    assert "decoder" in truth["dark_rule"]
    n_dark = len(truth["dark_features"])
    assert 48 - 32 <= n_dark < 48  # 32 latents cannot cover 48 features
    sets = truth["sets"]
    assert sets[ICA]["n_found"] >= 2 and all(sets[b]["n_found"] == 0 for b in BASELINES)
    assert sets[ICA]["mean_max_abs_cos"] > max(sets[b]["mean_max_abs_cos"] for b in BASELINES) + 0.1
    assert json.loads((out / "statistics.json").read_text())["control"] is None


@pytest.mark.slow(seconds=35)
def test_the_planted_preset_keeps_its_headline_numbers(tmp_path):
    """The full --preset planted run (100,000 tokens in ~500 documents with a heavy-tailed background, 128
    features, 16 withheld, 2 positional), pinned to its numbers (2026-12-04, after the norm-matched control,
    reappearance over 5 document splits, the effective-n k rule and positional-only exclusion): a change here is
    a change of behaviour. The design effect (≈ 2.3) lets n_eff support k ≤ 32, the candidate rule picks exactly
    the 16 dark features, and the two positional features are found, stable and excluded."""
    out = tmp_path / "preset"
    assert cli.run_all(["--preset", "planted", "--completeness-runs", "0", "--until", "5", "--outputs", str(out)]) == 0
    truth = json.loads((out / "groundtruth.json").read_text())  # (its numbers come from steps 01-05)
    sets = truth["sets"]
    assert sets[ICA]["n_found"] == 16 and sets[ICA]["n_dark"] == 16
    assert sets[ICA]["n_false_discoveries"] == 0
    assert sets[ICA]["mean_max_abs_cos"] == pytest.approx(0.9806, abs=2e-3)
    assert sets[ICA]["min_max_abs_cos"] == pytest.approx(0.966, abs=5e-3)
    assert sets["PCA"]["n_found"] == 0 and sets["PCA"]["mean_max_abs_cos"] == pytest.approx(0.516, abs=2e-3)
    assert sets["null"]["n_found"] == 0 and sets["random"]["n_found"] == 0
    ica = json.loads((out / "ica.json").read_text())
    assert [(p["k"], p["n_reproducible"]) for p in ica["k_sweep"]] == [(25, 25), (32, 29)]
    assert ica["k"] == 32 and ica["n_stable"] == 30 and ica["n_reproducible"] == 29 and ica["k_skipped"] == [48, 50, 64]
    assert ica["resampling_unit"] == "document" and 1.5 < ica["design_effect"] < 3.5
    assert ica["control"]["n_stable"] == 0
    # the matched null carries the background's heavy tails (excess kurtosis ≈ 8.7 in every direction) and the
    # features' norms: its largest source kurtosis is far above a Gaussian's and far below the dark sources'
    assert 5 < ica["floor"] < 30
    sae = json.loads((out / "sae_stats.json").read_text())["metrics"]
    assert sae["fvu"] == pytest.approx(0.3203, abs=5e-5)
    sim = json.loads((out / "similarity.json").read_text())
    assert sim["sets"][ICA]["mean_max_abs_cos"] == pytest.approx(0.497, abs=2e-3)
    assert sim["against_null"]["null_p99"] == pytest.approx(0.562, abs=5e-3)
    # the candidate rule's list is exactly the dark features ICA found; the positional features are excluded
    dark = {c["component"] for c in truth["per_component"] if c["is_dark"] and c["abs_cos"] > 0.9}
    assert sim["candidates"] == sorted(dark) and len(dark) == 16
    positional = [c for c in ica["components"] if c["artifact"]["positional"]]
    assert len(positional) == 2 and all(c["stable"] and c["above_floor"] for c in positional)
    assert all("positional artifact" in sim["components"][c["component"]]["not_candidate_because"] for c in positional)


def test_the_search_in_one_call_reproduces_steps_04_and_05(small_run):
    """The completeness step reruns "the unchanged procedure": analysis.search must give what steps
    03-05 gave on the same residual (same k, same verdicts, the same directions)."""
    from darkmatter.analysis.search import search
    from darkmatter.pipeline.steps.s04_ica import search_options
    from darkmatter.pipeline.validate import config_from_dict
    from darkmatter.sources.saes import decoder_rows, load_sae

    from helpers import context

    cfg = config_from_dict(json.loads((small_run / "config.json").read_text()), "config.json")
    ctx = context(cfg, 4)
    units, _ = ctx.units()
    resid = np.load(small_run / "residuals.npy", mmap_mode="r")
    W_dec = decoder_rows(load_sae("cpu", path=small_run / "sae"), resid.shape[1])
    positions = np.load(small_run / "token_index.npy")[:, 1]
    out = search(resid, units, positions, None, W_dec, search_options(ctx))
    ica_info = json.loads((small_run / "ica.json").read_text())
    sim = json.loads((small_run / "similarity.json").read_text())
    assert out.k == ica_info["k"] and out.candidates == sim["candidates"]
    assert [why for why in out.verdicts] == [c["not_candidate_because"] for c in sim["components"]]
    np.testing.assert_allclose(np.abs((out.directions * np.load(small_run / "ica_directions.npy")).sum(1)), 1.0,
                               atol=1e-4)

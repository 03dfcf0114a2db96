"""The outputs store (atomic, all-or-nothing writes) and config resolution."""

import json

import numpy as np
import pytest

from darkmatter.config import PRESETS, build_parser, resolve_new, resolve_recorded
from darkmatter.errors import DarkMatterError
from darkmatter.store import OutputStore


def test_transaction_commits_all_files_together(tmp_path):
    store = OutputStore(tmp_path)
    with store.transaction():
        arr = store.open_npy("residuals.npy", (10, 3), np.float32)
        arr[:] = 1.5
        arr.flush()
        store.write_json("ica.json", {"k": 3})
        assert not store.exists("ica.json")  # staged, not yet visible
    assert store.read_json("ica.json") == {"k": 3}
    assert store.load_npy("residuals.npy").sum() == pytest.approx(45.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ica.json", "residuals.npy"]


def test_failed_transaction_leaves_nothing_and_keeps_old_files(tmp_path):
    store = OutputStore(tmp_path)
    with store.transaction():
        store.write_json("ica.json", {"k": 1})
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.write_json("ica.json", {"k": 2})
            store.save_npy("ica_directions.npy", np.zeros((2, 2)))
            raise RuntimeError("crash mid-step")
    assert store.read_json("ica.json") == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ica.json"]


def test_missing_input_names_the_script(tmp_path):
    with pytest.raises(DarkMatterError, match="run scripts/02_collect_activations.py first"):
        OutputStore(tmp_path).load_npy("residuals.npy")


def _args(*argv):
    return build_parser("test").parse_args(list(argv))


def test_presets_and_overrides():
    cfg = resolve_new(_args("--preset", "gpt2-small-res-jb"))
    assert cfg.model == "gpt2" and cfg.hook_name == "blocks.6.hook_resid_pre" and cfg.layer == 6
    assert cfg.n_tokens == 1_000_000 and cfg.context_size == 128 and cfg.seed == 42
    assert cfg.sae_release == "gpt2-small-res-jb" and cfg.neuronpedia_id == "gpt2-small/6-res-jb"
    local = resolve_new(_args("--preset", "gpt2-small-res-jb", "--sae-path", "/x"))
    assert local.sae_release is None and local.neuronpedia_id is None
    offline = resolve_new(_args())
    assert offline == PRESETS["smollm2-135m-local"] and offline.trains_sae


def test_recorded_config_rejects_contradictions_but_allows_own_fields():
    recorded = json.loads(json.dumps(resolve_new(_args("--n-tokens", "5000")).to_dict()))
    with pytest.raises(DarkMatterError, match="--n-tokens 7000"):
        resolve_recorded(_args("--n-tokens", "7000"), recorded, step=3, fix="rerun")
    assert resolve_recorded(_args("--n-tokens", "5000"), recorded, step=3, fix="").n_tokens == 5000
    assert resolve_recorded(_args("--n-components", "9"), recorded, step=4, fix="").n_components == 9
    assert resolve_recorded(_args("--device", "cpu"), recorded, step=6, fix="").device == "cpu"


@pytest.mark.parametrize("argv, message", [
    (("--preset", "nope"), "unknown preset"),
    (("--hook-name", "ln_final.hook_normalized"), "per-block hook"),
    (("--sae-release", "x"), "go together"),
    (("--n-tokens", "0"), "--n-tokens must be positive"),
])
def test_bad_flags(argv, message):
    with pytest.raises(DarkMatterError, match=message):
        resolve_new(_args(*argv))


def test_typed_none_is_kept_and_exclusive_sources_are_refused():
    assert resolve_new(_args("--max-norm-ratio", "none")).max_norm_ratio is None
    recorded = resolve_new(_args("--n-components", "50")).to_dict()
    assert resolve_recorded(_args("--n-components", "auto"), recorded, step=4, fix="").n_components is None
    with pytest.raises(DarkMatterError, match="exclude each other"):
        resolve_new(_args("--text-files", "*.txt", "--dataset", "x"))
    with pytest.raises(DarkMatterError, match="exclude each other"):
        resolve_new(_args("--sae-path", "p", "--sae-release", "r", "--sae-id", "i"))


def test_repeating_a_recorded_value_changes_nothing():
    gpt2 = resolve_new(_args("--preset", "gpt2-small-res-jb")).to_dict()
    again = resolve_recorded(_args("--hook-name", "blocks.6.hook_resid_pre"), gpt2, step=5, fix="")
    assert again.neuronpedia_id == "gpt2-small/6-res-jb"


def test_run_id_tracks_only_fields_up_to_the_step():
    from dataclasses import replace

    from darkmatter.config import run_id

    cfg = resolve_new(_args())
    tweaked = replace(cfg, n_components=7)
    assert run_id(cfg, 3) == run_id(tweaked, 3) and run_id(cfg, 4) != run_id(tweaked, 4)
    assert run_id(cfg, 1) != run_id(replace(cfg, seed=1), 1)

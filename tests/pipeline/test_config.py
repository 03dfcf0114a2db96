"""Config sections, presets and how typed flags resolve against the step table's ownership."""

import json

import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.config import FIELD_SECTION, SECTIONS, Config, flat, get, with_values
from darkmatter.pipeline.flags import parse
from darkmatter.pipeline.presets import PRESETS
from darkmatter.pipeline.resolve import config_from_dict, resolve_new, resolve_recorded, run_id


def given(*argv, step=1):
    return parse(list(argv), table.step(step) if step else None).given


def recorded(*argv):
    return json.loads(json.dumps(resolve_new(given(*argv)).to_dict()))


def test_presets_and_overrides():
    cfg = resolve_new(given("--preset", "gpt2-small-res-jb"))
    s = cfg.source
    assert s.model == "gpt2" and s.hook_name == "blocks.6.hook_resid_pre"
    assert cfg.collect.n_tokens == 1_000_000 and s.context_size == 128 and s.seed == 42
    assert s.sae_release == "gpt2-small-res-jb" and s.neuronpedia_id == "gpt2-small/6-res-jb"
    local = resolve_new(given("--preset", "gpt2-small-res-jb", "--sae-path", "/x"))
    assert local.source.sae_release is None and local.source.neuronpedia_id is None
    offline = resolve_new(given())
    assert offline == PRESETS["smollm2-135m-local"] and offline.trains_sae
    cached = resolve_new(given("--activations", "x.npy", "--sae-path", "s"))
    assert cached.source.model_source == "cached" and cached.source.text_files is None
    from_gpt2 = resolve_new(given("--preset", "gpt2-small-res-jb", "--activations", "x.npy"))
    assert from_gpt2.source.dataset is None and from_gpt2.source.neuronpedia_id == "gpt2-small/6-res-jb"


def test_only_typed_flags_count_and_none_is_a_value():
    assert given() == {}
    assert given("--n-components", "auto", step=4) == {"n_components": None}
    assert given("--max-norm-ratio=none") == {"max_norm_ratio": None}
    assert given("--nocontrol") == {"control": False}
    assert given("--control", "false", "--seed", "42") == {"control": False, "seed": 42}


def test_recorded_config_rejects_contradictions_but_allows_own_and_later_fields():
    rec = recorded("--n-tokens", "5000")
    with pytest.raises(DarkMatterError, match="--n-tokens 7000.*owned by 02_collect_activations.py: rerun "
                                              "scripts/02_collect_activations.py --n-tokens 7000"):
        resolve_recorded(given("--n-tokens", "7000", step=3), rec, table.step(3), "c.json")
    assert resolve_recorded(given("--n-tokens", "5000", step=3), rec, table.step(3), "").collect.n_tokens == 5000
    assert resolve_recorded(given("--n-components", "9", step=4), rec, table.step(4), "").ica.n_components == 9
    assert resolve_recorded(given("--n-components", "9", step=3), rec, table.step(3), "").ica.n_components == 9
    assert resolve_recorded(given("--device", "cpu", step=6), rec, table.step(6), "").run.device == "cpu"


def test_the_rerun_hint_names_the_owning_step():
    rec = recorded()
    with pytest.raises(DarkMatterError) as err:
        resolve_recorded(given("--n-components", "30", step=7), rec, table.step(7), "outputs/config.json")
    assert "owned by 04_run_ica.py" in str(err.value) and "01_setup" not in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (("--preset", "nope"), None),
    (("--hook-name", "ln_final.hook_normalized"), "per-block hook"),
    (("--sae-release", "x"), "go together"),
    (("--n-tokens", "0"), "--n-tokens must be positive"),
    (("--model-source", "cached"), "needs --activations"),
    (("--planted-withheld", "999", "--preset", "planted"), "--planted-withheld must lie in"),
    (("--planted-withheld", "128", "--preset", "planted"), "at least one known feature"),
    (("--planted-doc-length", "0", "--preset", "planted"), "need documents: pass --planted-doc-length"),
    (("--planted-topic-share", "0.005", "--preset", "planted"), "--planted-p-fire 0.01 must not exceed"),
    (("--activations", "x.npy", "--model-source", "transformer_lens"), "only by --model-source cached"),
    (("--tokenizer", "gpt2"), "describe --activations"),
    (("--corpus", "nope"), None),
])
def test_bad_flags(argv, message, capsys):
    if message is None:  # a Literal choice: argparse refuses it with one line and exit code 2
        with pytest.raises(SystemExit) as exc:
            given(*argv)
        assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
        return
    with pytest.raises(DarkMatterError, match=message):
        resolve_new(given(*argv))


def test_exclusive_sources_are_refused():
    with pytest.raises(DarkMatterError, match="exclude each other"):
        resolve_new(given("--text-files", "*.txt", "--dataset", "x"))
    with pytest.raises(DarkMatterError, match="exclude each other"):
        resolve_new(given("--sae-path", "p", "--sae-release", "r", "--sae-id", "i"))
    for other in (("--text-files", "*.txt"), ("--dataset", "x"), ("--activations", "a.npy")):
        with pytest.raises(DarkMatterError, match="--corpus and .* exclude each other|.* and --corpus exclude"):
            resolve_new(given("--corpus", "mixed-large", *other))


def test_a_typed_corpus_replaces_the_presets_text():
    assert resolve_new(given()).source.corpus == "mixed" and resolve_new(given()).source.dataset is None
    gpt2 = resolve_new(given("--preset", "gpt2-small-res-jb"))
    assert gpt2.source.dataset == "Skylion007/openwebtext"
    typed = resolve_new(given("--preset", "gpt2-small-res-jb", "--corpus", "mixed"))
    assert typed.source.dataset is None and typed.source.corpus == "mixed"
    cfg = resolve_new(given("--corpus", "python-docs"))
    assert run_id(cfg, 1) != run_id(resolve_new(given()), 1)  # the text is part of the run


def test_repeating_a_recorded_value_changes_nothing():
    gpt2 = recorded("--preset", "gpt2-small-res-jb")
    again = resolve_recorded(given("--hook-name", "blocks.6.hook_resid_pre", step=5), gpt2, table.step(5), "")
    assert again.source.neuronpedia_id == "gpt2-small/6-res-jb"


def test_run_id_tracks_only_fields_owned_up_to_the_step():
    cfg = resolve_new(given())
    tweaked = with_values(cfg, {"n_components": 7})
    assert run_id(cfg, 3) == run_id(tweaked, 3) and run_id(cfg, 4) != run_id(tweaked, 4)
    assert run_id(cfg, 1) != run_id(with_values(cfg, {"seed": 1}), 1)
    assert run_id(cfg, 8) == run_id(with_values(cfg, {"outputs": "x"}), 8)  # where the files go: no output changes
    # shared fields that change outputs count from the first step they change
    assert run_id(cfg, 1) != run_id(with_values(cfg, {"batch_size": 3}), 1)
    assert run_id(cfg, 1) == run_id(with_values(cfg, {"sae_chunk_size": 3}), 1)
    assert run_id(cfg, 2) != run_id(with_values(cfg, {"sae_chunk_size": 3}), 2)


def test_sections_flat_names_and_choices():
    cfg = Config()
    assert set(flat(cfg)) == set(FIELD_SECTION) and get(cfg, "n_tokens") == cfg.collect.n_tokens
    owned = {sec for s in table.steps() for sec in s.owns}
    assert owned | {"run"} == set(SECTIONS)  # every section but the shared one has an owner


def test_a_config_of_another_version_is_refused():
    with pytest.raises(DarkMatterError, match="another version.*01_setup_and_load.py"):
        config_from_dict({"n_tokens": 5}, "outputs/config.json")

"""--layers with a pretrained release: each layer's Neuronpedia id comes from SAELens's own directory
(the YAML in the installed package, offline), else from the given id with its layer rewritten."""

import pytest

from darkmatter.pipeline import cli, flags
from darkmatter.pipeline.resolve import resolve_new
from darkmatter.sources.saes import pretrained_neuronpedia_id

RELEASE = "gpt2-small-res-jb"


def test_saelens_directory_lists_the_ids_of_gpt2_small_res_jb():
    assert [pretrained_neuronpedia_id(RELEASE, f"blocks.{layer}.hook_resid_pre") for layer in (0, 6, 11)] == \
        ["gpt2-small/0-res-jb", "gpt2-small/6-res-jb", "gpt2-small/11-res-jb"]
    assert pretrained_neuronpedia_id(RELEASE, "blocks.99.hook_resid_pre") is None
    assert pretrained_neuronpedia_id("no-such-release", "blocks.0.hook_resid_pre") is None


def test_the_id_of_a_layer_comes_from_the_directory_else_the_given_id_rewritten():
    for layer in (0, 6, 11):
        got, how = cli.layer_neuronpedia_id(RELEASE, f"blocks.{layer}.hook_resid_pre", "mine/6-x", 6, layer)
        assert got == f"gpt2-small/{layer}-res-jb" and how.startswith("from SAELens's directory")
    got, how = cli.layer_neuronpedia_id("my-release", "blocks.11.hook_resid_pre", "gpt2-small/6-res-jb", 6, 11)
    assert got == "gpt2-small/11-res-jb" and "--neuronpedia-id gpt2-small/6-res-jb with layer 6 → 11" in how
    assert cli.layer_neuronpedia_id(None, None, "gpt2-small/16-res-jb", 6, 0)[0] is None  # 16 is not layer 6
    assert cli.layer_neuronpedia_id(None, None, "m/6-res_fs768-jb", 6, 10)[0] == "m/10-res_fs768-jb"
    got, how = cli.layer_neuronpedia_id("my-release", "blocks.0.hook_resid_pre", None, 6, 0)
    assert got is None and "SAELens lists none for my-release" in how


@pytest.mark.parametrize("extra_flags", [[], ["--neuronpedia-id", "gpt2-small/6-res-jb"]], ids=["preset", "given"])
def test_run_layers_passes_each_layer_its_id(tmp_path, monkeypatch, capsys, extra_flags):
    calls = []
    monkeypatch.setattr(cli, "_run_steps", lambda given, force, until: calls.append(given) or 0)
    given = flags.parse(["--preset", RELEASE, "--outputs", str(tmp_path / "out"), *extra_flags], None).given
    assert cli.run_layers(given, "0,6,11", until=1) == 0
    assert [(c["hook_name"], c["sae_id"], c["neuronpedia_id"]) for c in calls] == [
        (f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_pre", f"gpt2-small/{layer}-res-jb")
        for layer in (0, 6, 11)]
    assert resolve_new(calls[2]).source.neuronpedia_id == "gpt2-small/11-res-jb"  # what step 01 records
    out = capsys.readouterr().out
    assert "layer 11: blocks.11.hook_resid_pre" in out
    assert "Neuronpedia id gpt2-small/11-res-jb (from SAELens's directory for gpt2-small-res-jb/" in out

"""The GPT-2 preset's code path, with local stand-ins where the hub would be.

``HookedTransformer.from_pretrained``, ``SAE.from_pretrained`` and
``datasets.load_dataset`` are replaced by a tiny model built from config, an SAE
saved to a folder and an in-memory dataset; everything else is the real path.
"""

from __future__ import annotations

import json
import time

import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import cli, table
from darkmatter.pipeline.flags import parse
from darkmatter.pipeline.resolve import resolve_new
from darkmatter.sources import hub, models, saes

from helpers import TINY_HOOK


@pytest.fixture
def fake_hub(monkeypatch, tiny_model_dir, tiny_sae_dir):
    from pydoc_data.topics import topics

    import datasets
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    calls = {}

    def from_pretrained(name, **kw):
        calls["model"] = name
        return models._load_local_hooked(tiny_model_dir, kw.get("device", "cpu"), seed=0).model

    def sae_from_pretrained(release, sae_id, **kw):
        calls["sae"] = (release, sae_id)
        return SAE.load_from_disk(str(tiny_sae_dir), device=kw.get("device", "cpu"))

    def load_dataset(name, split=None, streaming=False):
        calls["dataset"] = (name, split, streaming)
        return [{"text": topics[k]} for k in sorted(topics)]

    monkeypatch.setattr(HookedTransformer, "from_pretrained", staticmethod(from_pretrained))
    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(sae_from_pretrained))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout_s=3.0: True)
    return calls


def test_gpt2_preset_runs_end_to_end_on_stand_ins(fake_hub, tmp_path, capsys):
    argv = ["--preset", "gpt2-small-res-jb", "--outputs", str(tmp_path), "--n-tokens", "1500",
            "--context-size", "32", "--batch-size", "8", "--n-components", "4"]
    for step in table.steps():
        assert cli.main(step.number, argv) == 0, capsys.readouterr().err
    assert fake_hub == {"model": "gpt2", "sae": ("gpt2-small-res-jb", "blocks.6.hook_resid_pre"),
                        "dataset": ("Skylion007/openwebtext", "train", True)}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["source"]["hook_name"] == TINY_HOOK == "blocks.6.hook_resid_pre"
    setup = json.loads((tmp_path / "setup.json").read_text())
    assert setup["sae_train_windows"] == 0 and setup["sae"]["source"] == "gpt2-small-res-jb/blocks.6.hook_resid_pre"
    assert setup["hook"]["split"] == "every document is analysed"
    sim = json.loads((tmp_path / "similarity.json").read_text())
    best = sim["components"][0]["best_feature"]
    assert sim["components"][0]["neuronpedia"] == f"gpt2-small/6-res-jb/{best}"
    assert "gpt2-small/6-res-jb/" in (tmp_path / "components.md").read_text()


def test_unreachable_hub_stops_at_once_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout_s=3.0: False)
    start = time.perf_counter()
    code = cli.main(1, ["--preset", "gpt2-small-res-jb", "--outputs", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "hub is unreachable" in err and "--preset smollm2-135m-local" in err
    assert time.perf_counter() - start < 30
    assert not list(tmp_path.iterdir())


def test_unreachable_hub_for_dataset(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout_s=3.0: False)
    from darkmatter.sources.text import hub_dataset

    with pytest.raises(DarkMatterError, match="dataset Skylion007/openwebtext.*smollm2-135m-local"):
        next(hub_dataset("Skylion007/openwebtext", "text"))


def test_decoder_orientation():
    import numpy as np

    W = np.zeros((100, 32), dtype=np.float32)
    assert saes.oriented_decoder(W, 32)[1] is False
    with pytest.warns(UserWarning, match="transposing"):
        fixed, transposed = saes.oriented_decoder(W.T, 32)
    assert transposed and fixed.shape == (100, 32)
    with pytest.raises(DarkMatterError, match="48 wide"):
        saes.oriented_decoder(W, 48)


def test_custom_flags_pick_the_local_model(tiny_model_dir):
    cfg = resolve_new(parse(["--model", str(tiny_model_dir)], table.step(1)).given)
    assert cfg.source.model_source == "local_hooked"


def test_model_cache_loads_once_inside_and_fresh_outside(tiny_model_dir):
    with models.model_cache():
        first = models.load_model("local_hooked", str(tiny_model_dir), "cpu")
        assert models.load_model("local_hooked", str(tiny_model_dir), "cpu") is first  # 01, 02, 06 share it
    assert models.load_model("local_hooked", str(tiny_model_dir), "cpu") is not first  # a lone script loads its own

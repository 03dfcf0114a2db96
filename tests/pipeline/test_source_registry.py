"""A new activation source is one class and one registration (pipeline/source_kinds.py): a dummy
kind registered here is a choice of --model-source, is inferred from --model, has its exclusive
flags checked, its local file fingerprinted into run_id, its capabilities honoured (no --layers
without a model) and runs steps 01-04 — with no other file naming it."""

import json

import numpy as np
import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import cli, flags, resolve, source_kinds
from darkmatter.pipeline.source_kinds import SourceKind, registered_source
from darkmatter.sources.cached import CachedSource

from helpers import TINY_D_MODEL, TINY_HOOK


def _open(cfg, device):
    s = cfg.source
    return CachedSource(s.model, s.hook_name, None, None, s.max_norm_ratio, split=cfg.trains_sae)


DUMMY = SourceKind("npy_rows", _open, has_model=False, claims_model=lambda model: model.endswith(".npy"),
                   local_inputs=lambda cfg: [("model", cfg.source.model)])


@pytest.fixture
def rows(tmp_path):
    """Heavy-tailed rows [3000, d_model] of the tiny model's width."""
    rng = np.random.default_rng(7)
    path = tmp_path / "rows.npy"
    np.save(path, (rng.standard_t(3, size=(3000, TINY_D_MODEL)) @ rng.normal(size=(TINY_D_MODEL, TINY_D_MODEL)))
            .astype(np.float32))
    return path


def test_a_registered_kind_is_a_choice_inferred_and_checked(rows, capsys):
    with registered_source(DUMMY):
        assert "npy_rows" in source_kinds.NAMES
        cfg = resolve.resolve_new(flags.parse(["--model", str(rows), "--hook-name", TINY_HOOK], None).given)
        assert cfg.source.model_source == "npy_rows" and source_kinds.of(cfg) is DUMMY
        cfg = resolve.resolve_new(flags.parse(["--model-source", "npy_rows", "--model", str(rows)], None).given)
        assert cfg.source.model_source == "npy_rows"
        with pytest.raises(DarkMatterError, match="--activations is read only by --model-source cached, not npy_rows"):
            resolve.resolve_new({"model": str(rows), "model_source": "npy_rows", "activations": str(rows)})
        assert source_kinds.sae_metadata(cfg.to_dict())["context_size"] is None  # no windows without a model
        assert cli.run_layers({"model": str(rows), "hook_name": TINY_HOOK}, "1,2") == 2
        assert "--layers needs a model; npy_rows activations have no layers" in capsys.readouterr().err
    assert "npy_rows" not in source_kinds.NAMES
    with pytest.raises(SystemExit):  # gone again: argparse refuses the choice
        flags.parse(["--model-source", "npy_rows"], None)


def test_a_registered_kind_runs_and_its_input_is_fingerprinted(rows, tiny_sae_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--model", str(rows), "--hook-name", TINY_HOOK, "--sae-path", str(tiny_sae_dir), "--n-tokens", "1500",
            "--n-components", "4", "--control", "false", "--stability-splits", "1", "--device", "cpu",
            "--outputs", str(out)]
    with registered_source(DUMMY):
        for step in (1, 2, 3, 4):
            assert cli.main(step, argv if step == 1 else ["--outputs", str(out)]) == 0, capsys.readouterr().err
        config = json.loads((out / "config.json").read_text())
        assert config["source"]["model_source"] == "npy_rows"
        recorded = config["inputs"]["model"]
        assert recorded["flag"] == "--model" and recorded["path"] == str(rows) and recorded["step"] == 1
        assert np.load(out / "ica_unmixing.npy").shape == (4, TINY_D_MODEL)
        np.save(rows, np.load(rows)[::-1].copy())  # the input changes after step 01 read it
        capsys.readouterr()
        assert cli.main(3, ["--outputs", str(out)]) == 2
        assert f"--model {rows} changed since scripts/01_setup_and_load.py read it" in capsys.readouterr().err

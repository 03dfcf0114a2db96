"""Step 02 resumes: Ctrl-C halfway, then a rerun with the same configuration, ends with the same bytes
as an uninterrupted run, without recomputing the batches collected before the last checkpoint."""

from __future__ import annotations

import shutil

import pytest

from darkmatter.pipeline import cli
from darkmatter.pipeline.storage import partial
from darkmatter.pipeline.storage.store import OutputStore
from darkmatter.sources.models import LoadedModel
from tests.helpers import TINY_HOOK

STEP_02_FILES = ("activations.npy", "residuals.npy", "token_index.npy", "tokens.npy", "sae_feature_moments.npy",
                 "sae_stats.json", "config.json")


@pytest.fixture
def setup_done(tmp_path, tiny_model_dir, tiny_sae_dir, text_glob):
    """Step 01 on the tiny model with a given SAE: 3,000 tokens are 13 batches of 8 windows of 32."""
    out = tmp_path / "base"
    args = ["--model", str(tiny_model_dir), "--hook-name", TINY_HOOK, "--sae-path", str(tiny_sae_dir),
            "--text-files", text_glob, "--context-size", "32", "--n-tokens", "3000", "--batch-size", "8",
            "--outputs", str(out)]
    assert cli.main(1, args) == 0
    return out


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock*"))
    cfg = OutputStore(dst).read_json("config.json")
    cfg["run"]["outputs"] = str(dst)
    OutputStore(dst).path("config.json").write_text(__import__("json").dumps(cfg))
    return dst


def test_an_interrupted_collection_resumes_to_the_same_bytes(setup_done, tmp_path, monkeypatch, capsys):
    whole, cut = _copy(setup_done, tmp_path / "whole"), _copy(setup_done, tmp_path / "cut")
    assert cli.main(2, ["--outputs", str(whole)]) == 0

    monkeypatch.setattr(partial, "CHECKPOINT_ROUNDS", 2)  # a checkpoint every second batch
    real = LoadedModel.activations
    calls = []

    def counted(self, tokens, hook_name, layer):
        calls.append(int(tokens[0, 1]))
        if len(calls) == 8 and interrupt:
            raise KeyboardInterrupt  # Ctrl-C during the 8th forward pass
        return real(self, tokens, hook_name, layer)

    monkeypatch.setattr(LoadedModel, "activations", counted)
    interrupt = True
    def listing():
        return sorted(p.name for p in cut.iterdir() if not p.name.startswith(".lock"))

    before = listing()
    assert cli.main(2, ["--outputs", str(cut)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert listing() == sorted([*before, ".collect-partial"])
    assert not (cut / "activations.npy").exists()  # the outputs are as they were before step 02

    interrupt, first_run = False, list(calls)
    calls.clear()
    assert cli.main(2, ["--outputs", str(cut)]) == 0
    said = capsys.readouterr().out
    assert "resuming step 02 from its checkpoint" in said
    # batches 0-5 were checkpointed (rounds of 2): the rerun starts at batch 6 and never redoes them
    assert len(calls) == 13 - 6 and calls[0] == first_run[6]
    assert not (cut / ".collect-partial").exists()
    for name in STEP_02_FILES:
        if name == "config.json":
            continue
        a, b = (OutputStore(o).path(name).read_bytes() for o in (whole, cut))
        if name == "sae_stats.json":  # the throughput figures are wall times; everything else matches
            import json

            ja, jb = json.loads(a), json.loads(b)
            ja.pop("throughput"), jb.pop("throughput")
            assert ja == jb
        else:
            assert a == b, name


def _interrupted_planted_collection(tmp_path, monkeypatch):
    """Step 01 of a small planted run (40,000 rows), then step 02 stopped by Ctrl-C in its 4th block,
    a checkpoint after every round; returns the outputs folder."""
    out = tmp_path / "planted"
    assert cli.main(1, ["--preset", "planted", "--planted-d-model", "16", "--planted-features", "24",
                        "--planted-withheld", "4", "--n-tokens", "40000", "--outputs", str(out)]) == 0
    monkeypatch.setattr(partial, "CHECKPOINT_ROUNDS", 1)
    from darkmatter.sources import planted

    real, seen = planted.block, []

    def block(spec, part, index, directions=None):
        seen.append(index)
        if index == 3 and len(seen) < 5:
            raise KeyboardInterrupt
        return real(spec, part, index, directions)

    monkeypatch.setattr(planted, "block", block)
    assert cli.main(2, ["--outputs", str(out)]) == 130
    return out


def test_a_checkpoint_of_another_configuration_is_discarded(tmp_path, monkeypatch, capsys):
    out = _interrupted_planted_collection(tmp_path, monkeypatch)
    assert (out / ".collect-partial").is_dir()
    capsys.readouterr()
    assert cli.main(2, ["--outputs", str(out), "--n-tokens", "30000"]) == 0  # another step-02 configuration
    said = capsys.readouterr().out
    assert "discarding" in said and "resuming" not in said
    assert OutputStore(out).load_npy("residuals.npy").shape == (30000, 16)
    assert not (out / ".collect-partial").exists()


@pytest.mark.parametrize("how", ["truncated", "batch-size"])
def test_a_damaged_checkpoint_or_another_batch_size_is_named_and_not_resumed(tmp_path, monkeypatch, capsys, how):
    """A truncated checkpoint is called unreadable (not "another configuration"); another
    --batch-size is another configuration (it is in the run_id of 01 and every later step)."""
    out = _interrupted_planted_collection(tmp_path, monkeypatch)
    states = sorted((out / ".collect-partial").glob("state.r0of1.g*.npz"))
    assert [p.name for p in states] == ["state.r0of1.g1.npz", "state.r0of1.g2.npz"]  # the last two are kept
    capsys.readouterr()
    if how == "truncated":
        for p in states:
            p.write_bytes(p.read_bytes()[:100])
        assert cli.main(2, ["--outputs", str(out)]) == 0
        assert "discarding" in (said := capsys.readouterr().out) and "no checkpoint common to every rank is readable" \
            in said
    else:  # the windows per batch are step 01's too (its SAE's training rows): refused, the checkpoint kept
        assert cli.main(2, ["--outputs", str(out), "--batch-size", "4"]) == 2
        assert "setup.json was written by a differently configured run" in capsys.readouterr().err
        assert states[-1].exists()

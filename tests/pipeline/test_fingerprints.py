"""Input fingerprints in config.json: a step refuses inputs that changed since an earlier step read
them, and run_pipeline.py redoes the steps whose inputs changed instead of skipping them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from darkmatter.pipeline import cli, table

from helpers import TINY_HOOK


@pytest.fixture()
def inputs(tmp_path, tiny_model_dir, tiny_sae_dir, text_glob):
    """Copies of the SAE and the text (so the test may change them) and the run's flags."""
    shutil.copytree(tiny_sae_dir, tmp_path / "sae")
    shutil.copytree(Path(text_glob).parent, tmp_path / "text")
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model_dir), "--hook-name", TINY_HOOK, "--sae-path", str(tmp_path / "sae"),
            "--text-files", str(tmp_path / "text" / "*.txt"), "--context-size", "32", "--n-tokens", "800",
            "--completeness-runs", "0", "--outputs", str(out)]
    return tmp_path, out, argv


def _first_three(monkeypatch):
    """run_pipeline.py over steps 01-03 only (the rest of the table is not what is tested here)."""
    steps = table.steps()
    monkeypatch.setattr(table, "steps", lambda: steps[:3])


def test_config_records_the_inputs_and_a_changed_text_is_refused_then_redone(inputs, capsys, monkeypatch):
    tmp, out, argv = inputs
    _first_three(monkeypatch)
    assert cli.run_all(argv) == 0
    recorded = json.loads((out / "config.json").read_text())["inputs"]
    assert {k: v["step"] for k, v in recorded.items()} == {"model": 1, "sae": 1, "text_files": 2}
    assert len(recorded["text_files"]["files"]) == 40 and set(recorded["sae"]["files"]) >= {
        "cfg.json", "sae_weights.safetensors"}
    capsys.readouterr()
    # unchanged: every step is skipped as before
    assert cli.run_all(argv) == 0
    assert capsys.readouterr().out.count("skipped, its outputs are current") == 3

    # a text file changes after step 02: step 03 refuses with the file and the step to rerun
    doc = tmp / "text" / "doc03.txt"
    doc.write_text(doc.read_text() + " one more sentence.")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli.main(3, ["--outputs", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "doc03.txt differs" in err[0] and "--text-files" in err[0]
    assert "rerun scripts/02_collect_activations.py" in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # run_pipeline.py keeps 01 (it read no text: the SAE is given) and redoes 02 and 03
    assert cli.run_all(argv) == 0
    said = capsys.readouterr().out
    assert "01_setup_and_load.py: skipped" in said
    assert "02_collect_activations.py: skipped" not in said and "03_diagnostics.py: skipped" not in said
    recorded = json.loads((out / "config.json").read_text())["inputs"]
    assert recorded["text_files"]["files"][str(doc)].split(":")[0] == str(doc.stat().st_size)
    assert cli.run_all(argv) == 0 and capsys.readouterr().out.count("skipped") == 3


def test_a_changed_sae_or_model_is_refused_by_later_steps(inputs, capsys, tiny_model_dir):
    tmp, out, argv = inputs
    assert cli.main(1, argv) == 0
    assert cli.main(2, ["--outputs", str(out)]) == 0
    capsys.readouterr()
    cfg = tmp / "sae" / "cfg.json"
    edited = json.loads(cfg.read_text())
    edited["metadata"]["dataset_path"] = "somewhere else"
    cfg.write_text(json.dumps(edited))
    assert cli.main(3, ["--outputs", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--sae-path" in err and "cfg.json differs" in err and "rerun scripts/01_setup_and_load.py" in err
    # step 01 reads it afresh, and the later steps' stamps then say that 02 is stale
    assert cli.main(1, argv) == 0
    capsys.readouterr()
    assert cli.main(3, ["--outputs", str(out)]) == 2
    assert "rerun scripts/02_collect_activations.py" in capsys.readouterr().err
    assert cli.main(2, ["--outputs", str(out)]) == 0 and cli.main(3, ["--outputs", str(out)]) == 0


def test_every_config_field_is_in_a_run_id_or_listed_as_changing_no_output():
    """Each field either changes the run_id of the step that first uses it (and every later step's),
    or is listed, with its reason, as changing no output: a resume or a skipped step can never
    mix two configurations."""
    import dataclasses

    from darkmatter.pipeline import table
    from darkmatter.pipeline.config import SECTIONS, Config
    from darkmatter.pipeline.resolve import NOT_IN_RUN_ID, SHARED_DATA_FIELDS, first_step_of, run_id

    base = Config()
    last = max(s.number for s in table.steps())
    for section in dataclasses.fields(base):
        owner = table.owner(section.name)
        for f in dataclasses.fields(getattr(base, section.name)):
            name = f.name
            if name in NOT_IN_RUN_ID:
                assert owner is None and name not in SHARED_DATA_FIELDS
                continue
            first = owner.number if owner else first_step_of(name)
            assert first is not None, f"{section.name}.{name} is in no run_id and not listed in NOT_IN_RUN_ID"
            value = getattr(getattr(base, section.name), name)
            other = _another_value(value, f.type)
            changed = dataclasses.replace(base, **{section.name: dataclasses.replace(
                getattr(base, section.name), **{name: other})})
            for n in range(1, last + 1):
                same = run_id(base, n) == run_id(changed, n)
                assert same == (n < first), f"{section.name}.{name}: run_id of step {n}"
    assert set(SECTIONS) >= {s.name for s in dataclasses.fields(base)}


def _another_value(value, annotation):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if value is None:
        return 3
    if isinstance(value, str):
        return value + "x"
    raise AssertionError(f"no other value for {value!r} ({annotation})")

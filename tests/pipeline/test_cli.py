"""The command line a new user meets: per-step help with the step's own flags first, choices
shown, other steps' flags hidden but accepted, a fast --help, one-line errors."""

import subprocess
import sys

import pytest

from darkmatter.pipeline import cli, flags, table

from helpers import REPO, run_script


def help_text(step):
    return flags.build_parser(table.step(step) if step else None).format_help()


def test_each_script_shows_its_own_flags_first_then_the_shared_ones():
    text = help_text(4)
    assert text.index("--n-components") < text.index("--outputs")
    assert "{torch,sklearn}" in text  # choices, from the Literal type
    for other in ("--planted-noise", "--sae-lr", "--model ", "--n-tokens"):
        assert other not in text, other
    assert "owned by 04_run_ica.py" in text and "run_pipeline.py --help" in text
    first = help_text(1)
    assert first.index("--model") < first.index("--outputs") < first.index("--n-components")
    assert "{smollm2-135m-local,smollm2-135m-2m,gpt2-small-res-jb,planted}" in first


def test_run_pipeline_help_lists_every_flag_and_layers():
    text = help_text(None)
    for f in ("--layers", "--model", "--n-tokens", "--n-components", "--n-top-contexts", "--outputs"):
        assert f in text, f
    assert all(s.script in text for s in table.steps())


def test_help_imports_nothing_heavy():
    code = ("import sys; sys.argv = ['04_run_ica.py', '--help']\n"
            "from darkmatter.pipeline.cli import main\n"
            "try:\n    main(4)\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'sae_lens', 'transformer_lens', 'sklearn', 'scipy') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--n-components" in proc.stdout


def test_other_steps_flags_are_accepted_and_checked(tmp_path):
    proc = run_script("03_diagnostics.py", "--outputs", str(tmp_path), "--n-tokens", "5", check=False)
    assert proc.returncode == 2 and "config.json is missing" in proc.stderr  # parsed, then stopped at the input


@pytest.mark.parametrize("text", ["", "a,b", "1,1", "-1"])
def test_bad_layers_are_one_line(text, capsys):
    assert cli.run_all(["--layers", text]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layers" in err[0]


def test_layers_refuse_sources_without_layers(capsys):
    assert cli.run_all(["--preset", "planted", "--layers", "0,1"]) == 2
    assert "no layers" in capsys.readouterr().err


def test_the_darkmatter_command_dispatches_to_the_table(monkeypatch, capsys):
    """``darkmatter run|step N|report|steps`` (pyproject's console script) runs what the scripts run."""
    from pathlib import Path

    from darkmatter.pipeline import table

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '\n[project.scripts]\n' in pyproject
    assert 'darkmatter = "darkmatter.pipeline.cli:console"' in pyproject.split("[project.scripts]")[1]
    calls = []
    monkeypatch.setattr(cli, "run_all", lambda argv: calls.append(("run", list(argv))) or 0)
    monkeypatch.setattr(cli, "main", lambda n, argv: calls.append((n, list(argv))) or 0)
    assert cli.console(["run", "--preset", "planted"]) == 0
    assert cli.console(["step", "4", "--n-components", "8"]) == 0
    assert cli.console(["report", "--outputs", "x"]) == 0
    assert calls == [("run", ["--preset", "planted"]), (4, ["--n-components", "8"]),
                     (table.last().number, ["--outputs", "x"])]
    assert cli.console(["steps"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in listed] == [s.script for s in table.steps()]
    for argv, said in ((["step", "99"], "needs a step number (1, 2, 3, 4, 5, 6, 7, 8), got '99'"),
                       (["step"], "got nothing"), (["frob"], "unknown command 'frob'"), ([], "no command")):
        assert cli.console(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and said in err[0]
    assert cli.console(["--help"]) == 0 and "darkmatter step N" in capsys.readouterr().out


def test_until_stops_the_pipeline_after_a_step(tmp_path, capsys):
    out = tmp_path / "out"
    small = ["--preset", "planted", "--planted-d-model", "16", "--planted-features", "24", "--planted-withheld", "4",
             "--n-tokens", "4000", "--outputs", str(out)]
    assert cli.run_all([*small, "--until", "2"]) == 0
    assert (out / "sae_stats.json").exists() and not (out / "diagnostics.json").exists()
    assert "03_diagnostics.py" not in capsys.readouterr().out
    assert cli.run_all([*small, "--until", "9"]) == 2
    assert capsys.readouterr().err.strip() == "error: --until 9 is not a step: choose one of 1, 2, 3, 4, 5, 6, 7, 8"

"""What a person does to a long run: Ctrl-C or SIGTERM halfway, a second run into the same folder,
files left by a killed run, rerunning the whole pipeline (current steps are skipped)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import cli, table
from darkmatter.pipeline.storage.folder_lock import LOCK_HOLDER
from darkmatter.pipeline.storage.store import OutputStore

SMALL = ["--preset", "planted", "--planted-d-model", "16", "--planted-features", "24", "--planted-withheld", "4",
         "--n-tokens", "6000", "--stability-splits", "1", "--causal-windows", "4", "--control", "false",
         "--completeness-runs", "0"]


def _snapshot(folder) -> dict[str, tuple[int, float]]:
    """Every output's size and time, and the store's manifest (its folder's own time moves with staging)."""
    paths = [p for p in folder.iterdir() if not p.name.startswith((".lock", ".darkmatter"))]
    return {p.name: (p.stat().st_size, p.stat().st_mtime) for p in [*paths, *folder.glob(".darkmatter/*")]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    assert cli.run_all([*SMALL, "--outputs", str(out)]) == 0
    return out


def test_a_rerun_skips_current_steps_and_force_reruns_them(run, capsys):
    before = _snapshot(run)
    assert cli.run_all([*SMALL, "--outputs", str(run)]) == 0
    said = capsys.readouterr().out
    assert said.count("skipped, its outputs are current") == len(table.steps())
    assert _snapshot(run) == before  # nothing rewritten
    # a step-04 flag: 01-03 stay, 04 and everything after it rerun
    assert cli.run_all([*SMALL, "--n-components", "6", "--outputs", str(run)]) == 0
    said = capsys.readouterr().out
    skipped = [s.script for s in table.steps() if f"{s.script}: skipped" in said]
    assert skipped == [s.script for s in table.steps() if s.number < 4]
    assert cli.run_all([*SMALL, "--n-components", "6", "--force", "--outputs", str(run)]) == 0
    assert "skipped" not in capsys.readouterr().out


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_step_leaves_the_outputs_as_they_were(run, how, monkeypatch, capsys):
    step = table.step(4)
    before = _snapshot(run)
    real = step.function()

    def interrupted(ctx):
        with ctx.store.transaction():
            ctx.store.write_text("ica.json", "half")  # staged, never committed
            ctx.store.open_npy("ica_activations.npy", (10, 3), "float32")
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            raise KeyboardInterrupt

    monkeypatch.setattr(table.Step, "function", lambda self: interrupted if self.number == 4 else real)
    assert cli.run_step(step, {"outputs": str(run)}) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted: 04_run_ica.py" in err and "Traceback" not in err
    assert _snapshot(run) == before
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def _hold(folder: str, ready, release) -> None:
    with OutputStore(folder).lock("holder"):
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, capsys):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(DarkMatterError, match=f"another run \\(pid {holder.pid} \\(holder\\)\\)"):
        with OutputStore(tmp_path).lock("second"):
            pass
    # the CLI says it in one line, exit 2, and writes nothing
    assert cli.run_all([*SMALL, "--outputs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "being written by another run" in err and err.count("\n") == 1
    os.kill(holder.pid, signal.SIGKILL)  # killed while holding it
    holder.join(10)
    with OutputStore(tmp_path).lock("after"):
        assert (tmp_path / LOCK_HOLDER).read_text().startswith(str(os.getpid()))
    assert not (tmp_path / LOCK_HOLDER).exists()
    assert not list(tmp_path.iterdir())  # a folder holding nothing else keeps no lock file


def test_only_the_stores_own_leftovers_of_a_killed_run_are_cleaned_up(tmp_path):
    dead = ctx_dead_pid()
    home = tmp_path / ".darkmatter"
    for name in (f"stage.{dead}", f"scratch.{dead}", f"stage.{os.getpid()}"):
        (home / name).mkdir(parents=True)
        (home / name / "residuals.npy").write_bytes(b"x" * 10)
    (home / f".commit.json.{dead}").write_text("{")  # a journal cut off while being written
    (tmp_path / "config.json").write_text("{}")  # a run folder
    users = [f".notes.tmp{dead}.txt", f".thesis.old{dead}", f".config.tmp{dead}.json", "keep.json"]
    for name in users:  # names that look like the old staged ones are the user's: never touched
        (tmp_path / name).mkdir() if "thesis" in name else (tmp_path / name).write_text("mine")
    with OutputStore(tmp_path).lock("test"):
        pass
    assert sorted(p.name for p in home.iterdir()) == [f"stage.{os.getpid()}"]  # a live process's stays
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".darkmatter", ".lock", "config.json", *users])


def ctx_dead_pid() -> int:
    """The PID of a process that has exited."""
    p = mp.get_context("fork").Process(target=lambda: None)
    p.start()
    p.join()
    return p.pid


def test_bad_ranges_of_the_new_flags_are_one_line_errors(tmp_path, capsys):
    for bad in (["--causal-windows", "-1"], ["--causal-null-draws", "0"], ["--context-window", "-2"]):
        assert cli.run_all([*SMALL, *bad, "--outputs", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and bad[0] in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def _one_error(err: str) -> bool:
    """One "error:" line (progress bars aside) and no traceback."""
    return sum(line.startswith("error:") for line in err.replace("\r", "\n").splitlines()) == 1 \
        and "Traceback" not in err


def test_a_full_disk_is_one_line_and_leaves_the_outputs(run, monkeypatch, capsys):
    import errno

    before = _snapshot(run)

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # the memmap of 04's sources cannot be reserved
    assert cli.run_step(table.step(4), {"outputs": str(run)}) == 2
    err = capsys.readouterr().err
    assert "no room for ica_activations.npy" in err and "MiB free" in err and _one_error(err)
    monkeypatch.undo()
    from darkmatter.pipeline.storage.store import OutputStore as Store

    def no_space(self, name, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Store, "write_json", no_space)  # ENOSPC anywhere else in a step
    assert cli.run_step(table.step(3), {"outputs": str(run)}) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and _one_error(err)
    assert _snapshot(run) == before and not [p.name for p in run.iterdir() if ".tmp" in p.name]


def test_a_corrupt_array_and_a_single_seed_are_one_line_errors(run, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(run, out)
    (out / "residuals.npy").write_bytes(os.urandom(4096))
    assert cli.run_step(table.step(3), {"outputs": str(out)}) == 2
    err = capsys.readouterr().err
    assert "residuals.npy is not a readable .npy" in err and "02_collect_activations.py" in err and _one_error(err)
    assert cli.run_all([*SMALL, "--stability-splits", "0", "--outputs", str(tmp_path / "one")]) == 2
    assert "--stability-splits must be at least 1" in capsys.readouterr().err


def test_arrays_must_match_their_json_and_flags_the_machine(run, tmp_path, capsys):
    import shutil

    import numpy as np

    out = tmp_path / "edited"
    shutil.copytree(run, out)
    np.save(out / "ica_directions.npy", np.load(out / "ica_directions.npy")[:3])  # k no longer what ica.json says
    assert cli.run_step(table.step(5), {"outputs": str(out)}) == 2
    err = capsys.readouterr().err
    assert "ica_directions.npy has shape (3," in err and "04_run_ica.py" in err and _one_error(err)
    np.save(out / "residuals.npy", np.load(out / "residuals.npy").astype(np.float16))
    assert cli.run_step(table.step(3), {"outputs": str(out)}) == 2
    err = capsys.readouterr().err
    assert "residuals.npy is float16, not float32" in err and _one_error(err)
    (tmp_path / "afile").write_text("x")
    cases = [(["--outputs", str(tmp_path / "afile")], "is a file, not a folder"),
             (["--device", "tpu", "--outputs", str(tmp_path / "d1")], "not a torch device"),
             (["--device", "cuda:7", "--outputs", str(tmp_path / "d2")], "--device cuda:7")]
    for argv, said in cases:
        assert cli.run_all([*SMALL, *argv]) == 2
        err = capsys.readouterr().err
        assert said in err and _one_error(err), argv
    assert (tmp_path / "afile").read_text() == "x" and not (tmp_path / "d1").exists()

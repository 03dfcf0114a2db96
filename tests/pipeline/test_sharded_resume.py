"""A sharded step 02 resumes: two gloo ranks under torchrun, one of them killed (SIGKILL) or the
whole job stopped (SIGTERM) once both ranks have checkpoints; the checkpoint is kept, the same
command resumes it and ends with the bytes of an uninterrupted sharded run. A stopped rank ends
the job within DARKMATTER_RANK_TIMEOUT with a line naming it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, TINY_HOOK

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DARKMATTER_CHECKPOINT_ROUNDS": "2"}
ARRAYS = ("activations", "residuals", "token_index")

pytestmark = pytest.mark.slow(seconds=20)  # torchrun: started first (conftest)


def _torchrun(out: Path, env: dict | None = None, monitor_s: float = 0.1) -> subprocess.Popen:
    """Step 02 on two gloo ranks. ``monitor_s``: how often torchrun polls its workers; once one dies it
    stops the others, so a test of what rank 0 says polls slowly enough for rank 0 to say it first."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "--monitor-interval", str(monitor_s),
                             "scripts/02_collect_activations.py", "--outputs", str(out)], cwd=REPO, env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The PID of torchrun's worker ``rank`` (its environment says RANK)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().split(") ")[1].split()[1]) != parent:
                continue
            if f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.npy"))}


@pytest.fixture(scope="module")
def setup_run(tmp_path_factory, tiny_model_dir, tiny_sae_dir, text_glob) -> Path:
    """Step 01 on the tiny model (one window per batch: ~190 batches, a checkpoint every 2 rounds)."""
    out = tmp_path_factory.mktemp("sharded01")
    proc = subprocess.run([sys.executable, "scripts/01_setup_and_load.py", "--model", str(tiny_model_dir),
                           "--hook-name", TINY_HOOK, "--sae-path", str(tiny_sae_dir), "--text-files", text_glob,
                           "--context-size", "32", "--n-tokens", "6000", "--batch-size", "1", "--outputs", str(out)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def uninterrupted(setup_run, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("sharded_ref") / "out"
    shutil.copytree(setup_run, out)
    proc = _torchrun(out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return _shard_bytes(out)


def _copy(setup_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(setup_run, out)
    return out


def _wait_for_checkpoints(out: Path, proc: subprocess.Popen) -> None:
    partial = out / ".collect-partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if all(len(list(partial.glob(f"state.r{r}of2.g*.npz"))) >= 1 for r in (0, 1)):
            gens = {int(p.name.split(".g")[1].split(".")[0]) for p in partial.glob("state.r*of2.g*.npz")}
            if max(gens) >= 5:
                return
        time.sleep(0.01)
    raise AssertionError(f"no checkpoints appeared (exit {proc.poll()})")


@pytest.mark.parametrize("how", ["sigkill-rank-1", "sigterm-job"])
def test_a_sharded_collection_resumes_to_the_bytes_of_an_uninterrupted_one(setup_run, uninterrupted, tmp_path, how):
    out = _copy(setup_run, tmp_path)
    proc = _torchrun(out, monitor_s=5.0)  # rank 0 notices the lost peer in well under a second
    _wait_for_checkpoints(out, proc)
    if how == "sigkill-rank-1":
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGTERM)  # a scheduler's stop: torchrun and both ranks
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if how == "sigkill-rank-1":  # rank 0 says it in one line (torchrun adds its own failure summary)
        assert len(errors) == 1 and "rank 0: rank 1 stopped answering" in errors[0]
    assert (out / ".collect-partial").is_dir() and list((out / ".collect-partial").glob("state.*.npz"))
    assert not (out / "sae_stats.json").exists()
    again = _torchrun(out)
    said, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "resuming step 02 from its checkpoint" in said + err
    assert "discarding" not in said + err
    assert _shard_bytes(out) == uninterrupted
    assert not (out / ".collect-partial").exists()


def test_a_checkpoint_of_another_number_of_ranks_is_kept_and_named(setup_run, tmp_path):
    out = _copy(setup_run, tmp_path)
    proc = _torchrun(out)
    _wait_for_checkpoints(out, proc)
    ranks = [_rank_pid(proc.pid, r) for r in (0, 1)]
    for pid in [*ranks, proc.pid]:  # the whole job killed outright (torchrun's workers are in their own groups)
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    proc.communicate(timeout=120)
    one = subprocess.run([sys.executable, "scripts/02_collect_activations.py", "--outputs", str(out)], cwd=REPO,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 2 and one.stderr.count("\n") == 1
    assert "written by 2 rank(s); this run has 1: rerun with 2" in one.stderr
    assert (out / ".collect-partial").is_dir()


def _gone(pid: int) -> bool:
    """The process has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(") ")[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def test_a_stopped_rank_ends_the_job_with_a_line_naming_it(setup_run, tmp_path):
    """Rank 0 notices within DARKMATTER_RANK_TIMEOUT, says which rank in one line and exits; how long
    torchrun then takes to end a stopped worker (SIGTERM stays pending on it) is torchrun's, so
    the test ends rank 1 itself once rank 0 is gone."""
    out = _copy(setup_run, tmp_path)
    proc = _torchrun(out, {**ENV, "DARKMATTER_RANK_TIMEOUT": "0.1"})  # 6 seconds
    _wait_for_checkpoints(out, proc)
    rank0, rank1 = _rank_pid(proc.pid, 0), _rank_pid(proc.pid, 1)
    assert rank0 is not None and rank1 is not None
    t0 = time.monotonic()
    os.kill(rank1, signal.SIGSTOP)
    try:
        while not _gone(rank0) and time.monotonic() - t0 < 90:
            time.sleep(0.1)
        waited = time.monotonic() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):  # torchrun may have killed it already
            os.kill(rank1, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert waited < 90, "rank 0 did not exit after its peer stopped"
    assert proc.returncode != 0
    line = next(line for line in err.splitlines() if "stopped answering" in line)
    assert "rank 0: rank 1 stopped answering" in line
    assert (out / ".collect-partial").is_dir()

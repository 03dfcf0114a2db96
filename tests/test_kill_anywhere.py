"""The kill-anywhere test at its CI size: 16 SIGKILLs over steps 01-08 of the planted preset and the
tiny model (random times and failpoints, several between two renames of a commit), each followed by a
rerun whose files must be byte-identical to an uninterrupted run's (benchmarks/kill_anywhere.py;
its long run, at 200+ points, is recorded in docs/commits.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow(seconds=90)
def test_a_run_killed_anywhere_ends_as_an_uninterrupted_one(tmp_path):
    report = tmp_path / "kill.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kill_anywhere.py"), "--points", "16",
                           "--configs", "planted,tiny", "--workdir", str(tmp_path / "work"), "--json", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert report.exists(), proc.stderr[-3000:]
    data = json.loads(report.read_text())
    summary, points = data["summary"], data["points"]
    failed = [p for p in points if not p["ok"]]
    assert not failed, json.dumps(failed[:3], indent=1)
    assert proc.returncode == 0
    assert summary["points"] == 16 and all(n >= 2 for n in summary["per_step"].values())  # every step, both configs
    assert summary["killed"] >= 12  # most points kill (a random time can fall after a short step ended)
    assert summary["between_two_renames"] >= 2
    assert {p["mode"] for p in points} == {"failpoint", "time"}
    assert summary["states_after_kill"]["mixed"] == 0
    assert {p["state_after_kill"] for p in points if p["killed"]} == {"old", "new"}  # both sides of the commit
    assert all(p["user_files_intact"] and p["clean"] for p in points)

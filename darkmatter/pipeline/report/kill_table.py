"""The kill-anywhere run's figures for docs/commits.md, generated from docs/runs/kill_anywhere.json
(written by ``benchmarks/kill_anywhere.py --json``)."""

from __future__ import annotations

import json
from pathlib import Path

from darkmatter.pipeline.report.mdtable import table


def kill_markdown(runs: Path) -> str:
    """The summary line and a per-step table of the long kill-anywhere run.

    Raises:
        FileNotFoundError: no docs/runs/kill_anywhere.json (run the benchmark with ``--json``).
    """
    data = json.loads((runs / "kill_anywhere.json").read_text())
    s, points = data["summary"], data["points"]
    rows = []
    for step in range(1, 9):
        mine = [p for p in points if p["step"] == step]
        states = [sum(p["state_after_kill"] == k for p in mine) for k in ("old", "new", "mixed")]
        rows.append([f"{step:02d}", len(mine), sum(p["killed"] for p in mine),
                     sum(p["mode"] == "failpoint" for p in mine), sum(p["between_two_renames"] for p in mine),
                     *states, sum(p["ok"] for p in mine)])
    head = (f"{s['points']} kill points over {', '.join(s['configs'])} (seed {s['seed']}), {s['date']} on "
            f"{s['machine']}: {s['killed']} killed a step (the rest fell after a short step had ended), "
            f"{s['between_two_renames']} between two renames of a commit; **{s['points'] - s['failed']} of "
            f"{s['points']} reruns byte-identical** to the uninterrupted run, {s['states_after_kill']['mixed']} "
            f"mixtures seen; {s['seconds']:,.0f} s in all ({s['seconds_reference']:,.0f} s for the references).")
    return head + "\n\n" + table(["step", "points", "killed", "at a failpoint", "between two renames",
                                  "left the old outputs", "left the new outputs", "mixed", "rerun identical"],
                                 rows) + "\n"

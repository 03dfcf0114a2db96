#!/usr/bin/env python
"""Kill-anywhere: SIGKILL a run at many points inside every step, rerun, and compare bytes.

The crash-consistency test databases run. For each configuration (``planted``: the planted preset,
small; ``tiny``: the tests' tiny HookedTransformer on local text, so step 02 has windows and 06
its causal tests) an uninterrupted reference runs steps 01-08 one at a time, and the folder is
copied after each step. Then, for every kill point:

1. the folder is put back as it was before step s (the reference's copy, at the same path, with
   a user's files beside and inside it that look like the store's own: ``.notes.tmp99999.txt``,
   ``.thesis.old31337/``);
2. step s runs in a forked process that is killed with SIGKILL, either at a random time inside
   the step or at the N-th failpoint (:func:`darkmatter.pipeline.storage.journal.failpoint`: the journal
   written, between two renames of a commit, a folder moved aside, the manifest, a checkpoint);
3. **all or nothing**: once the commit is settled (a reader's first act), every file is the
   reference's before step s or after it, never a mixture;
4. step s runs again, uninterrupted, and every file must be byte-identical to the reference's
   after step s (wall-clock fields aside: :data:`VOLATILE`), the store's own folder must hold only
   its manifest, and the user's files must be untouched.

Step 02 checkpoints every 2 rounds here (32 in a real run) so that kills inside it resume.
Each step runs in a child forked from this process after the heavy imports, so a point costs
the step's time twice, not an interpreter start.

    python benchmarks/kill_anywhere.py --points 200 --json docs/runs/kill_anywhere.json
    python benchmarks/kill_anywhere.py --points 16 --configs planted,tiny   # the CI size (tests/)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: JSON keys whose values are wall-clock or machine state, not results (and any key with "seconds").
VOLATILE = {"seconds", "seconds_fit", "seconds_control", "ram_free_gb", "peak_rss_mb", "throughput", "timing"}
SKIP = {"timings.json", ".lock", ".lock.pid", ".darkmatter"}
USER_FILES = {".notes.tmp99999.txt": "a user's notes", ".thesis.old31337/chapter1.txt": "a user's thesis"}

PLANTED = ["--preset", "planted", "--planted-d-model", "32", "--planted-features", "48", "--planted-withheld", "8",
           "--n-tokens", "6000", "--stability-splits", "1", "--causal-windows", "4", "--control", "false",
           "--completeness-runs", "1", "--null-draws", "5"]


def tiny_flags(inputs: Path) -> list[str]:
    from helpers import TINY_HOOK, make_tiny_model, write_text_files

    model = inputs / "tiny_model"
    if not (model / "weights.pt").exists():
        make_tiny_model(model)
    text = write_text_files(inputs / "text")
    return ["--model", str(model), "--hook-name", TINY_HOOK, "--text-files", text, "--context-size", "32",
            "--n-tokens", "2000", "--sae-train-tokens", "2000", "--sae-train-samples", "4000",
            "--sae-batch-size", "256", "--sae-expansion", "4", "--sae-l0", "4", "--n-components", "4",
            "--batch-size", "4", "--causal-windows", "8", "--causal-components", "all", "--completeness-runs", "0",
            "--stability-splits", "1", "--null-draws", "5"]


# ---- one step in a forked child ----------------------------------------------------------------------------
def run_step(step: int, argv: list[str], kill_at: int | None = None, kill_after: float | None = None,
             log: Path | None = None) -> tuple[int, float]:
    """Run step ``step`` in a forked child; returns (exit code, or -9 when killed; seconds)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: the step, then its exit code
        code = 1
        try:
            sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            from darkmatter.pipeline import cli
            from darkmatter.pipeline.storage import journal, partial

            partial.CHECKPOINT_ROUNDS = 2
            journal._labels = []  # type: ignore[attr-defined]
            os.environ["DARKMATTER_KILL_AT"] = str(kill_at or "")
            code = cli.main(step, argv)
            if log is not None:
                log.write_text(json.dumps(journal._labels))  # type: ignore[attr-defined]
        finally:
            os._exit(code)
    if kill_after is not None:
        deadline = t0 + kill_after
        while time.perf_counter() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), time.perf_counter() - t0
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0


def step_argv(step: int, flags: list[str], out: Path) -> list[str]:
    return [*flags, "--outputs", str(out)] if step == 1 else ["--outputs", str(out)]


# ---- folders ------------------------------------------------------------------------------------------------
def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE or "seconds" in k else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            return json.dumps(_masked(json.loads(data)), sort_keys=True).encode()
        except ValueError:
            return data
    if path.name == "report.md":  # its step table carries each step's seconds and peak RAM
        return b"\n".join(line for line in data.split(b"\n") if not line.startswith((b"| 0", b"| **total**")))
    return data


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → masked bytes), the store's own files aside."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[0] in SKIP or rel.as_posix() in USER_FILES or rel.parts[0] == ".thesis.old31337" or p.is_dir():
            continue
        out[rel.as_posix()] = _content(p)
    return out


def restore(snapshot: Path | None, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    if snapshot is None:
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        shutil.copytree(snapshot, out, symlinks=True)
        for rel, text in USER_FILES.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(text)
    for rel, text in USER_FILES.items():  # beside the run folder too
        (out.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (out.parent / rel).write_text(text)


def user_files_intact(out: Path, inside: bool) -> bool:
    places = [out.parent, out] if inside else [out.parent]
    return all((p / rel).is_file() and (p / rel).read_text() == text
               for p in places for rel, text in USER_FILES.items())


# ---- the reference and the points ---------------------------------------------------------------------------
def reference(name: str, flags: list[str], work: Path) -> dict[str, Any]:
    out, snaps = work / name / "out", work / name / "snapshots"
    shutil.rmtree(snaps, ignore_errors=True)
    restore(None, out)
    steps: dict[int, dict[str, Any]] = {}
    for s in range(1, 9):
        log = work / name / f"labels{s}.json"
        code, secs = run_step(s, step_argv(s, flags, out), log=log)
        if code != 0:
            raise SystemExit(f"{name}: the reference's step {s} exited {code}")
        shutil.copytree(out, snaps / str(s), symlinks=True, ignore=shutil.ignore_patterns(".lock*"))
        steps[s] = {"seconds": secs, "labels": json.loads(log.read_text())}
    return {"name": name, "flags": flags, "out": out, "snaps": snaps, "steps": steps}


def one_point(ref: dict[str, Any], step: int, mode: str, value: float) -> dict[str, Any]:
    out, snaps = ref["out"], ref["snaps"]
    before = snaps / str(step - 1) if step > 1 else None
    restore(before, out)
    argv = step_argv(step, ref["flags"], out)
    between = False
    if mode == "failpoint":
        code, _ = run_step(step, argv, kill_at=int(value))
        labels = ref["steps"][step]["labels"]
        where = labels[int(value) - 1]
        between = where == "rename" and int(value) < len(labels) and labels[int(value)] == "rename"
    else:
        code, _ = run_step(step, argv, kill_after=value)
        where = f"{value:.2f} s"
    from darkmatter.pipeline.storage import journal

    journal.settle(out)
    now = contents(out)
    old, new = contents(before) if before else {}, contents(snaps / str(step))
    differs = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    got_old = all(now.get(k) == old.get(k) for k in differs)
    got_new = all(now.get(k) == new.get(k) for k in differs)
    unchanged = all(now.get(k) == new.get(k) for k in set(new) - differs)
    consistent = (got_old or got_new) and unchanged
    rerun, _ = run_step(step, argv)
    identical = contents(out) == new
    home = out / journal.HOME
    clean = sorted(p.name for p in home.iterdir()) == [journal.MANIFEST] if home.exists() else False
    clean = clean and not (out / ".collect-partial").exists()
    intact = user_files_intact(out, inside=before is not None)
    mismatched = sorted(k for k in set(now) | set(new) if contents(out).get(k) != new.get(k))[:5]
    return {"config": ref["name"], "step": step, "mode": mode, "where": where, "between_two_renames": between,
            "killed": code == -signal.SIGKILL,
            "exit": code, "state_after_kill": "old" if got_old and not got_new else "new" if got_new else "mixed",
            "consistent": consistent, "rerun_exit": rerun, "identical": identical, "clean": clean,
            "user_files_intact": intact, "mismatched": mismatched if not identical else [],
            "ok": consistent and rerun == 0 and identical and clean and intact}


def plan(refs: list[dict[str, Any]], n: int, rng: random.Random) -> list[tuple[dict[str, Any], int, str, float]]:
    """``n`` points spread over every (configuration, step), alternately failpoints and random times;
    a failpoint between two renames of a commit is taken whenever a step has one."""
    cells = [(ref, s) for s in range(1, 9) for ref in refs]
    points = []
    for i in range(n):
        ref, s = cells[i % len(cells)]
        labels = ref["steps"][s]["labels"]
        # failpoints and random times alternate over steps and configurations, and swap on the next pass
        failpoint = (s + refs.index(ref) + i // len(cells)) % 2 == 0
        if failpoint and labels:
            between = [j + 1 for j, lab in enumerate(labels[:-1]) if lab == "rename" and labels[j + 1] == "rename"]
            pick = rng.choice(between) if between and (i // len(cells)) % 4 == 0 else rng.randint(1, len(labels))
            points.append((ref, s, "failpoint", float(pick)))
        else:
            points.append((ref, s, "time", rng.uniform(0.0, ref["steps"][s]["seconds"])))
    return points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--configs", default="planted,tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the summary and every point here")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch  # noqa: F401  (imported before forking: children start from here)

    from darkmatter.pipeline import cli  # noqa: F401

    t0 = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill_anywhere."))
    configs = {"planted": lambda: PLANTED, "tiny": lambda: tiny_flags(work / "inputs")}
    refs = [reference(name, configs[name](), work) for name in args.configs.split(",")]
    t_ref = time.perf_counter() - t0
    results = []
    for i, (ref, s, mode, value) in enumerate(plan(refs, args.points, random.Random(args.seed))):
        r = one_point(ref, s, mode, value)
        results.append(r)
        if not r["ok"]:  # kept for a look
            shutil.copytree(ref["out"], work / f"failed{i + 1}", symlinks=True, dirs_exist_ok=True)
        print(f"[{i + 1}/{args.points}] {r['config']} step {s:02d} {mode} @ {r['where']}: "
              f"{'killed' if r['killed'] else 'finished'}, {r['state_after_kill']}, "
              f"{'ok' if r['ok'] else 'FAILED ' + json.dumps({k: v for k, v in r.items() if k != 'ok'})}", flush=True)
    failed = [r for r in results if not r["ok"]]
    summary = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "points": len(results), "failed": len(failed), "killed": sum(r["killed"] for r in results),
        "between_two_renames": sum(r["between_two_renames"] for r in results),
        "at_failpoints": sum(r["mode"] == "failpoint" for r in results),
        "per_step": {str(s): sum(r["step"] == s for r in results) for s in range(1, 9)},
        "states_after_kill": {k: sum(r["state_after_kill"] == k for r in results) for k in ("old", "new", "mixed")},
        "seconds": round(time.perf_counter() - t0, 1), "seconds_reference": round(t_ref, 1),
        "configs": args.configs.split(","), "seed": args.seed}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "points": results}, indent=1) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

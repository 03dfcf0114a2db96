#!/usr/bin/env python
"""Where the pipeline's time and memory go. Prints tables; no assertions.

Two measurements:

  default      runs ``scripts/run_pipeline.py`` (the offline default unless you pass other
               flags after ``--``; ``--existing`` reads a finished run instead) into
               ``--outputs`` and prints each step's wall time and peak
               RAM (``timings.json``), then the floor: the model's forward passes (SAE-training
               activations in 01 and the collection in 02) plus SAE training, and the whole
               run as a multiple of it. 02's collection throughput (tokens/s for the model alone,
               the model with the SAE, and end to end) comes from ``sae_stats.json``.

  --memory N   steps 03 and 04 on synthetic residuals of N tokens × ``--d-model`` (float32
               memmaps written first), each step in its own process, sampling the process's
               anonymous resident memory (RssAnon: what is not the memmapped files' page cache)
               every 50 ms. The issue-4 target is ≤ 1.5 GB for 1M × 768.

    python benchmarks/bench_pipeline.py --outputs /tmp/bench_pipeline
    python benchmarks/bench_pipeline.py --memory 1000000 --outputs /tmp/bench_memory
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pipeline(outputs: str, extra: list[str], existing: bool = False) -> None:
    wall = None
    if not existing:
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "run_pipeline.py"), "--outputs", outputs, *extra],
                       check=True)
        wall = time.perf_counter() - t
    out = Path(outputs)
    timings = json.loads((out / "timings.json").read_text())
    training = json.loads((out / "sae_training.json").read_text()) if (out / "sae_training.json").exists() else {}
    sae_stats = json.loads((out / "sae_stats.json").read_text())
    tp = sae_stats.get("throughput") or {}
    training = training.get("result", {}) | {k: v for k, v in training.items() if k != "result"}
    from darkmatter.pipeline import table

    ORDER = [s.script for s in table.steps()]
    print("| step | seconds | share | peak RAM MB |\n|---|---|---|---|")
    total = sum(timings[s]["seconds"] for s in ORDER if s in timings)
    for s in ORDER:
        if s in timings:
            e = timings[s]
            print(f"| {s} | {e['seconds']:.1f} | {e['seconds'] / total:.0%} | {e['peak_rss_mb']:.0f} |")
    print(f"| all (sum of steps{'' if wall is None else f'; wall with the process start {wall:.1f}'}) | "
          f"{total:.1f} | | |")
    fwd = training.get("seconds_activations", 0.0) + tp.get("seconds_model", 0.0)
    train = training.get("seconds_training", 0.0)
    print(f"\nfloor: model forward passes {fwd:.1f} s (01 SAE-training activations "
          f"{training.get('seconds_activations', 0.0):.1f} s + 02 collection {tp.get('seconds_model', 0.0):.1f} s)"
          f" + SAE training {train:.1f} s = {fwd + train:.1f} s")
    print(f"forward passes: {fwd / total:.0%} of the run; forward + training: {(fwd + train) / total:.0%}; "
          f"the run takes {total / max(fwd + train, 1e-9):.2f}× the floor (target ≤ 1.3×)")
    if tp:
        n = sae_stats["metrics"]["n_tokens"]
        print(f"\n02 collection, {n:,} tokens: model {tp['tokens_per_second_model']:,.0f} tok/s, model + SAE "
              f"{tp['tokens_per_second_model_and_sae']:,.0f} tok/s, end to end "
              f"{tp['tokens_per_second_end_to_end']:,.0f}"
              f" tok/s (model {tp['seconds_model']:.1f} s, SAE {tp['seconds_sae']:.1f} s, writes "
              f"{tp['seconds_write']:.1f} s, total {tp['seconds_total']:.1f} s)")


def _synthetic(outputs: str, n: int, d: int, n_sparse: int = 40) -> None:
    """Residuals: Gaussian with a decaying spectrum plus ``n_sparse`` sparse heavy-tailed
    directions; activations = residuals × 2 + a shift. Written in chunks to float32 memmaps."""
    from darkmatter.pipeline.config import Config, with_values
    from darkmatter.pipeline.synthetic import seed_collection

    cfg = with_values(Config(), dict(outputs=outputs, n_tokens=n))
    rng = np.random.default_rng(0)
    scales = np.geomspace(1.0, 0.05, d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    dirs = q[:n_sparse] * 3.0

    def fill(acts, resid):
        for s in range(0, n, 65536):
            m = min(65536, n - s)
            r = (rng.standard_normal((m, d)) * scales) @ q
            r += (rng.laplace(size=(m, n_sparse)) * (rng.random((m, n_sparse)) < 0.05)) @ dirs
            resid[s:s + m] = r
            acts[s:s + m] = 2 * r + 1.0

    seed_collection(cfg, d, fill, "synthetic residuals for bench_pipeline --memory")


def _run_step(step: int, outputs: str, queue) -> None:
    from darkmatter.pipeline import table
    from darkmatter.pipeline.config import Config, with_values
    from darkmatter.pipeline.context import StepContext
    from darkmatter.pipeline.store import OutputStore

    n = int(np.load(Path(outputs) / "residuals.npy", mmap_mode="r").shape[0])
    cfg = with_values(Config(), dict(outputs=outputs, n_tokens=n))
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status_mb("RssAnon"))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    table.step(step).function()(StepContext(cfg=cfg, store=OutputStore(outputs), step=table.step(step)))
    seconds = time.perf_counter() - t
    done.set()
    th.join()
    queue.put({"step": step, "seconds": seconds, "peak_anon_mb": peak[0], "vmhwm_mb": _status_mb("VmHWM")})


def memory(outputs: str, n: int, d: int) -> None:
    t = time.perf_counter()
    _synthetic(outputs, n, d)
    print(f"synthetic residuals + activations: {n:,} × {d} float32 each "
          f"({2 * n * d * 4 / 2**30:.2f} GiB of memmaps), written in {time.perf_counter() - t:.0f} s")
    print("| step | seconds | peak anonymous RSS MB (beyond the memmaps) "
          "| VmHWM MB (page cache of the memmaps included) |")
    print("|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for step in (3, 4):
        q = ctx.Queue()
        p = ctx.Process(target=_run_step, args=(step, outputs, q))
        p.start()
        p.join()
        if p.exitcode != 0:
            print(f"| 0{step} | failed (exit {p.exitcode}) | | |")
            continue
        r = q.get()
        print(f"| 0{step} | {r['seconds']:.1f} | {r['peak_anon_mb']:.0f} | {r['vmhwm_mb']:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", default="/tmp/bench_pipeline")
    ap.add_argument("--memory", type=int, metavar="N", help="measure 03-04 memory on N synthetic tokens")
    ap.add_argument("--existing", action="store_true",
                    help="do not run the pipeline: report on the finished run in --outputs")
    ap.add_argument("--d-model", type=int, default=768)
    args, extra = ap.parse_known_args()
    if args.memory:
        memory(args.outputs, args.memory, args.d_model)
    else:
        pipeline(args.outputs, [a for a in extra if a != "--"], args.existing)


if __name__ == "__main__":
    main()

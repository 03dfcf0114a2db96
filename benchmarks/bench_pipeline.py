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
    python benchmarks/bench_pipeline.py --report benchmarks/out_of_core.json \
        --before benchmarks/out_of_core_before_fix.json   # --out-of-core's tables, before/after, cost model
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


def _synthetic(outputs: str, n: int, d: int, n_sparse: int = 40, window: int | None = None) -> None:
    """Residuals: Gaussian with a decaying spectrum plus ``n_sparse`` sparse heavy-tailed
    directions; activations = residuals × 2 + a shift. Written in chunks to float32 memmaps.
    ``window``: rewrite ``token_index.npy`` as (row // window, row % window), so the resampling
    units are windows of that many rows, as in a real collection (``seed_collection`` makes every
    row its own unit, which real data never has)."""
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
    if window:
        rows = np.arange(n, dtype=np.int64)
        np.save(Path(outputs) / "token_index.npy", np.stack([rows // window, rows % window], 1).astype(np.int32))


def _disk_bytes(folder: str) -> int:
    """Bytes allocated on disk by the files of ``folder`` (hidden scratch files and staging included)."""
    total = 0
    for dirpath, _, files in __import__("os").walk(folder):
        for f in files:
            try:
                total += (Path(dirpath) / f).stat().st_blocks * 512
            except FileNotFoundError:  # a scratch file removed while we looked
                pass
    return total


def _run_step(step: int, outputs: str, queue, overrides: dict | None = None) -> None:
    from darkmatter.pipeline import table
    from darkmatter.pipeline.config import Config, with_values
    from darkmatter.pipeline.context import StepContext
    from darkmatter.pipeline.storage.store import OutputStore

    n = int(np.load(Path(outputs) / "residuals.npy", mmap_mode="r").shape[0])
    cfg = with_values(Config(), dict(outputs=outputs, n_tokens=n) | (overrides or {}))
    peak = [0.0]
    disk = [_disk_bytes(outputs)]
    done = threading.Event()

    def sample() -> None:
        i = 0
        while not done.is_set():
            peak[0] = max(peak[0], _status_mb("RssAnon"))
            if i % 10 == 0:  # every 0.5 s: the folder's size, scratch files included
                disk[0] = max(disk[0], _disk_bytes(outputs))
            i += 1
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    table.step(step).function()(StepContext(cfg=cfg, store=OutputStore(outputs), step=table.step(step)))
    seconds = time.perf_counter() - t
    done.set()
    th.join()
    import os
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    queue.put({"step": step, "seconds": seconds, "cpu_s": use.ru_utime + use.ru_stime, "load": os.getloadavg()[0],
               "peak_anon_mb": peak[0], "vmhwm_mb": _status_mb("VmHWM"),
               "peak_disk_bytes": max(disk[0], _disk_bytes(outputs)), "disk_bytes_after": _disk_bytes(outputs)})


def _step_process(step: int, outputs: str, overrides: dict | None = None) -> dict | None:
    """Run one step in a fresh spawned process; its measurements, or None when it failed."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run_step, args=(step, outputs, q, overrides))
    p.start()
    p.join()
    return None if p.exitcode != 0 else q.get()


def memory(outputs: str, n: int, d: int) -> None:
    """03 and 04 at their defaults on ``_synthetic`` data with 128-row units."""
    t = time.perf_counter()
    _synthetic(outputs, n, d, window=128)  # rows as units would make 03's design effect n × 4 × d float64
    print(f"synthetic residuals + activations: {n:,} × {d} float32 each "
          f"({2 * n * d * 4 / 2**30:.2f} GiB of memmaps), written in {time.perf_counter() - t:.0f} s")
    print("| step | seconds | peak anonymous RSS MB (beyond the memmaps) "
          "| VmHWM MB (page cache of the memmaps included) |")
    print("|---|---|---|---|")
    for step in (3, 4):
        r = _step_process(step, outputs)
        if r is None:
            print(f"| 0{step} | failed | | |")
            continue
        print(f"| 0{step} | {r['seconds']:.1f} | {r['peak_anon_mb']:.0f} | {r['vmhwm_mb']:.0f} |", flush=True)


# ---- out of core: 03-04 at several n, step 04 in memory and streamed ------------------------------

#: --memory-gb of the two settings of step 04: everything in memory, everything streamed from disk.
SETTINGS = {"in memory": 1024.0, "streamed": 0.0}


def _ica_summary(outputs: str) -> dict:
    """Iterations, seconds and the unmixing's hash from the run's ica.json (one k)."""
    import hashlib

    d = json.loads((Path(outputs) / "ica.json").read_text())
    point = d["k_sweep"][0]
    ctrl = d.get("gaussian_control") or {"seeds": []}
    return {"k": d["k"], "seconds_fit": point["seconds_fit"], "seconds_control": point["seconds_control"],
            "iterations": [s["n_iter"] for s in d["seeds"]], "fit_tokens": [s["n_tokens"] for s in d["seeds"]],
            "control_iterations": [s["n_iter"] for s in ctrl["seeds"]], "n_settled": d["n_settled"],
            "n_stable": d["n_stable"],
            "unmixing_sha256": hashlib.sha256(np.load(Path(outputs) / "ica_unmixing.npy").tobytes()).hexdigest()}


def _drop_cache(path: Path) -> None:
    """Evict ``path``'s (clean) pages from the page cache, so the next read comes from disk."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def recompute_vs_memmap(outputs: str, k: int, chunk: int = 16384) -> dict:
    """One pass of what each streamed FastICA iteration would read, both ways, on a finished run:

    - recompute: read the residual memmap (n × d_model float32) and whiten each chunk, in float64
      as ``ica.whiten_rows`` does and in float32 with torch (the cheapest recompute);
    - memmap: read an n × k float32 memmap chunk by chunk as ``RowShard.blocks`` does (step 04's
      ``ica_activations.npy`` has the scratch z's shape), summing each block so every page is read.

    Each pass is timed cold (the file's pages evicted first) and warm (second pass, page cache)."""
    import torch

    from darkmatter.analysis import ica, stats
    from darkmatter.analysis.ica_engine import RowShard

    torch.set_num_threads(2)
    out = Path(outputs)
    resid = np.load(out / "residuals.npy", mmap_mode="r")
    z = np.load(out / "ica_activations.npy", mmap_mode="r")
    n = resid.shape[0]
    pca = stats.PCA(np.load(out / "pca_eigenvalues.npy"), np.load(out / "pca_components.npy"))
    white = ica.pca_whitening(pca, np.load(out / "residual_mean.npy"), k)
    w32 = torch.as_tensor(white.whitener.T, dtype=torch.float32)
    m32 = torch.as_tensor(white.mean, dtype=torch.float32)

    def whiten64() -> None:
        for s in range(0, n, chunk):
            white.apply(resid[s:s + chunk]).astype(np.float32)

    def whiten32() -> None:
        for s in range(0, n, chunk):
            (torch.as_tensor(np.asarray(resid[s:s + chunk])) - m32) @ w32

    def read_z() -> None:
        for b in RowShard(z, chunk=chunk).blocks():
            b.sum()

    res = {"n": n, "d_model": resid.shape[1], "k": k, "chunk": chunk}
    for name, fn, path in (("recompute_float64", whiten64, out / "residuals.npy"),
                           ("recompute_float32", whiten32, out / "residuals.npy"),
                           ("read_z_memmap", read_z, out / "ica_activations.npy")):
        _drop_cache(path)
        t = time.perf_counter()
        fn()
        cold = time.perf_counter() - t
        t = time.perf_counter()
        fn()
        res[name] = {"cold_s": cold, "warm_s": time.perf_counter() - t}
    return res


def out_of_core(root: str, sizes: list[int], d: int, overrides: dict, window: int, json_path: str,
                micro_sizes: set[int], settings: dict | None = None) -> dict:
    """Steps 03-04 at each n of ``sizes`` on synthetic data (``_synthetic``, units = windows of
    ``window`` rows), 04 once per :data:`SETTINGS` (or per ``settings``, a subset); each size's run
    folder is deleted when it is measured, and every one at the end even on failure. Writes the JSON
    after every measurement."""
    import os
    import shutil

    settings = SETTINGS if settings is None else settings
    record: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "d_model": d, "window": window,
                    "threads": os.environ.get("OMP_NUM_THREADS"), "nproc": os.cpu_count(),
                    "overrides": overrides, "settings": settings, "rows": [], "micro": []}

    def save() -> None:
        Path(json_path).write_text(json.dumps(record, indent=1))

    folders = []
    try:
        for n in sizes:
            folder = str(Path(root) / f"ooc_{n}")
            folders.append(folder)
            shutil.rmtree(folder, ignore_errors=True)
            t = time.perf_counter()
            _synthetic(folder, n, d, window=window)
            gen = time.perf_counter() - t
            print(f"\n{n:,} × {d}: synthetic arrays in {gen:.0f} s ({_disk_bytes(folder) / 2**30:.1f} GiB)",
                  flush=True)
            runs = [("03", None, 3, {})] + [("04", name, 4, {"memory_gb": gb}) for name, gb in settings.items()]
            for label, setting, step, extra in runs:
                r = _step_process(step, folder, overrides | extra)
                row = {**(r or {"failed": True}), "n": n, "step": label, "setting": setting, "generate_s": gen}
                if r is not None and step == 4:
                    row["ica"] = _ica_summary(folder)
                record["rows"].append(row)
                save()
                print(_row_text(row), flush=True)
            if n in micro_sizes:
                m = recompute_vs_memmap(folder, overrides["n_components"])
                record["micro"].append(m)
                save()
                print(json.dumps(m), flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        save()
    return record


def _row_text(r: dict) -> str:
    what = r["step"] + ("" if r["setting"] is None else f" {r['setting']}")
    if r.get("failed"):
        return f"| {r['n']:,} | {what} | failed | | | | | |"
    return (f"| {r['n']:,} | {what} | {r['seconds']:.1f} | {r['seconds'] / (r['n'] / 1e6):.1f} | "
            f"{r.get('cpu_s', float('nan')):.1f} | "
            f"{r['peak_anon_mb']:.0f} | {r['vmhwm_mb']:.0f} | {r['peak_disk_bytes'] / 1e9:.1f} |")


def print_out_of_core(record: dict) -> None:
    """The table of an ``out_of_core`` record (markdown)."""
    print("| rows | step (setting) | seconds | s per M rows | CPU s | peak RssAnon MB | VmHWM MB | peak disk GB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in record["rows"]:
        print(_row_text(r))
    for r in record["rows"]:
        if "ica" in r:
            i = r["ica"]
            print(f"- {r['n']:,} 04 {r['setting']}: fit {i['seconds_fit']:.1f} s, "
                  f"control {i['seconds_control']:.1f} s, "
                  f"iterations {i['iterations']} (control {i['control_iterations']}), {i['n_settled']} settled, "
                  f"{i['n_stable']} stable, unmixing sha256 {i['unmixing_sha256'][:12]}")
    for m in record["micro"]:
        print(f"- one pass at {m['n']:,} rows (d_model {m['d_model']}, k {m['k']}): " + ", ".join(
            f"{name} {m[name]['cold_s']:.2f} s cold / {m[name]['warm_s']:.2f} s warm"
            for name in ("recompute_float64", "recompute_float32", "read_z_memmap")))


def _growth(record: dict) -> dict:
    """Least-squares (intercept MB, MB per million rows) of peak RssAnon against n, per step and setting."""
    rows = [r for r in record["rows"] if not r.get("failed")]
    out = {}
    for step, setting in (("03", None), ("04", "in memory"), ("04", "streamed")):
        pts = [(r["n"] / 1e6, r["peak_anon_mb"]) for r in rows if r["step"] == step and r["setting"] == setting]
        if pts:  # a record may hold only some settings (--settings)
            out[(step, setting)] = _fit_line([p[0] for p in pts], [p[1] for p in pts])
    return out


def print_records(records: list[tuple[str, dict]]) -> None:
    """Peak RssAnon and CPU seconds of several records side by side (markdown, oldest first), then
    each record's fitted growth (MB + MB per million rows, bytes per row) and the 3M → 10M slope."""
    keyed = [(label, {(r["n"], r["step"], r["setting"]): r for r in rec["rows"] if not r.get("failed")})
             for label, rec in records]
    labels = [label for label, _ in records]
    print("| rows | step (setting) | " + " | ".join(f"{x} MB" for x in labels) + " | "
          + " | ".join(f"CPU s {x}" for x in labels) + " |")
    print("|---|---|" + "---|" * (2 * len(labels)))
    for key in sorted({k for _, rows in keyed for k in rows}, key=lambda k: (k[0], k[1], k[2] or "")):
        got = [rows.get(key) for _, rows in keyed]
        what = key[1] + ("" if key[2] is None else f" {key[2]}")
        print(f"| {key[0]:,} | {what} | " + " | ".join("–" if r is None else f"{r['peak_anon_mb']:.0f}" for r in got)
              + " | " + " | ".join("–" if r is None else f"{r.get('cpu_s', float('nan')):.1f}" for r in got) + " |")
    fits = [_growth(rec) for _, rec in records]
    print("\n| step (setting) | " + " | ".join(labels) + " | B/row fitted | B/row 3M → 10M |")
    print("|---|" + "---|" * (len(labels) + 2))
    for step, setting in (("03", None), ("04", "in memory"), ("04", "streamed")):
        what = step + ("" if setting is None else f" {setting}")
        lines = [f"{f[(step, setting)][0]:.0f} + {f[(step, setting)][1]:.1f}/M" if (step, setting) in f else "not run"
                 for f in fits]
        per_row = [f"{f[(step, setting)][1] * 1.048576:.0f}" if (step, setting) in f else "–" for f in fits]
        late = []
        for _, rows in keyed:
            r3, r10 = rows.get((3_000_000, step, setting)), rows.get((10_000_000, step, setting))
            late.append("–" if r3 is None or r10 is None
                        else f"{(r10['peak_anon_mb'] - r3['peak_anon_mb']) / 7 * 1.048576:.0f}")
        print(f"| {what} | " + " | ".join(lines) + f" | {' / '.join(per_row)} | {' / '.join(late)} |")


# ---- cost model: 100M tokens × d_model 4,096 on GPU nodes (estimates, not measurements) -----------

#: H200 anchors measured by bench_gpu.py / bench_ica.py (benchmarks/RESULTS.md, 2026-11-27).
H200_COLLECT_S_PER_M = 9.2  # 1M tokens × d_model 768 through model + SAE into memmaps, write-bound
H200_COLLECT_D = 768
H200_MOMENTS_S_PER_M = 1.5  # one moments pass over a 1M × 768 float32 memmap (float64 covariance on the GPU)
H200_FIT_S_PER_M = 2.5  # one engine fit at 1M × 100 (whitening on the host included) ...
H200_FIT_ITERS = 20  # ... of 20 iterations (17 full + 3 refine)
#: Assumed interconnect: NVLink 4 within a node, 400 Gb/s InfiniBand NDR per GPU across nodes.
NVLINK_GBS, IB_GBS, ALLREDUCE_LATENCY_S = 450.0, 50.0, 50e-6
#: Assumed forward pass of a 4,096-wide model (~8B parameters) to a mid-depth hook: ~7 GFLOP/token at
#: 40% of the H200's 989 dense bf16 TFLOP/s.
FORWARD_TOKENS_PER_S = 0.4 * 989e12 / 7e9
#: Peak bytes per row of finding the unit ids in ``unit_power_sums``: ``np.unique(units)``'s sorted copy
#: and mask (9 B/row, tracemalloc; RESULTS.md). It was 41 B/row with ``return_inverse=True`` before 659ccbb.
UNIQUE_B_PER_ROW = 9


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs (slope 0 with one point)."""
    if len(xs) < 2:
        return (ys[0] if ys else 0.0), 0.0
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(intercept), float(slope)


def cost_model(record: dict, n: float = 100e6, d: int = 4096, k: int = 100, seeds: int = 3, window: int = 128,
               chunk: int = 16384, iters: int = 50, more_micro: list | None = None) -> None:
    """Disk, RAM per process and wall time per step for ``n`` tokens × ``d`` on 1 node × 8 GPUs and
    on 4 nodes × 8 GPUs, from the measured record (CPU memory growth, streamed/in-memory ratio,
    recompute/memmap ratio) and the H200 anchors above. ``more_micro``: recompute/memmap passes of
    other records (``--before``), pooled with the record's for the fastest warm read of z. RAM per
    process follows the code: per-unit sums over at most ``resampling.MAX_UNITS`` groups, 03's design
    effect on at most ``s03_diagnostics.DEFF_COLUMNS`` dimensions. Prints markdown; estimates only."""
    rows = [r for r in record["rows"] if not r.get("failed")]
    if not rows:
        print("no measurements: no cost model")
        return
    f4, GB = 4, 1e9
    units = n / window
    disk = {
        "activations + residuals (float32)": 2 * n * d * f4,
        "tokens.npy (int32) + token_index.npy (int32 × 2)": n * 4 + n * 8,
        "ica_activations.npy (n × k float32)": n * k * f4,
        "scratch z (n × K, K = k) + control surrogate (n × k), during 04 only": 2 * n * k * f4,
    }
    # measured growth of peak RssAnon with n (MB per million rows), per step and setting
    growth = _growth(record)
    big = max(r["n"] for r in rows)
    t04 = {r["setting"]: r["seconds"] for r in rows if r["step"] == "04" and r["n"] == big}
    streamed_ratio = t04.get("streamed", float("nan")) / t04.get("in memory", float("nan"))
    print(f"\nCost model: {n / 1e6:,.0f}M tokens × d_model {d:,}, k = K = {k} (--n-components), {seeds} seeds + "
          f"control, units of {window} rows. Estimates from the measurements, not measurements.\n")
    print("| | 1 node × 8 GPUs | 4 nodes × 8 GPUs |\n|---|---|---|")
    for name, b in disk.items():
        print(f"| disk: {name} | {b / GB:,.1f} GB | {b / 4 / GB:,.1f} GB per node |")
    total = sum(disk.values())
    print(f"| disk: all | {total / GB:,.0f} GB | {total / 4 / GB:,.0f} GB per node |")
    from darkmatter.analysis.resampling import MAX_UNITS, N_BOOTSTRAP
    from darkmatter.pipeline.steps.s03_diagnostics import DEFF_COLUMNS

    groups = min(units, MAX_UNITS)  # units beyond MAX_UNITS are pooled into MAX_UNITS groups
    cols = min(d, DEFF_COLUMNS)  # 03's design effect: at most DEFF_COLUMNS residual dimensions
    deff_n = N_BOOTSTRAP
    # n-length int arrays, bytes per row, global on every rank (see RESULTS.md, "What holds memory")
    held_03 = 8  # units int64[n]
    held_04 = 8 + 8 + 4 * (seeds - 1)  # token_index int32[n, 2], units int64[n], restarts int64[n/2] each
    deff_rows = 8 + UNIQUE_B_PER_ROW  # the shuffled units int64[n] + np.unique's sorted copy and mask
    ram = {}
    for nodes in (1, 4):
        n_r = n / (8 * nodes)
        ram[nodes] = {
            "03 chunk buffers (≈ 5 float64 copies of a chunk)": 5 * chunk * d * 8,
            "03 covariance d² float64 (gram, cov, eigh: ×3)": 3 * d * d * 8,
            f"03 design effect: per-group power sums min(G, {MAX_UNITS:,}) × 4 × min(d, {DEFF_COLUMNS}) float64, "
            "block + shuffled": 2 * groups * 4 * cols * 8,
            f"03 design effect: 65,536-row chunks of min(d, {DEFF_COLUMNS}) columns (float32 copy, float64 x − "
            "shift, its power)": 65536 * cols * (4 + 8 + 8),
            f"03/04 bootstrap weights {deff_n} × min(G, {MAX_UNITS:,}), int64 then float64": deff_n * groups * 16,
            f"03 n-length int arrays: units ({held_03} B/row) + in the design effect the shuffled units and "
            f"np.unique's sorted copy and mask ({deff_rows} B/row); global on every rank":
                n * (held_03 + deff_rows),
            f"04 design effect: min(G, {MAX_UNITS:,}) × 4 × k float64, block + shuffled": 2 * groups * 4 * k * 8,
            f"04 n-length int arrays: token_index, units, {seeds - 1} restarts ({held_04} B/row, the whole step) + in "
            f"the design effect as in 03 ({deff_rows} B/row); global on every rank": n * (held_04 + deff_rows),
            "04 z rows of this rank (n/ranks × k float32; in memory if ≤ --memory-gb, else streamed)": n_r * k * f4,
            "04 k × k float64 (W, products), + k": (4 * k * k + k) * 8,
        }
    for name in ram[1]:
        a, b = ram[1][name], ram[4][name]
        print(f"| RAM per process: {name} | {a / GB:,.2f} GB | {b / GB:,.2f} GB |")
    for step in ("03", "04"):
        a, b = (sum(v for name, v in ram[x].items() if name.startswith(step) or name.startswith("03/04"))
                for x in (1, 4))
        extra = ", z counted once" if step == "04" else ""
        print(f"| RAM per process: {step}, every line above summed (an upper bound{extra}) | {a / GB:,.2f} GB | "
              f"{b / GB:,.2f} GB |")
    # read z (n × k float32) once, as a streamed iteration does: the measured warm seconds per element
    micro = (record.get("micro") or []) + (more_micro or [])
    z_s_per_elem = (min(m["read_z_memmap"]["warm_s"] / (m["n"] * m["k"]) for m in micro) if micro else float("nan"))
    rows_t = []
    for nodes in (1, 4):
        n_r = n / (8 * nodes)
        m_r = n_r / 1e6
        pass_s = H200_MOMENTS_S_PER_M * d / 768 * m_r  # one read of this rank's n_r × d float32 rows
        fits = 2 * (1 + (seeds - 1) * 0.5)  # seed 0 on all rows, later seeds on halves; the control the same
        ica = fits * iters * H200_FIT_S_PER_M / H200_FIT_ITERS * (k / 100) ** 2 * m_r
        link = NVLINK_GBS if nodes == 1 else IB_GBS
        allreduce = fits * iters * (ALLREDUCE_LATENCY_S + 2 * (k * k + k) * 8 / (link * GB))
        s04 = pass_s + ica + allreduce + pass_s  # whitening pass, fits, all-reduces, writing sources
        stream = fits * iters * n_r * k * z_s_per_elem  # the CPU-measured read of the z memmap, per iteration
        recompute = fits * iters * pass_s  # re-reading n_r × d residual rows every iteration instead
        rows_t.append((H200_COLLECT_S_PER_M * d / H200_COLLECT_D * m_r, n_r / FORWARD_TOKENS_PER_S, 4 * pass_s,
                       s04, ica, allreduce * 1e3, s04 + stream, s04 + recompute))
    labels = ("02 collection: writing activations + residuals (H200: 9.2 s per 1M × 768, write-bound, × d/768), s",
              "02 collection: model forward (assumed 7 GFLOP/token at 40% of 989 TFLOP/s), s",
              "03: 4 read passes of n/ranks × d at the H200 moments rate (1.5 s per 1M × 768), s",
              f"04, z in memory: whitening pass + FastICA + all-reduces + sources pass ({iters} iterations per fit), s",
              f"04 of which FastICA (H200: {H200_FIT_S_PER_M} s per {H200_FIT_ITERS}-iteration fit at 1M × 100, "
              "× (k/100)²), s",
              "04 of which all-reduces (k × k + k float64 per iteration), ms",
              "04, z streamed from the scratch memmap (+ one read of n/ranks × k per iteration at the CPU-measured "
              "page-cache rate), s",
              "04, z recomputed from the residual every iteration (+ one read of n/ranks × d per iteration), s")
    for i, label in enumerate(labels):
        a, b = rows_t[0][i], rows_t[1][i]
        print(f"| time: {label} | {a:,.1f} | {b:,.1f} |")
    if "in memory" in t04 and "streamed" in t04:
        print(f"\nmeasured on the CPU at {big:,} rows: 04 streamed / in memory = {streamed_ratio:.2f} (wall)")
    print("\nmeasured growth of peak RssAnon (intercept MB + MB per million rows, CPU, this record): " + "; ".join(
        f"{s}{'' if t is None else ' ' + t}: {a:.0f} + {b:.1f}/M" for (s, t), (a, b) in growth.items()))
    for m in record.get("micro", []):
        r = m["recompute_float32"]["cold_s"] / m["read_z_memmap"]["cold_s"]
        w = m["recompute_float32"]["warm_s"] / m["read_z_memmap"]["warm_s"]
        print(f"recompute z (float32) / read z memmap, one pass at {m['n']:,} × {m['d_model']} → {m['k']}: "
              f"{r:.1f}× cold, {w:.1f}× warm; bytes read {m['d_model'] / m['k']:.0f}×; at d_model {d} and k {k} "
              f"the bytes ratio is {d / k:.0f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", default="/tmp/bench_pipeline")
    ap.add_argument("--memory", type=int, metavar="N", help="measure 03-04 memory on N synthetic tokens")
    ap.add_argument("--existing", action="store_true",
                    help="do not run the pipeline: report on the finished run in --outputs")
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--out-of-core", metavar="N,N,...",
                    help="03-04 at these row counts, 04 in memory and streamed (--memory-gb 0); run folders "
                         "under --outputs are deleted afterwards")
    ap.add_argument("--n-components", type=int, default=64)
    ap.add_argument("--stability-splits", type=int, default=1)
    ap.add_argument("--ica-max-iter", type=int, default=200)
    ap.add_argument("--threads", type=int, help="OMP/BLAS/torch threads of the step processes (default: theirs)")
    ap.add_argument("--window", type=int, default=128, help="rows per resampling unit of the synthetic data")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help="with --out-of-core: which settings of step 04 to run, comma-separated names of "
                         f"{sorted(SETTINGS)} (default: all)")
    ap.add_argument("--micro", default="1000000", help="row counts at which to time recompute against memmap")
    ap.add_argument("--json", default="benchmarks/out_of_core.json", help="where --out-of-core writes its record")
    ap.add_argument("--report", metavar="JSON", help="print the tables (and the cost model) of a finished record")
    ap.add_argument("--before", metavar="JSON", nargs="+",
                    help="with --report: earlier records (oldest first), to compare peak RssAnon")
    args, extra = ap.parse_known_args()
    if args.threads:  # spawned step processes read these when they import numpy and torch
        import os

        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    if args.report:
        record = json.loads(Path(args.report).read_text())
        print_out_of_core(record)
        earlier = [(Path(p).stem, json.loads(Path(p).read_text())) for p in args.before or []]
        if earlier:
            print()
            print_records([*earlier, (Path(args.report).stem, record)])
        cost_model(record, more_micro=earlier[-1][1].get("micro") if earlier else None)
    elif args.out_of_core:
        overrides = {"n_components": args.n_components, "stability_splits": args.stability_splits,
                     "ica_max_iter": args.ica_max_iter}
        record = out_of_core(args.outputs, [int(x) for x in args.out_of_core.split(",")], args.d_model, overrides,
                             args.window, args.json, {int(x) for x in args.micro.split(",") if x},
                             {name: SETTINGS[name] for name in args.settings.split(",") if name})
        print()
        print_out_of_core(record)
        cost_model(record)
    elif args.memory:
        memory(args.outputs, args.memory, args.d_model)
    else:
        pipeline(args.outputs, [a for a in extra if a != "--"], args.existing)


if __name__ == "__main__":
    main()

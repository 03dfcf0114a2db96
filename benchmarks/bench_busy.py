#!/usr/bin/env python
"""The busy-machine cliff: FastICA iterations and a model forward, idle and beside a competing process.

Each configuration runs in its own process (so thread pools and OpenMP settings start fresh):

* ``engine``: FastICA fixed-point steps (``darkmatter.analysis.ica_engine``) on 200k × k
  whitened rows of heavy-tailed data (Laplace sources under a random rotation), timed per
  iteration over ``--iters`` steps;
* ``forward``: the offline default's model (SmolLM2-135M, GGUF from the pip package) from the
  tokens to ``blocks.15.hook_resid_pre`` on 4 windows of 128 tokens, timed per window.

The competitor is a separate process looping a 2-thread float64 numpy matmul (1024²), started
before the timed section and stopped after it; the machine's load is printed beside each row.
The slowdown is busy / idle per iteration (per window) for the same configuration, measured in
one run. A fair share of 2 cores with one 2-thread competitor is 2×.

Configurations: ``threads`` (torch threads; ``auto`` = :func:`darkmatter.threads.configure`) and
how idle OpenMP threads wait between parallel regions: ``GOMP_SPINCOUNT`` (libgomp's default is
300,000 spins before sleeping; the project sets 1,000) or ``OMP_WAIT_POLICY`` (``passive``: sleep
at once). ``--what fits`` times the project's way of running FastICA restarts: two fits side by
side, one thread each (:func:`darkmatter.analysis.ica.fit_seeds`), per iteration of one fit.

    python benchmarks/bench_busy.py                     # engine k = 25 and 47, forward; every config
    python benchmarks/bench_busy.py --what engine --k 25 --configs 2:spin300000,2:spin1000
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time

CHILD = r"""
import darkmatter  # first, as the scripts do: it sets GOMP_SPINCOUNT unless the environment has one
import json, os, sys, time
import numpy as np, torch
what, k, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from darkmatter import threads as th
if threads == "auto":
    th.configure()
else:
    torch.set_num_threads(int(threads))
if what in ("engine", "fits"):
    from concurrent.futures import ThreadPoolExecutor
    from darkmatter.analysis import ica_engine as E
    rng = np.random.default_rng(0)
    s = rng.laplace(size=(200_000, k)) * rng.lognormal(0, 0.5, size=(200_000, 1))
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    z = s @ q
    z = ((z - z.mean(0)) / z.std(0)).astype(np.float32)
    zt = E.as_shard(z, chunk=E.default_chunk("cpu"))
    W = E._sym_decorrelate(torch.as_tensor(rng.standard_normal((k, k))))
    for _ in range(3):
        E._update(zt, W)
    print("READY", flush=True); sys.stdin.readline()
    def steps(W):
        for _ in range(iters):
            W = E._update(zt, W)
        return W
    t = time.perf_counter()
    if what == "engine":
        steps(W)
        per = (time.perf_counter() - t) / iters
    else:
        with th.one_thread_per_task(), ThreadPoolExecutor(2) as pool:
            list(pool.map(steps, [W, W]))
        per = (time.perf_counter() - t) / (2 * iters)
else:
    from darkmatter.sources.models import load_model
    m = load_model("smollm2_gguf", "", "cpu")
    tok = torch.randint(0, 49152, (4, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.activations(tok, "blocks.15.hook_resid_pre", 15)
        print("READY", flush=True); sys.stdin.readline()
        t = time.perf_counter()
        for _ in range(iters):
            m.activations(tok, "blocks.15.hook_resid_pre", 15)
        per = (time.perf_counter() - t) / iters / 4
print(json.dumps({"per": per, "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}), flush=True)
"""


def _spin(stop: mp.Event) -> None:  # type: ignore[valid-type]
    os.environ["OMP_NUM_THREADS"] = "2"
    import numpy as np
    a = np.random.default_rng(1).standard_normal((1024, 1024))
    while not stop.is_set():  # type: ignore[attr-defined]
        a = a @ a
        a /= np.abs(a).max()


def measure(what: str, k: int, iters: int, threads: str, policy: str, busy: bool) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    else:
        env["OMP_WAIT_POLICY"] = policy.upper()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, what, str(k), str(iters), threads], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    while proc.stdout.readline().strip() != "READY":
        pass
    stop, comp = None, None
    if busy:
        # the competitor: its own process (spawned, so its numpy starts with 2 OpenMP threads)
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        comp = ctx.Process(target=_spin, args=(stop,))
        comp.start()
        time.sleep(2.0)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out = proc.stdout.read()
    proc.wait()
    if comp is not None and stop is not None:
        stop.set()
        comp.join()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", default="engine,fits,forward",
                   help="engine: one fit's steps on THREADS threads; fits: two fits side by side, one thread each "
                        "(per step of one fit); forward: the model to the hook (per window)")
    p.add_argument("--k", default="25,47", help="engine k values")
    p.add_argument("--iters", type=int, default=60, help="engine iterations timed (forward: passes / 10)")
    p.add_argument("--configs", default="2:spin300000,2:spin1000,2:passive",
                   help="THREADS:POLICY, THREADS a number or 'auto' (darkmatter.threads.configure); POLICY spinN "
                        "(GOMP_SPINCOUNT=N: 300000 is libgomp's default, 1000 the project's), active or passive "
                        "(OMP_WAIT_POLICY)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    print(f"# {platform.node()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}; competitor: one process, 2-thread numpy matmul loop")
    print("| what | k | threads | OMP wait policy | idle ms | busy ms | slowdown | load (busy) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for what in args.what.split(","):
        for k in ([int(v) for v in args.k.split(",")] if what != "forward" else [0]):
            for cfg in args.configs.split(","):
                threads, _, policy = cfg.partition(":")
                policy = policy or "spin1000"
                iters = args.iters if what != "forward" else max(2, args.iters // 10)
                idle = measure(what, k, iters, threads, policy, busy=False)
                busy = measure(what, k, iters, threads, policy, busy=True)
                row = dict(what=what, k=k, threads=threads, used_threads=idle["threads"], policy=policy,
                           idle_ms=idle["per"] * 1e3, busy_ms=busy["per"] * 1e3,
                           slowdown=busy["per"] / idle["per"], load=busy["load"])
                rows.append(row)
                print(f"| {what} | {k or ''} | {threads} ({idle['threads']}) | {policy} | {row['idle_ms']:.1f} | "
                      f"{row['busy_ms']:.1f} | {row['slowdown']:.2f}× | {row['load']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

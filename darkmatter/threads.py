"""Thread settings that hold up on a shared machine.

Every FastICA iteration and every model forward is many short OpenMP parallel regions (one per
torch op and chunk). On a busy machine a thread that has lost its core holds up every region it
is part of. Two settings keep the slowdown near the fair share (``benchmarks/bench_busy.py``):

* ``GOMP_SPINCOUNT=1000``: idle OpenMP threads spin briefly between regions, then sleep, instead
  of spinning for libgomp's default 300,000 rounds on cores that other processes (or our own other
  threads) need. On 2 cores beside a 2-thread competitor, FastICA at 200k × 25 went from 4.5× to
  2.2× its idle time per iteration, with the same idle time (``OMP_WAIT_POLICY=PASSIVE`` gave
  1.5× busy but cost 40% idle). It has to be in the environment before libgomp starts, so
  :mod:`darkmatter` sets it on import, before torch is imported, unless the user set
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``.
* torch's intra-op threads follow the CPUs this process may use (``os.sched_getaffinity``,
  then a cgroup CPU quota), not the machine's core count.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 ``cpu.max`` quota.

    Returns:
        ≥ 1.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: ``OMP_NUM_THREADS`` when set, as torchrun
    does; else :func:`usable_cpus` shared among ``LOCAL_WORLD_SIZE`` ranks on this machine).

    Returns:
        the thread count set.
    """
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        local = os.environ.get("LOCAL_WORLD_SIZE", "1")
        ranks = int(local) if local.isdigit() and int(local) > 0 else 1
        threads = int(env) if env.isdigit() and int(env) > 0 else max(1, usable_cpus() // ranks)
    torch.set_num_threads(threads)
    return threads


def fit_workers(tasks: int) -> int:
    """Independent CPU tasks to run side by side: torch's current thread count (what
    :func:`configure` set), at most ``tasks``; ≥ 1."""
    import torch

    return max(1, min(tasks, torch.get_num_threads()))


@contextlib.contextmanager
def one_thread_per_task() -> Iterator[None]:
    """torch ops run on one intra-op thread inside (tasks run side by side in Python threads,
    each op in its caller's thread); the thread count is restored on exit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

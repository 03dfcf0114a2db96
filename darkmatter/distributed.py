"""Runs sharded over processes with ``torch.distributed``: ``torchrun --nproc_per_node N script …``.

Everything the analysis computes over rows is a sum (moments, covariance, SAE power sums, each
FastICA step's k × k products), so a sharded run is the single-process run with each row sum
all-reduced. :class:`Comm` is that one operation (plus the few small exchanges around it); the
single-process :data:`SINGLE` does nothing, so every code path is the same with or without
ranks. Backends: NCCL on GPUs, gloo on CPUs (what ``torchrun`` and Slurm's ``srun`` launch).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from darkmatter.errors import DarkMatterError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Comm:
    """This process's place in a run: rank ``rank`` of ``world`` (0 of 1 without torchrun).

    Sums are exact in the sense that matters here: float64 partial sums of disjoint row shards,
    added once; every rank receives the same bytes, so decisions taken on them (FastICA's
    stopping rule) agree on every rank.
    """

    rank: int = 0
    world: int = 1
    backend: str = "none"
    timeout_s: float = 600.0

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _wire(self, t: torch.Tensor) -> torch.Tensor:
        # gloo reduces CPU tensors, NCCL CUDA tensors
        if self.backend == "nccl":
            return t.cuda() if t.device.type != "cuda" else t
        return t.cpu() if t.device.type != "cpu" else t

    def _watch(self) -> None:
        """Before a collective: a barrier that names any rank that does not arrive within
        ``timeout_s`` (``DARKMATTER_RANK_TIMEOUT`` minutes; gloo's ``monitored_barrier``), so a
        stopped or hung rank ends the job with one line instead of hanging it.

        Raises:
            PeerLost: a rank did not answer in time, or the connection to one was lost.
        """
        if self.backend != "gloo":
            return
        import torch.distributed as dist

        try:
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=self.timeout_s), wait_all_ranks=True)
        except RuntimeError as exc:
            raise PeerLost.of(exc, self) from None

    def _finish(self, work: Any) -> None:
        """Wait for an asynchronous collective at most ``timeout_s`` (gloo): a rank stopped between
        :meth:`_watch` and the collective ends the job too, instead of hanging it.

        Raises:
            PeerLost: the collective did not complete in time, or a peer was lost.
        """
        try:
            work.wait(datetime.timedelta(seconds=self.timeout_s))
        except RuntimeError as exc:
            raise PeerLost.of(exc, self) from None

    def _collective(self, run: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``run(*args, **kwargs)`` (a torch.distributed collective), watched and bounded on gloo."""
        if self.backend != "gloo":
            run(*args, **kwargs)
            return
        self._watch()
        self._finish(run(*args, **kwargs, async_op=True))

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``t`` over ranks (``t`` itself when not sharded)."""
        if not self.sharded:
            return t
        import torch.distributed as dist

        w = self._wire(t).clone()
        self._collective(dist.all_reduce, w, op=dist.ReduceOp.SUM)
        return w.to(t.device)

    def sum_np(self, a: np.ndarray | float) -> np.ndarray:
        """:meth:`sum` of a numpy array (or number), in float64."""
        if not self.sharded:
            return np.asarray(a, dtype=np.float64)
        import torch

        return self.sum(torch.as_tensor(np.asarray(a, dtype=np.float64))).numpy()

    def agree(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t`` on every rank (a guard that every rank holds the same W)."""
        if not self.sharded:
            return t
        import torch.distributed as dist

        w = self._wire(t).clone()
        self._collective(dist.broadcast, w, src=0)
        return w.to(t.device)

    def gather_ints(self, values: list[int], watch: bool = True) -> np.ndarray:
        """int64[world, len(values)]: every rank's ``values`` (the same length on every rank).
        ``watch=False``: no time limit (ranks waiting for rank 0 to run a step alone)."""
        local = np.asarray(values, dtype=np.int64)[None]
        if not self.sharded:
            return local
        import torch
        import torch.distributed as dist

        t = self._wire(torch.as_tensor(local))
        out = [torch.zeros_like(t) for _ in range(self.world)]
        if watch:
            self._collective(dist.all_gather, out, t)
        else:
            dist.all_gather(out, t)
        return torch.cat([o.cpu() for o in out]).numpy()

    def barrier(self) -> None:
        """Every rank waits for the others (watched on gloo: a rank silent for ``timeout_s`` ends the job)."""
        if self.sharded:
            import torch.distributed as dist

            if self.backend == "gloo":
                self._watch()  # monitored_barrier is a barrier
            else:
                dist.barrier()


class PeerLost(DarkMatterError):
    """Another rank stopped, hung or died: an interruption of a sharded run, not its failure
    (step 02 keeps its checkpoint; rerunning the same command resumes)."""

    @classmethod
    def of(cls, exc: BaseException, comm: Comm) -> PeerLost:
        import re

        text = str(exc)
        found = re.findall(r"[Rr]anks? (\d+(?:\s*,\s*\d+)*)", text)
        ranks = sorted({int(r) for group in found for r in re.split(r"\s*,\s*", group)} - {comm.rank})
        if not ranks and comm.world == 2:  # the error names no rank, but there is only one other
            ranks = [1 - comm.rank]
        who = f"rank {', '.join(map(str, ranks))}" if ranks else "another rank"
        first = text.strip().splitlines()[0][:100] if text.strip() else type(exc).__name__
        return cls(f"rank {comm.rank}: {who} stopped answering ({first}); the other ranks stop too. Rerun the "
                   "same command: step 02 resumes from its last checkpoint (DARKMATTER_RANK_TIMEOUT sets the "
                   f"minutes a rank may be silent: {comm.timeout_s / 60:g})")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.distributed's report of a lost, hung or dead peer."""
    if isinstance(exc, PeerLost):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    names = {c.__name__ for c in type(exc).__mro__}
    text = str(exc)
    return bool(names & {"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"}) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out",
                            "monitoredBarrier", "gloo", "ProcessGroup"))


SINGLE = Comm()
_CURRENT: list[Comm] = [SINGLE]


def current() -> Comm:
    """The process's :class:`Comm` (set by :func:`init_from_env`; :data:`SINGLE` otherwise)."""
    return _CURRENT[0]


def init_from_env(device: str = "cpu") -> Comm:
    """Join the process group ``torchrun`` (or Slurm via ``srun … torchrun``) describes in the
    environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), or return
    :data:`SINGLE` when there is none. NCCL for a CUDA ``device`` (each rank takes GPU
    ``LOCAL_RANK``), gloo otherwise.

    Raises:
        DarkMatterError: the environment names a world but the group cannot be formed.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CURRENT[0] = SINGLE
        return SINGLE
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=6))
        except (RuntimeError, ValueError) as exc:
            raise DarkMatterError(f"could not join the torch.distributed group of {world} ranks "
                                  f"({str(exc).splitlines()[0][:120]}): launch with torchrun") from None
    try:
        minutes = float(os.environ.get("DARKMATTER_RANK_TIMEOUT", "10"))
    except ValueError:
        minutes = float("nan")
    if not minutes > 0 or minutes == float("inf"):
        raise DarkMatterError(f"DARKMATTER_RANK_TIMEOUT={os.environ.get('DARKMATTER_RANK_TIMEOUT')!r}: give the "
                              "minutes a rank may be silent, a positive number (default 10)")
    comm = Comm(rank=dist.get_rank(), world=dist.get_world_size(), backend=backend, timeout_s=60 * minutes)
    _CURRENT[0] = comm
    return comm


def shutdown() -> None:
    """Leave the process group (every rank, once its work is done; a no-op in a single process)."""
    comm = _CURRENT[0]
    if comm.sharded:
        import torch.distributed as dist

        try:
            dist.barrier()
        except RuntimeError:  # a peer is gone: leave without waiting for it
            pass
        dist.destroy_process_group()
        _CURRENT[0] = SINGLE


def chunk_range(n: int, chunk: int, comm: Comm) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that rank ``comm.rank`` reads in a sharded pass: a contiguous block of
    whole ``chunk``-row chunks (the last may be short), so every chunk is read as one process reads it."""
    n_chunks = -(-n // chunk)
    lo = min(n_chunks * comm.rank // comm.world * chunk, n)
    hi = min(n_chunks * (comm.rank + 1) // comm.world * chunk, n)
    return lo, hi

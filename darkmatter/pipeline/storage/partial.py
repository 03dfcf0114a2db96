"""Step 02's work in progress: memmaps and a checkpoint that survive an interrupt, so a rerun resumes.

Collection is the long step, so it writes into ``<outputs>/.collect-partial/`` rather than into
the transaction's temporary files: the arrays of each rank (``activations.r0of1.npy`` …), and
every :data:`CHECKPOINT_ROUNDS` rounds of batches a checkpoint of everything accumulated
(``state.r0of1.g31.npz``: the running sums in float64, the rows written, where the stream stood;
each rank keeps its last two). A rerun with the same configuration (the same step-02 ``run_id``)
and the same number of ranks resumes after the latest round every rank has a checkpoint of,
recomputing nothing before it, and ends with the same bytes as an uninterrupted run. Another
configuration or an unreadable checkpoint is discarded with a line that says which; the same
collection with another number of ranks is refused and kept. The folder goes when step 02
commits or fails on an error of its own; an interrupt, a kill or a lost peer rank leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from darkmatter.distributed import Comm
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.storage.diskspace import reserve
from darkmatter.pipeline.storage.journal import failpoint
from darkmatter.pipeline.storage.shards import shard_file
from darkmatter.sources.base import Resume
from darkmatter.sources.collect import CollectState

FOLDER = ".collect-partial"
CHECKPOINT_ROUNDS = 32
"""Rounds of batches (one batch per rank each) between checkpoints: with 16 windows of 128 tokens
per batch, about 65k tokens per rank (``DARKMATTER_CHECKPOINT_ROUNDS`` sets another count)."""

ARRAYS = {"activations.npy": (np.float32, None), "residuals.npy": (np.float32, None), "token_index.npy": (np.int32, 2)}


def checkpoint_rounds() -> int:
    """Rounds between checkpoints: ``DARKMATTER_CHECKPOINT_ROUNDS`` or :data:`CHECKPOINT_ROUNDS`.

    Raises:
        DarkMatterError: the variable is not a positive whole number.
    """
    text = os.environ.get("DARKMATTER_CHECKPOINT_ROUNDS", "").strip()
    if not text:
        return CHECKPOINT_ROUNDS
    if not text.isdigit() or int(text) < 1:
        raise DarkMatterError(f"DARKMATTER_CHECKPOINT_ROUNDS={text!r}: give the rounds of batches between step 02's "
                              f"checkpoints, a positive whole number (default {CHECKPOINT_ROUNDS})")
    return int(text)


class OtherWorld(DarkMatterError):
    """The folder holds this collection's checkpoint for another number of ranks: kept, not discarded."""


class Partial:
    """This rank's files in the work-in-progress folder of ``root``.

    Args:
        run_id: step 02's run_id (a checkpoint of another configuration is never resumed).
        n, d_model: rows analysed in all and their width; each rank's arrays hold up to n rows
            (sparse files when sharded: only what is written takes disk).
    """

    def __init__(self, root: Path, run_id: str, n: int, d_model: int, comm: Comm):
        self.root, self.folder = root, root / FOLDER
        self.run_id, self.n, self.d_model, self.comm = run_id, n, d_model, comm
        self.meta = {"run_id": run_id, "world": comm.world, "n_tokens": n, "d_model": d_model}
        self.arrays: dict[str, np.memmap] = {}
        self.rounds = checkpoint_rounds()

    def file(self, name: str) -> Path:
        return self.folder / shard_file(name, self.comm.rank, self.comm.world)

    def _state_path(self, generation: int) -> Path:
        return self.folder / f"state.r{self.comm.rank}of{self.comm.world}.g{generation}.npz"

    def _generations(self) -> list[int]:
        """The rounds this rank has checkpoints of, oldest first (at most two are kept)."""
        prefix = f"state.r{self.comm.rank}of{self.comm.world}.g"
        found = [p.name[len(prefix):-len(".npz")] for p in self.folder.glob(prefix + "*.npz")]
        return sorted(int(g) for g in found if g.isdigit())

    def _why_not(self) -> str | None:
        """Why this folder's checkpoints are not this run's (None: they are)."""
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return "its record (meta.json) is missing or unreadable"
        if not isinstance(meta, dict) or meta.get("run_id") != self.run_id:
            return "it is an interrupted collection of another configuration"
        if meta != self.meta:
            return f"it was written for {meta.get('n_tokens')} tokens of width {meta.get('d_model')}"
        return None

    def _load(self, generation: int, d_sae: int) -> CollectState | None:
        try:
            with np.load(self._state_path(generation)) as z:
                state = CollectState.from_arrays(int(z["d_sae"]), self.d_model, dict(z))
            if state.stats.d_sae != d_sae or state.batch // self.comm.world != generation:
                return None
            if any(np.load(self.file(name), mmap_mode="r").shape[0] < state.row for name in ARRAYS):
                return None
            return state
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a torn or damaged .npz
            return None

    def _refuse_other_world(self) -> None:
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(meta, dict) and meta.get("run_id") == self.run_id and meta.get("world") != self.comm.world:
            w = meta.get("world")
            raise OtherWorld(f"{self.folder} holds a checkpoint of this collection written by {w} rank(s); this "
                                  f"run has {self.comm.world}: rerun with {w} (torchrun --nproc_per_node {w}, or one "
                                  f"process for 1) to resume it, or delete {self.folder} to start over")

    def open(self, d_sae: int) -> tuple[CollectState | None, Resume | None]:
        """Open this rank's arrays: resumed from the latest round every rank has a readable checkpoint
        of (ranks run in lockstep, so one of the two kept per rank is common), else fresh (the folder
        emptied first, with a line that says why). Returns the state to continue and where the
        stream resumes (both None when fresh).

        Raises:
            DarkMatterError: the folder holds this collection's checkpoint for another number of ranks
                (it is kept: the message says how to resume it).
        """
        if self.folder.exists():  # every rank reads the same record, so every rank stops
            self._refuse_other_world()
        why = self._why_not() if self.folder.exists() else "none"
        gens = self._generations() if why is None else []
        every = self.comm.gather_ints((gens[-2:] + [-2, -2])[:2])
        common = set(every[0].tolist()).intersection(*(set(r.tolist()) for r in every[1:])) - {-2}
        state = self._load(max(common), d_sae) if common else None
        resume_ok = bool(self.comm.gather_ints([state is not None])[:, 0].all())
        if resume_ok and state is not None:
            self.arrays = {name: open_memmap(self.file(name), mode="r+") for name in ARRAYS}
            if self.comm.is_main:
                print(f"resuming step 02 from its checkpoint: {state.done:,} of {self.n:,} tokens were collected "
                      f"(rounds 0..{max(common)} of {self.comm.world} batch(es)); {self.folder} is kept until the "
                      "step finishes")
            return state, Resume(batches=(max(common) + 1) * self.comm.world, rows=state.done)
        if why is None:
            why = "no checkpoint common to every rank is readable" if gens else "it holds no checkpoint yet"
        need = self.n * (2 * self.d_model * 4 + 2 * 4)  # activations, residuals, token index of every rank
        free = int(self.comm.gather_ints([shutil.disk_usage(self.root).free if self.comm.is_main else 0])[0, 0])
        if free < need:  # before any memmap: a size beyond the filesystem's limit is EINVAL, not ENOSPC
            raise DarkMatterError(f"no room for step 02's arrays ({need / 2**20:,.0f} MiB) in {self.root}: "
                                  f"{free / 2**20:,.0f} MiB free; free space or pass another --outputs")
        self.comm.barrier()
        if self.comm.is_main:
            if self.folder.exists():
                print(f"discarding {self.folder}: {why}")
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            (self.folder / "meta.json").write_text(json.dumps(self.meta))
        self.comm.barrier()
        for name, (dtype, width) in ARRAYS.items():
            path = self.file(name)
            self.arrays[name] = open_memmap(path, mode="w+", dtype=dtype, shape=(self.n, width or self.d_model))
            if not self.comm.sharded:
                reserve(path, self.root, name)
        return None, None

    def checkpoint(self, state: CollectState) -> None:
        """Save ``state`` (atomically) at the end of every :data:`CHECKPOINT_ROUNDS`-th round, keeping
        this rank's previous checkpoint too (a peer killed mid-round may not have written this one)."""
        generation = state.batch // self.comm.world
        if (generation + 1) % self.rounds:
            return
        for arr in self.arrays.values():
            arr.flush()
        path = self._state_path(generation)
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = {"d_sae": np.array(state.stats.d_sae), **state.arrays()}
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        failpoint("checkpoint")
        for old in self._generations()[:-2]:
            self._state_path(old).unlink(missing_ok=True)

    def close(self) -> None:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays = {}

    def discard(self) -> None:
        """Delete the folder (step 02 failed on an error that a resume would not fix)."""
        self.close()
        if self.comm.is_main:
            shutil.rmtree(self.folder, ignore_errors=True)

    def finish_shard(self, rows: int) -> None:
        """Cut this rank's files to the ``rows`` it wrote (they were sized for every row)."""
        from darkmatter.pipeline.storage.shards import shrink_npy

        self.close()
        for name in ARRAYS:
            shrink_npy(self.file(name), rows)
        for generation in self._generations():
            self._state_path(generation).unlink(missing_ok=True)

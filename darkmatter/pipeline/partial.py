"""Step 02's work in progress: memmaps and a checkpoint that survive an interrupt, so a rerun resumes.

Collection is the long step, so it writes into ``<outputs>/.collect-partial/`` rather than into
the transaction's temporary files: the arrays of each rank (``activations.r0of1.npy`` …), and
every :data:`CHECKPOINT_ROUNDS` rounds of batches a checkpoint of everything accumulated
(``state.r0of1.npz``: the running sums in float64, the rows written, where the stream stood).
A rerun with the same configuration (the same step-02 ``run_id`` and number of ranks) resumes
after the last checkpoint, recomputing nothing before it, and ends with the same bytes as an
uninterrupted run. Anything else found there (another configuration, a torn checkpoint) is
discarded with a line that says so. The folder goes when step 02 commits or fails on an error;
only an interrupt leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from darkmatter.distributed import Comm
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.diskspace import reserve
from darkmatter.pipeline.shards import shard_file
from darkmatter.sources.base import Resume
from darkmatter.sources.collect import CollectState

FOLDER = ".collect-partial"
CHECKPOINT_ROUNDS = 32
"""Rounds of batches (one batch per rank each) between checkpoints: with 16 windows of 128 tokens
per batch, about 65k tokens per rank."""

ARRAYS = {"activations.npy": (np.float32, None), "residuals.npy": (np.float32, None), "token_index.npy": (np.int32, 2)}


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

    def file(self, name: str) -> Path:
        return self.folder / shard_file(name, self.comm.rank, self.comm.world)

    def _state_path(self) -> Path:
        return self.folder / f"state.r{self.comm.rank}of{self.comm.world}.npz"

    def _saved(self) -> CollectState | None:
        """This rank's checkpoint when the folder is this configuration's and it is readable."""
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            if meta != self.meta:
                return None
            with np.load(self._state_path()) as z:
                state = CollectState.from_arrays(int(z["d_sae"]), self.d_model, dict(z))
            if any(np.load(self.file(name), mmap_mode="r").shape[0] < state.row for name in ARRAYS):
                return None
            return state
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None

    def open(self, d_sae: int) -> tuple[CollectState | None, Resume | None]:
        """Open this rank's arrays: resumed from the checkpoint when every rank has one at the same
        batch, else fresh (the folder emptied first). Returns the state to continue and where the
        stream resumes (both None when fresh)."""
        state = self._saved()
        if state is not None and state.stats.d_sae != d_sae:
            state = None
        marks = self.comm.gather_ints([state.batch if state else -2])[:, 0]
        resume_ok = bool((marks == marks[0]).all() and marks[0] >= 0)
        if resume_ok and state is not None:
            self.arrays = {name: open_memmap(self.file(name), mode="r+") for name in ARRAYS}
            if self.comm.is_main:
                print(f"resuming step 02 from its checkpoint: {state.done:,} of {self.n:,} tokens were collected "
                      f"(batches 0..{state.batch}); {self.folder} is kept until the step finishes")
            return state, Resume(batches=state.batch + 1, rows=state.done)
        need = self.n * (2 * self.d_model * 4 + 2 * 4)  # activations, residuals, token index of every rank
        free = int(self.comm.gather_ints([shutil.disk_usage(self.root).free if self.comm.is_main else 0])[0, 0])
        if self.comm.sharded and free < need:  # one process reserves its memmaps instead (posix_fallocate)
            raise DarkMatterError(f"no room for step 02's shards ({need / 2**20:,.0f} MiB) in {self.root}: "
                                  f"{free / 2**20:,.0f} MiB free; free space or pass another --outputs")
        self.comm.barrier()
        if self.comm.is_main:
            if self.folder.exists():
                print(f"discarding {self.folder}: an interrupted collection of another configuration")
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
        """Save ``state`` (atomically) at the end of every :data:`CHECKPOINT_ROUNDS`-th round."""
        if (state.batch // self.comm.world + 1) % CHECKPOINT_ROUNDS:
            return
        for arr in self.arrays.values():
            arr.flush()
        tmp = self._state_path().with_suffix(".tmp.npz")
        arrays: dict[str, Any] = {"d_sae": np.array(state.stats.d_sae), **state.arrays()}
        np.savez(tmp, **arrays)
        os.replace(tmp, self._state_path())

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
        from darkmatter.pipeline.shards import shrink_npy

        self.close()
        for name in ARRAYS:
            shrink_npy(self.file(name), rows)
        self._state_path().unlink(missing_ok=True)

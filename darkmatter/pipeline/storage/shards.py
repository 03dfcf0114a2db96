"""Step 02's arrays from a sharded run: one file per rank, read as one array without a copy.

Under ``torchrun`` every rank of step 02 writes the rows of its own batches to
``shards/<array>.r<rank>of<world>.npy``; ``shards.json`` lists the files and
``shards/segments.npy`` says, batch by batch in the stream's order, which rank's file holds the
next rows. :class:`ShardedArray` puts them back in that order behind the slicing a memmap offers
(row slices and sorted or unsorted row-index arrays), so steps 03+ read a sharded run exactly as
they read ``activations.npy``. Shard files are ordinary ``.npy`` memmaps.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table

ARRAYS = ("activations.npy", "residuals.npy", "token_index.npy")
MANIFEST = "shards.json"
FOLDER = "shards"


def shard_file(name: str, rank: int, world: int) -> str:
    """``residuals.npy`` → ``residuals.r1of2.npy``."""
    stem = name.removesuffix(".npy")
    return f"{stem}.r{rank}of{world}.npy"


class ShardedArray:
    """A read-only [n, ...] view of per-rank files in the stream's row order.

    Args:
        parts: one array (memmap) per rank.
        segments: int64[S, 3] rows of (rank, first row in that rank's file, rows), in order.
    Raises:
        DarkMatterError: the files do not hold the rows the segments name.
    """

    def __init__(self, parts: list[np.ndarray], segments: np.ndarray, label: str):
        self.parts, self.label = parts, label
        self.segments = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
        self.starts = np.concatenate([[0], np.cumsum(self.segments[:, 2])])
        n = int(self.starts[-1])
        for r, part in enumerate(parts):
            need = self.segments[self.segments[:, 0] == r]
            rows = int((need[:, 1] + need[:, 2]).max()) if len(need) else 0
            if len(part) < rows:
                raise DarkMatterError(f"{label}: the shard of rank {r} holds {len(part):,} rows, its manifest "
                                      f"{rows:,}: rerun scripts/{table.producer('shards')}")
        self.shape = (n, *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _range(self, lo: int, hi: int) -> np.ndarray:
        if hi <= lo:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        pieces = []
        s = first
        while s < len(self.segments) and self.starts[s] < hi:
            r, off, _ = self.segments[s]
            a = max(lo, int(self.starts[s])) - int(self.starts[s])
            b = min(hi, int(self.starts[s + 1])) - int(self.starts[s])
            pieces.append(np.asarray(self.parts[r][off + a:off + b]))
            s += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            rows, rest = key[0], key[1:]
            return self[rows][(slice(None), *rest)]
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            out = self._range(lo, hi) if step == 1 else self._range(lo, hi)[::step]
            return out
        if isinstance(key, (int, np.integer)):
            i = int(key) % self.shape[0]
            return self._range(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        seg = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        for s in np.unique(seg):
            sel = np.flatnonzero(seg == s)
            r, off, _ = self.segments[s]
            out[sel] = self.parts[r][off + idx[sel] - self.starts[s]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._range(0, self.shape[0])
        return out if dtype is None else out.astype(dtype)


def open_sharded(root: Path, manifest: dict[str, Any], name: str) -> ShardedArray:
    """The array ``name`` of a sharded step 02 in ``root`` (``manifest``: its shards.json).

    Raises:
        DarkMatterError: a shard file is missing or unreadable.
    """
    folder = root / FOLDER
    world = int(manifest["world"])
    try:
        segments = np.load(folder / "segments.npy")
        parts = [np.load(folder / shard_file(name, r, world), mmap_mode="r") for r in range(world)]
    except (OSError, ValueError, EOFError) as exc:
        raise DarkMatterError(f"{folder} is incomplete or unreadable ({str(exc).splitlines()[0][:80]}): rerun "
                              f"scripts/{table.producer('shards')}") from None
    return ShardedArray(parts, segments, f"{folder}/{name}")


def shrink_npy(path: Path, rows: int) -> None:
    """Cut the ``.npy`` file at ``path`` to its first ``rows`` rows in place: the header is rewritten
    with the new shape (padded to the same length) and the file truncated (a shard's final size
    is known only once its rank has seen the end of the stream).

    Raises:
        ValueError: ``rows`` exceeds what the file holds.
    """
    with open(path, "r+b") as fh:
        major, _ = np.lib.format.read_magic(fh)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if major == 1
                                 else np.lib.format.read_array_header_2_0(fh))
        offset = fh.tell()
        if rows > shape[0]:
            raise ValueError(f"cannot grow {path} from {shape[0]} to {rows} rows")
        new_shape = (rows, *shape[1:])
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                       "shape": new_shape})
        prefix = 10 if major == 1 else 12
        room = offset - prefix
        text = header.ljust(room - 1) + "\n"
        assert ast.literal_eval(header)["shape"] == new_shape and len(text) == room
        fh.seek(prefix)
        fh.write(text.encode("latin1"))
        fh.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        fh.flush()
        os.fsync(fh.fileno())

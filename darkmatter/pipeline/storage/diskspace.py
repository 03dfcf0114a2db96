"""Disk space: reserve a memmap's blocks before filling it, and scratch memmaps that never outlive a step.

A sparse memmap on a full disk fails with SIGBUS halfway through; reserving its blocks first
(``posix_fallocate``) turns that into a clear error with the numbers before any work is done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from darkmatter.errors import DarkMatterError


def reserve(path: Path, root: Path, name: str) -> None:
    """Reserve the blocks of the file at ``path`` (best effort where the filesystem cannot).

    Raises:
        DarkMatterError: not enough free space in ``root`` (``path`` is deleted; the message gives the sizes).
    """
    size = path.stat().st_size
    try:
        if hasattr(os, "posix_fallocate"):
            with open(path, "rb+") as fh:
                os.posix_fallocate(fh.fileno(), 0, size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:  # a filesystem without fallocate: the reservation is best effort
            return
        path.unlink(missing_ok=True)
        free = shutil.disk_usage(root).free
        raise DarkMatterError(f"no room for {name} ({size / 2**20:,.0f} MiB) in {root}: "
                              f"{free / 2**20:,.0f} MiB free; free space or pass another --outputs") from None


@contextlib.contextmanager
def scratch(root: Path) -> Iterator[Callable[[str, tuple[int, ...]], np.memmap]]:
    """``make(tag, shape)`` → a float32 memmap in a hidden file of ``root`` (reserved on disk), for
    data too large for memory; every one is deleted on exit however the step ends (a killed
    process's are removed by the next writer: their folder's name carries its PID).

    Raises:
        DarkMatterError: not enough free space (with the numbers).
    """
    from darkmatter.pipeline.storage.journal import scratch_dir

    made: list[Path] = []
    folder = scratch_dir(root)

    def make(tag: str, shape: tuple[int, ...]) -> np.memmap:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{tag}.npy"
        made.append(path)
        arr = open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        reserve(path, root, f"scratch data {tag} {shape}")
        return arr

    try:
        yield make
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

"""The outputs folder: the only code that knows paths, memmaps, atomic writes and JSON encoding.

Steps share state only through files here. Every write is staged and the whole
step's outputs are committed as one unit by a journal written last
(:mod:`darkmatter.pipeline.storage.journal`, ``docs/commits.md``): a crash anywhere
leaves either the old outputs or the new ones, never a mixture. File names are the
step table's (:mod:`darkmatter.pipeline.table`), which also says which script
writes each one, for the "run X first" messages. Typed results (frozen
dataclasses) are written with :meth:`OutputStore.write_result` and read back,
validated, with :meth:`OutputStore.read_result`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.lib.format import open_memmap

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.storage import diskspace, journal

PLOT_DPI = 150
T = TypeVar("T")


class OutputStore:
    """Read and write the files of one run in ``root``.

    Writes made inside :meth:`transaction` land together when it exits
    cleanly and are deleted when it raises.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self._pending: list[tuple[Path, Path]] | None = None
        self.script = "other"  # whose outputs a commit holds (the manifest's key)
        self.timing: tuple[str, float] | None = None  # (script, perf_counter at its start): timings.json
        #: config.json's content for a step that records the config (the step table's ``records_config``):
        #: committed with the step's outputs when it differs from the file's
        self.config_record: dict[str, Any] | None = None

    # ---- paths -----------------------------------------------------------------
    def path(self, name: str) -> Path:
        """Where output ``name`` lives. Raises KeyError for a file no producer declares."""
        if name not in table.known_files():
            raise KeyError(f"{name} is not a known output file (see darkmatter/pipeline/table.py)")
        return self.root / name

    def exists(self, name: str) -> bool:
        journal.settle(self.root)
        return self.path(name).exists() or self.sharded(name) is not None

    def mtime(self, name: str) -> float:
        """When ``name`` was last written (a sharded array: when its manifest was)."""
        return (self.path(name) if self.path(name).exists() else self.path("shards.json")).stat().st_mtime

    def sharded(self, name: str) -> dict[str, Any] | None:
        """The shards.json manifest when ``name`` is an array a sharded step 02 wrote (else None)."""
        from darkmatter.pipeline.storage import shards

        if name not in shards.ARRAYS or self.path(name).exists() or not self.path(shards.MANIFEST).exists():
            return None
        manifest = self.read_json(shards.MANIFEST)
        return manifest if isinstance(manifest, dict) and name in manifest.get("arrays", ()) else None

    def require(self, *names: str) -> None:
        """Raise DarkMatterError naming the script to run when any input is missing."""
        for name in names:
            if not self.exists(name):
                raise DarkMatterError(
                    f"{self.path(name)} is missing: run scripts/{table.producer(name)} first "
                    f"(with --outputs {self.root})")

    # ---- the writer's lock ---------------------------------------------------------
    def lock(self, what: str) -> contextlib.AbstractContextManager[None]:
        """The folder's writer lock while ``what`` runs (:func:`darkmatter.pipeline.storage.folder_lock.writer_lock`).

        Raises:
            DarkMatterError: another live process holds it (the message names its PID).
        """
        from darkmatter.pipeline.storage.folder_lock import writer_lock

        return writer_lock(self.root, what)

    # ---- transactions ----------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[OutputStore]:
        """Stage every write; commit all on success (:mod:`darkmatter.pipeline.storage.journal`), delete all on error.

        Raises:
            DarkMatterError: the folder is not one the tool may write (:func:`folder_lock.claim`), or the
                commit failed (the message says whether the folder is as it was).
        """
        from darkmatter.pipeline.storage.folder_lock import claim

        if self._pending is not None:
            raise RuntimeError("transactions do not nest")
        claim(self.root)
        journal.settle(self.root)
        stage = journal.stage_dir(self.root)
        _remove(stage)
        stage.mkdir(parents=True)
        self._pending = []
        self._discarded: list[Path] = []
        self._adopted: list[tuple[Path, Path]] = []
        self._cleanup: list[Path] = []
        try:
            if self.config_record is not None and not (self.exists(table.CONFIG_FILE)
                                                       and self.read_json(table.CONFIG_FILE) == self.config_record):
                self.write_json(table.CONFIG_FILE, self.config_record)  # first: the outputs are newer than it
            yield self
            self._commit()
        finally:
            if not (journal.home(self.root) / journal.JOURNAL).exists():  # past the commit point it stays
                _remove(stage)
                if not any(journal.home(self.root).iterdir()):
                    journal.home(self.root).rmdir()
            self._pending = None

    def _commit(self) -> None:
        assert self._pending is not None
        if self.timing is not None:  # timings.json lands with the step's outputs
            script, start = self.timing
            path = self.path(table.TIMINGS_FILE)
            try:
                timings = json.loads(path.read_text()) if path.is_file() else {}
            except (OSError, ValueError, UnicodeDecodeError):  # unreadable: started afresh
                timings = {}
            from darkmatter.pipeline.storage.procstat import peak_rss_mb

            timings = timings if isinstance(timings, dict) else {}
            timings[script] = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}
            self.write_json(table.TIMINGS_FILE, dict(sorted(timings.items())))
        journal.commit(self.root, self.script, [*self._pending, *self._adopted], self._discarded, self._cleanup)
        self._pending = []

    def discard(self, name: str) -> None:
        """Delete ``name`` when the transaction commits (an output this run no longer makes)."""
        if self._pending is None:
            raise RuntimeError("discard must happen inside store.transaction()")
        self._discarded.append(self.path(name))

    def adopt(self, path: Path, name: str) -> None:
        """Move the existing file or folder ``path`` into place as ``name`` on commit (left where it
        is when the transaction fails: step 02's resumable work in progress)."""
        if self._pending is None:
            raise RuntimeError("adopt must happen inside store.transaction()")
        self._adopted.append((path, self.path(name)))

    def remove_on_commit(self, path: Path) -> None:
        """Delete ``path`` (inside the folder) as part of the commit (step 02's work in progress)."""
        if self._pending is None:
            raise RuntimeError("remove_on_commit must happen inside store.transaction()")
        self._cleanup.append(path)

    def _staged(self, name: str) -> Path:
        final = self.path(name)
        if self._pending is None:
            raise RuntimeError("writes must happen inside store.transaction()")
        tmp = journal.stage_dir(self.root) / final.name
        _remove(tmp)
        self._pending = [(t, f) for t, f in self._pending if t != tmp] + [(tmp, final)]
        return tmp

    # ---- writers ---------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        self._staged(name).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")

    def write_result(self, name: str, result: Any, **stamps: Any) -> None:
        """Write a typed result (a dataclass) as JSON, with ``stamps`` (e.g. ``run_id``,
        ``schema_version``) as leading keys."""
        self.write_json(name, {**stamps, **dataclasses.asdict(result)})

    def write_text(self, name: str, text: str) -> None:
        self._staged(name).write_text(text)

    def save_npy(self, name: str, array: np.ndarray) -> None:
        with open(self._staged(name), "wb") as fh:
            np.save(fh, array)

    def open_npy(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        """A writable memmap of ``shape``, ``name`` once the transaction commits; its blocks are reserved
        now (:func:`darkmatter.pipeline.storage.diskspace.reserve`): a full disk is an error here, not a SIGBUS.

        Raises:
            DarkMatterError: not enough free space (with the numbers).
        """
        path = self._staged(name)
        arr = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        diskspace.reserve(path, self.root, name)
        return arr

    def scratch(self) -> contextlib.AbstractContextManager[Callable[[str, tuple[int, ...]], np.memmap]]:
        """Scratch memmaps for data too large for memory (:func:`darkmatter.pipeline.storage.diskspace.scratch`)."""
        return diskspace.scratch(self.root)

    def save_figure(self, name: str, fig: Any) -> None:
        """Save a matplotlib figure at 150 DPI and close it."""
        import matplotlib.pyplot as plt

        fig.savefig(self._staged(name), dpi=PLOT_DPI, bbox_inches="tight", format="png")
        plt.close(fig)

    def staged_file(self, name: str) -> Path:
        """Where to write file ``name`` (with any library: ``DataFrame.to_parquet``, ...); it replaces
        ``name`` when the transaction commits. Raises RuntimeError outside a transaction."""
        return self._staged(name)

    def staged_dir(self, name: str) -> Path:
        """A fresh folder that replaces ``name`` (e.g. ``sae``) on commit."""
        tmp = self._staged(name)
        tmp.mkdir(parents=True)
        return tmp

    # ---- readers ---------------------------------------------------------------
    def read_json(self, name: str) -> Any:
        """Parsed JSON of ``name``. Raises DarkMatterError when missing or unreadable."""
        self.require(name)  # settles a half-applied commit first (journal.settle)
        try:
            return json.loads(self.path(name).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DarkMatterError(f"{self.path(name)} is not valid JSON ({exc}): rerun "
                                  f"scripts/{table.producer(name)}") from exc

    def read_result(self, name: str, cls: type[T], stamps: tuple[str, ...] = ()) -> tuple[T, dict[str, Any]]:
        """Read ``name`` back as the dataclass ``cls`` (validated by pydantic), and its stamps.

        Raises:
            DarkMatterError: missing, unreadable, or it does not fit ``cls`` (written by another
                version of the tool).
        """
        from pydantic import TypeAdapter, ValidationError

        data = self.read_json(name)
        if not isinstance(data, dict):
            raise DarkMatterError(f"{self.path(name)} is not a results object: rerun scripts/{table.producer(name)}")
        found = {k: data.pop(k) for k in stamps if k in data}
        try:
            return TypeAdapter(cls).validate_python(data), found
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DarkMatterError(f"{self.path(name)} does not fit this version of the tool ({where}: "
                                  f"{first['msg']}): rerun scripts/{table.producer(name)}") from exc

    def load_npy(self, name: str, mmap: bool = True) -> np.ndarray:
        """The array in ``name``, memory-mapped read-only unless ``mmap`` is False."""
        self.require(name)
        manifest = self.sharded(name)
        if manifest is not None:
            from darkmatter.pipeline.storage.shards import open_sharded

            view = open_sharded(self.root, manifest, name)
            return view if mmap else np.asarray(view)  # type: ignore[return-value]
        try:
            return np.load(self.path(name), mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as exc:  # truncated, random bytes, pickled data
            raise DarkMatterError(f"{self.path(name)} is not a readable .npy ({str(exc).splitlines()[0][:80]}): "
                                  f"rerun scripts/{table.producer(name)}") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")

"""Crash-consistent commits: a step's outputs land all together or not at all (docs/commits.md).

The design is a redo journal, the one SQLite's hot journals, ext4 and git's ref updates use:

1. A transaction writes every file under its final name into its own staging folder,
   ``<outputs>/.darkmatter/stage.<pid>/``; nothing the user sees changes.
2. **Commit point.** Once every staged byte is on disk (fsync), one small journal,
   ``.darkmatter/commit.json``, is written under a temporary name, fsynced and renamed into place.
   It lists every move (staged → final), every deletion and the manifest entry of the step.
   Before that rename the folder is exactly as it was; after it the commit has happened.
3. The journal is applied: one rename per output (a folder being replaced is first moved
   aside into the staging folder), the deletions, the manifest; then the journal is deleted.
4. Applying is idempotent. A writer that takes the folder's lock and a reader about to read
   (:func:`settle`) apply a journal they find first ("roll forward"); one that cannot be applied
   (a permission error) stops every reader with a line naming the file.

The manifest, ``.darkmatter/manifest.json``, records what each step's commit put in place (size
and SHA-256 of every file up to 32 MiB, size and modification time of larger ones), so
``run_pipeline.py`` can tell a current step from one whose files were deleted or changed.
Everything the store makes lives in ``.darkmatter/`` (and ``.lock``, ``.collect-partial/``); the
clean-up after a killed writer touches nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table

HOME = ".darkmatter"
JOURNAL, MANIFEST = "commit.json", "manifest.json"
HASHED_UP_TO = 32 * 2**20
#: Files several steps rewrite: not in any step's manifest entry (config.json is checked by run_id stamps).
SHARED = (table.TIMINGS_FILE, table.CONFIG_FILE)
_OURS = re.compile(r"^(?:stage|scratch)\.(\d+)$|^\.(?:commit|manifest)\.json\.(\d+)$")
#: roots whose lock this process holds (their journal is applied by us, not waited for)
HELD: set[Path] = set()


def home(root: Path) -> Path:
    return root / HOME


def stage_dir(root: Path) -> Path:
    """This process's staging folder in ``root`` (made on demand)."""
    return home(root) / f"stage.{os.getpid()}"


def scratch_dir(root: Path) -> Path:
    return home(root) / f"scratch.{os.getpid()}"


# ---- signatures ----------------------------------------------------------------------------------------
def _file_sig(path: Path) -> dict[str, Any]:
    st = path.stat()
    if st.st_size > HASHED_UP_TO:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"size": st.st_size, "sha256": digest.hexdigest()}


def signature(path: Path) -> dict[str, Any] | None:
    """What a manifest records for the file or folder at ``path`` (None when it is missing)."""
    if path.is_symlink() or not path.exists():
        return None
    if path.is_dir():
        return {"files": {str(p.relative_to(path)): _file_sig(p) for p in sorted(path.rglob("*")) if p.is_file()}}
    return _file_sig(path)


def _fsync(path: Path) -> None:
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file() and not p.is_symlink():
                _fsync(p)
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:
        flags = os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` by a fsynced temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


# ---- commit ----------------------------------------------------------------------------------------------
def _check_target(src: Path, dst: Path) -> None:
    if dst.is_symlink():
        raise DarkMatterError(f"{dst} is a symbolic link; the tool writes a {'folder' if src.is_dir() else 'file'} "
                              "there: remove the link and rerun (nothing was changed)")
    if dst.exists() and dst.is_dir() != src.is_dir():
        raise DarkMatterError(f"{dst} is a {'folder' if dst.is_dir() else 'file'} where the tool writes a "
                              f"{'folder' if src.is_dir() else 'file'}: move it away and rerun (nothing was changed)")


def commit(root: Path, script: str, moves: list[tuple[Path, Path]], discards: list[Path],
           cleanup: list[Path]) -> None:
    """Commit a transaction: journal written last, then applied (see the module docstring).

    Args:
        root: the outputs folder.
        script: the step (or tool) whose outputs these are: its manifest entry.
        moves: (staged or adopted path, final path) pairs, all inside ``root``.
        discards: final paths to delete (outputs this run no longer makes).
        cleanup: paths inside ``root`` to delete once applied (step 02's work in progress).

    Raises:
        DarkMatterError: a target is a symbolic link or of the other kind (before the commit
            point: nothing changed), or the journal could not be applied (after it: every reader
            refuses until it is).
    """
    for src, dst in moves:
        _check_target(src, dst)
    entry = {dst.name: signature(src) for src, dst in moves if dst.name not in SHARED}
    for src, _ in moves:
        _fsync(src)
    _fsync(root)
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    journal = {"script": script, "pid": os.getpid(), "moves": [[rel(s), rel(d)] for s, d in moves],
               "discards": [rel(p) for p in discards if p not in {d for _, d in moves}],
               "cleanup": [rel(p) for p in cleanup], "manifest": entry}
    home(root).mkdir(exist_ok=True)
    failpoint("journal")
    write_atomic(home(root) / JOURNAL, json.dumps(journal, indent=1) + "\n")
    failpoint("committed")
    apply(root)


def apply(root: Path) -> None:
    """Apply the journal in ``root`` (idempotent; does nothing without one). The caller holds the lock.

    Raises:
        DarkMatterError: it cannot be applied (the message names the file and the fix).
    """
    path = home(root) / JOURNAL
    if not path.exists():
        return
    try:
        journal = json.loads(path.read_text())
        script = journal["script"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DarkMatterError(f"{path} (an interrupted commit) is unreadable ({exc}): delete {root} "
                              "or rerun every step into another --outputs") from None
    aside = home(root) / f"stage.{journal['pid']}" / ".replaced"
    try:
        for i, (s, d) in enumerate(journal["moves"]):
            src, dst = root / s, root / d
            if src.exists() or src.is_symlink():
                if dst.is_dir() and not dst.is_symlink():
                    aside.mkdir(parents=True, exist_ok=True)
                    os.replace(dst, aside / f"{i}.{dst.name}")
                    failpoint("aside")
                os.replace(src, dst)
                failpoint("rename")
            elif not dst.exists():
                raise DarkMatterError(f"{path} moves {s} to {d}, and both are gone: rerun "
                                      f"scripts/{script}" if script.endswith(".py") else f"{path}: {d} is missing")
        for d in journal["discards"]:
            dst = root / d
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            elif dst.exists() or dst.is_symlink():
                dst.unlink()
        manifest = read_manifest(root)
        manifest[script] = journal["manifest"]
        write_atomic(home(root) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        failpoint("manifest")
        for c in journal["cleanup"]:
            shutil.rmtree(root / c, ignore_errors=True)
        path.unlink()
        shutil.rmtree(aside.parent, ignore_errors=True)
    except OSError as exc:
        raise DarkMatterError(f"the commit of {script}'s outputs in {root} stopped part-way ({exc.strerror}: "
                              f"{exc.filename}); fix that and rerun any step: it completes the commit first "
                              f"({path}); until then no step reads {root}") from None


def settle(root: Path, wait_s: float = 60.0) -> None:
    """Make sure no commit in ``root`` is half applied before reading it: apply a journal left by
    a killed writer (taking the lock), or wait for a live writer's to be applied.

    Raises:
        DarkMatterError: the journal cannot be applied, or a live writer's commit did not finish
            within ``wait_s`` seconds.
    """
    path = home(root) / JOURNAL
    if not path.exists():
        return
    if root.resolve() in HELD:
        apply(root)
        return
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        deadline = time.monotonic() + wait_s
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if path.exists():
            raise DarkMatterError(f"{root} is in the middle of a commit by another run: wait for it and "
                                  "read again") from None
        return
    try:
        apply(root)
    finally:
        lock.release()


def read_manifest(root: Path) -> dict[str, Any]:
    """``{script: {output name: signature}}`` of the last commit of each step (empty when none)."""
    try:
        data = json.loads((home(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def changed(root: Path, script: str) -> list[str]:
    """The outputs of ``script``'s last commit that are missing or no longer what it wrote (all of
    them, as ``["(no record)"]``, when the manifest has no entry for it)."""
    entry = read_manifest(root).get(script)
    if not isinstance(entry, dict):
        return ["(no record)"]
    return [name for name, sig in entry.items() if signature(root / name) != sig]


# ---- clean-up ----------------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(root: Path) -> list[str]:
    """Delete the staging and scratch folders, and half-written journal or manifest files, of
    processes that no longer run (only names this module makes, inside ``.darkmatter/``); returns
    their names. Call after :func:`apply`."""
    gone = []
    folder = home(root)
    for path in folder.iterdir() if folder.is_dir() and not folder.is_symlink() else []:
        m = _OURS.match(path.name)
        if not m or alive(int(m.group(1) or m.group(2))) or path.is_symlink():
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:  # a journal or manifest cut off while being written (write_atomic's temporary file)
            path.unlink(missing_ok=True)
        gone.append(path.name)
    return gone


# ---- fault injection (the kill-anywhere test) ----------------------------------------------------------------
_count = 0
_labels: list[str] | None = None  # set to a list to record every failpoint passed (benchmarks/kill_anywhere.py)


def failpoint(where: str) -> None:
    """SIGKILL this process at the N-th failpoint when ``DARKMATTER_KILL_AT=N`` is set (the
    kill-anywhere test, ``benchmarks/kill_anywhere.py``); otherwise nothing."""
    global _count
    if _labels is not None:
        _labels.append(where)
    at = os.environ.get("DARKMATTER_KILL_AT")
    if not at:
        return
    _count += 1
    if _count == int(at):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

"""One writer per outputs folder, only folders that are runs, and clean-up after writers that were killed.

The lock is ``filelock`` on ``<outputs>/.lock``: the kernel frees it when its holder dies, so a
killed run's lock is simply taken over; ``.lock.pid`` names the holder for the refusal message.
A writer that takes it first completes a commit a killed writer left half applied
(:func:`darkmatter.pipeline.storage.journal.apply`), then deletes the staging and scratch folders of
dead processes: only names the store makes inside ``.darkmatter/``, never a file of the user's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.storage import journal

LOCK, LOCK_HOLDER = ".lock", ".lock.pid"
#: Names the tool itself makes in an outputs folder besides the declared outputs.
OURS = {LOCK, LOCK_HOLDER, journal.HOME, ".collect-partial"}
#: Placeholders a version-controlled or browsed folder holds: such a folder counts as empty.
PLACEHOLDERS = {".gitkeep", ".gitignore", ".DS_Store"}
#: A folder holding one of these is a run folder (its config, or the store's own folder).
RUN_MARKS = ("config.json", journal.HOME)


def claim(root: Path) -> None:
    """Refuse an outputs folder the tool must not write into: an empty path, a file, or a folder
    that holds something and is not a run folder (no ``config.json``, no ``.darkmatter/``).

    Raises:
        DarkMatterError: one line naming what is there and the fix.
    """
    if root.is_symlink() and not root.exists():
        raise DarkMatterError(f"--outputs {root} is a broken symbolic link: pass a folder")
    if root.exists() and not root.is_dir():
        raise DarkMatterError(f"--outputs {root} is a file, not a folder: pass a folder")
    if not root.is_dir() or any((root / m).exists() for m in RUN_MARKS):
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in OURS | PLACEHOLDERS)
    if foreign:
        raise DarkMatterError(f"--outputs {root} holds files that are not a run's ({', '.join(foreign[:3])}"
                              f"{', …' if len(foreign) > 3 else ''}): pass a new or empty folder, or a run folder")


@contextlib.contextmanager
def writer_lock(root: Path, what: str) -> Iterator[None]:
    """Hold ``root``'s writer lock while ``what`` runs, after completing a half-applied commit and
    deleting dead writers' staged files.

    ``.lock`` stays beside outputs (deleting it on release would let two writers lock two
    different files); a folder left with nothing else loses it again, and a folder this call
    created is removed (with the parents it created), so a step that failed at once leaves no trace.

    Raises:
        DarkMatterError: the folder is not a run folder (:func:`claim`), another live process holds
            the lock (names its PID and what it runs), or a half-applied commit cannot be completed.
    """
    from filelock import FileLock, Timeout

    claim(root)
    created = _missing_parents(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = root / LOCK_HOLDER
        who = holder.read_text().strip() if holder.is_file() else "unknown"
        raise DarkMatterError(f"{root} is being written by another run (pid {who}): wait for it to finish, "
                              "or pass another --outputs") from None
    key = root.resolve()
    journal.HELD.add(key)
    try:
        (root / LOCK_HOLDER).write_text(f"{os.getpid()} ({what})\n")
        journal.apply(root)
        journal.clean_stale(root)
        yield
    finally:
        journal.HELD.discard(key)
        (root / LOCK_HOLDER).unlink(missing_ok=True)
        home = root / journal.HOME
        if home.is_dir() and not any(home.iterdir()):
            home.rmdir()
        if [p.name for p in root.iterdir()] == [LOCK]:
            (root / LOCK).unlink()
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        lock.release()


def _missing_parents(root: Path) -> list[Path]:
    """``root`` and those of its parents that do not exist yet, deepest first."""
    out = []
    for p in [root, *root.absolute().parents]:
        if p.exists():
            break
        out.append(p)
    return out

"""One writer per outputs folder, and clean-up after writers that were killed.

The lock is ``filelock`` on ``<outputs>/.lock``: the kernel frees it when its holder dies, so a
killed run's lock is simply taken over; ``.lock.pid`` names the holder for the refusal message.
Staged files carry their writer's PID (``.name.tmpPID.ext``, ``.name.oldPID``; see
:mod:`darkmatter.pipeline.store`); those of processes that no longer run are deleted when the
next writer takes the lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from darkmatter.errors import DarkMatterError

LOCK, LOCK_HOLDER = ".lock", ".lock.pid"
#: Staged names: left behind only by a process that was killed (SIGKILL, power cut).
_STAGED = re.compile(r"^\..+\.(?:tmp|old)(\d+)(?:\..*)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def writer_lock(root: Path, what: str) -> Iterator[None]:
    """Hold ``root``'s writer lock while ``what`` runs, after deleting dead writers' staged files.

    ``.lock`` stays beside outputs (deleting it on release would let two writers lock two
    different files); a folder left with nothing else loses it again, and a folder this call
    created is removed, so a step that failed at once leaves no trace.

    Raises:
        DarkMatterError: another live process holds the lock (names its PID and what it runs).
    """
    from filelock import FileLock, Timeout

    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = root / LOCK_HOLDER
        who = holder.read_text().strip() if holder.is_file() else "unknown"
        raise DarkMatterError(f"{root} is being written by another run (pid {who}): wait for it to finish, "
                              "or pass another --outputs") from None
    try:
        (root / LOCK_HOLDER).write_text(f"{os.getpid()} ({what})\n")
        clean_stale(root)
        yield
    finally:
        (root / LOCK_HOLDER).unlink(missing_ok=True)
        if [p.name for p in root.iterdir()] == [LOCK]:
            (root / LOCK).unlink()
            if created:
                root.rmdir()
        lock.release()


def clean_stale(root: Path) -> list[str]:
    """Delete the staged files and folders in ``root`` of processes that no longer run; returns
    their names."""
    gone = []
    for path in root.iterdir() if root.is_dir() else []:
        m = _STAGED.match(path.name)
        if m and not _alive(int(m.group(1))):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone

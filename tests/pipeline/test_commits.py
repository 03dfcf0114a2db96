"""A step's outputs commit as one unit (darkmatter/pipeline/storage/journal.py, docs/commits.md): a kill
before the journal leaves the old files, a kill after it is completed by the next reader, a commit
that cannot be applied stops every reader, and the manifest tells a changed output."""

from __future__ import annotations

import json
import os
import signal

import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.storage import journal
from darkmatter.pipeline.storage.store import OutputStore

NAMES = ("ica.json", "similarity.json", "statistics.json")


def _write_all(store: OutputStore, version: int) -> None:
    with store.transaction():
        for name in NAMES:
            store.write_json(name, {"version": version})
        (store.staged_dir("dashboard") / "index.html").write_text(f"v{version}")


def _raw(root) -> list:
    """What is on disk, read without the store (no settling)."""
    versions: list = [json.loads((root / n).read_text())["version"] for n in NAMES]
    return versions + [(root / "dashboard/index.html").read_text()]


def _killed_at(root, n: int) -> int:
    """Commit version 2 in a forked child that SIGKILLs itself at the n-th failpoint; returns its exit."""
    pid = os.fork()
    if pid == 0:
        try:
            os.environ["DARKMATTER_KILL_AT"] = str(n)
            journal._count = 0
            _write_all(OutputStore(root), 2)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_kill_between_two_renames_is_completed_by_the_next_reader(tmp_path):
    store = OutputStore(tmp_path)
    _write_all(store, 1)
    # failpoints: 1 before the journal, 2 just after it, 3 after the first rename, 4 after the second
    assert _killed_at(tmp_path, 4) == -signal.SIGKILL
    assert _raw(tmp_path)[:2] == [2, 2] and _raw(tmp_path)[2] == 1  # on disk: a mixture, and a journal
    assert (tmp_path / ".darkmatter" / journal.JOURNAL).exists()
    assert OutputStore(tmp_path).read_json("statistics.json") == {"version": 2}  # the reader rolls forward first
    assert _raw(tmp_path) == [2, 2, 2, "v2"]
    assert not (tmp_path / ".darkmatter" / journal.JOURNAL).exists()
    with store.lock("next"):  # the next writer removes the dead child's staging folder
        pass
    assert [p.name for p in (tmp_path / ".darkmatter").iterdir()] == [journal.MANIFEST]


def test_a_kill_before_the_journal_leaves_the_old_files(tmp_path):
    store = OutputStore(tmp_path)
    _write_all(store, 1)
    assert _killed_at(tmp_path, 1) == -signal.SIGKILL
    assert OutputStore(tmp_path).read_json("ica.json") == {"version": 1}
    assert _raw(tmp_path) == [1, 1, 1, "v1"]


def test_a_kill_while_a_folder_is_moved_aside_is_completed(tmp_path):
    store = OutputStore(tmp_path)
    _write_all(store, 1)
    labels = []
    journal._labels = labels
    try:
        _write_all(store, 1)
    finally:
        journal._labels = None
    aside = labels.index("aside") + 1  # the old dashboard/ moved aside, the new one not yet in place
    assert _killed_at(tmp_path, aside) == -signal.SIGKILL
    assert not (tmp_path / "dashboard").exists()
    assert OutputStore(tmp_path).exists("dashboard") and _raw(tmp_path) == [2, 2, 2, "v2"]


def test_a_commit_that_cannot_be_applied_stops_every_reader(tmp_path, monkeypatch):
    store = OutputStore(tmp_path)
    _write_all(store, 1)
    real = os.replace

    def immutable_statistics(src, dst):  # like `chattr +i statistics.json`: its rename is refused
        if str(dst).endswith("statistics.json"):
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", immutable_statistics)
    with pytest.raises(DarkMatterError, match="stopped part-way.*Operation not permitted.*rerun any step"):
        _write_all(store, 2)
    with pytest.raises(DarkMatterError, match="stopped part-way"):  # a reader refuses the mixture
        OutputStore(tmp_path).read_json("statistics.json")
    monkeypatch.setattr(os, "replace", real)  # the cause fixed: the next reader completes it
    assert OutputStore(tmp_path).read_json("statistics.json") == {"version": 2}
    assert _raw(tmp_path) == [2, 2, 2, "v2"]


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_target_of_the_wrong_kind_is_refused_before_anything_changes(tmp_path, kind):
    store = OutputStore(tmp_path)
    _write_all(store, 1)
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    elsewhere.mkdir()
    os.replace(tmp_path / "dashboard", elsewhere / "dashboard")
    if kind == "symlink":
        (tmp_path / "dashboard").symlink_to(elsewhere / "dashboard")
    else:
        (tmp_path / "dashboard").write_text("a file")
    with pytest.raises(DarkMatterError, match="nothing was changed"):
        _write_all(store, 2)
    assert [json.loads((tmp_path / n).read_text())["version"] for n in NAMES] == [1, 1, 1]
    assert (elsewhere / "dashboard" / "index.html").read_text() == "v1"
    assert not (tmp_path / ".darkmatter" / journal.JOURNAL).exists()


def test_the_manifest_tells_a_deleted_or_changed_output(tmp_path):
    store = OutputStore(tmp_path)
    store.script = "05_compare_sae.py"
    _write_all(store, 1)
    assert journal.changed(tmp_path, "05_compare_sae.py") == []
    assert journal.changed(tmp_path, "04_run_ica.py") == ["(no record)"]
    (tmp_path / "dashboard" / "index.html").write_text("v9")
    (tmp_path / "ica.json").unlink()
    assert sorted(journal.changed(tmp_path, "05_compare_sae.py")) == ["dashboard", "ica.json"]

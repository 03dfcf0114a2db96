"""The outputs store: atomic, all-or-nothing writes; typed results; producer messages."""

import numpy as np
import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.storage.store import OutputStore


def test_transaction_commits_all_files_together(tmp_path):
    store = OutputStore(tmp_path)
    with store.transaction():
        arr = store.open_npy("residuals.npy", (10, 3), np.float32)
        arr[:] = 1.5
        arr.flush()
        store.write_json("ica.json", {"k": 3})
        assert not store.exists("ica.json")  # staged, not yet visible
    assert store.read_json("ica.json") == {"k": 3}
    assert store.load_npy("residuals.npy").sum() == pytest.approx(45.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".darkmatter", "ica.json", "residuals.npy"]
    assert [p.name for p in (tmp_path / ".darkmatter").iterdir()] == ["manifest.json"]  # no staging left


def test_failed_transaction_leaves_nothing_and_keeps_old_files(tmp_path):
    store = OutputStore(tmp_path)
    with store.transaction():
        store.write_json("ica.json", {"k": 1})
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.write_json("ica.json", {"k": 2})
            store.save_npy("ica_directions.npy", np.zeros((2, 2)))
            raise RuntimeError("crash mid-step")
    assert store.read_json("ica.json") == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".darkmatter", "ica.json"]
    assert [p.name for p in (tmp_path / ".darkmatter").iterdir()] == ["manifest.json"]


def test_missing_input_names_the_script(tmp_path):
    with pytest.raises(DarkMatterError, match="run scripts/02_collect_activations.py first"):
        OutputStore(tmp_path).load_npy("residuals.npy")


def test_typed_results_round_trip_and_refuse_what_does_not_fit(tmp_path):
    from darkmatter.analysis.stats import Summary
    from darkmatter.analysis.tails import Firing

    store = OutputStore(tmp_path)
    result = Firing(summary=Summary(mean=1.0, median=0.5, min=0.0, max=3.0), mean_l0=4.5)
    with store.transaction():
        store.write_result("statistics.json", result, schema_version=3, run_id="abc")
    back, stamps = store.read_result("statistics.json", Firing, ("schema_version", "run_id"))
    assert back == result and stamps == {"schema_version": 3, "run_id": "abc"}
    with pytest.raises(DarkMatterError, match="does not fit this version.*07_statistics.py"):
        store.read_result("statistics.json", Summary)
    (tmp_path / "statistics.json").write_text("{not json")
    with pytest.raises(DarkMatterError, match="not valid JSON.*07_statistics.py"):
        store.read_json("statistics.json")


def test_unknown_file_names_are_refused(tmp_path):
    with pytest.raises(KeyError, match="table.py"):
        OutputStore(tmp_path).path("made_up.json")


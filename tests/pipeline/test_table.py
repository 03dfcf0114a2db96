"""The step table and the direction-set registry are the one place to extend the pipeline: a
dummy step and a dummy baseline, each registered once, show up in the CLI, the store, the
run_id stamps and the report."""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from darkmatter.analysis import directions
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import cli, flags, resolve, table
from darkmatter.pipeline.results import ICAResult
from darkmatter.pipeline.storage.store import OutputStore

SMALL = ["--preset", "planted", "--planted-d-model", "32", "--planted-features", "48", "--planted-withheld", "8",
         "--n-tokens", "20000", "--stability-splits", "1", "--completeness-runs", "0"]


@dataclass(frozen=True)
class DummyResult:
    k: int
    n_stable: int


def run(ctx):
    """The dummy step: reads step 04's typed result and writes its own."""
    ica = ctx.read(ICAResult)
    with ctx.store.transaction():
        ctx.write(DummyResult(k=ica.k, n_stable=ica.n_stable), "dummy.json")


DUMMY_STEP = table.Step(9, "dummy", __name__, "A test step that copies two numbers from ica.json.",
                        reads=("ica.json",), writes=("dummy.json",))
DUMMY_BASELINE = directions.Baseline(name="axes", label="axes ({k} coordinate axes)",
                                     description="the first k coordinate axes of d_model",
                                     build=lambda c: np.eye(c.d_model)[:c.k])


def test_the_table_is_complete_and_consistent():
    steps = table.steps()
    assert [s.number for s in steps] == list(range(1, 9))
    assert [s.script for s in steps][:2] == ["01_setup_and_load.py", "02_collect_activations.py"]
    for s in steps:
        assert s.function().__doc__, f"{s.module}.run has no docstring"
        for name in s.reads:
            assert table.producer_step(name).number < s.number, (s.script, name)
    assert table.producer("ica.json") == "04_run_ica.py" and table.owner("ica").script == "04_run_ica.py"
    assert table.owner("run") is None
    assert [s.number for s in steps if s.sharded] == [2, 3, 4] and [s.number for s in steps if s.resumable] == [2]
    assert [s.number for s in steps if s.records_config] == [1, 2, 4, 5, 6, 7]  # the first, and every owner
    assert table.first() is steps[0] and table.last() is steps[-1]
    with pytest.raises(ValueError, match="already registered"):
        table.register(table.Step(4, "again", __name__, ""))
    with pytest.raises(ValueError, match="another producer"):
        table.register(table.Step(10, "clash", __name__, "", writes=("ica.json",)))


def test_one_row_and_one_baseline_reach_cli_store_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    with table.registered(DUMMY_STEP):
        directions.register_baseline(DUMMY_BASELINE)
        try:
            assert "09_dummy.py" in flags.build_parser(None).format_help()  # run_pipeline --help
            assert cli.run_all([*SMALL, "--outputs", str(out)]) == 0  # runs 01..09
            store = OutputStore(out)
            dummy = json.loads(store.path("dummy.json").read_text())
            ica = json.loads(store.path("ica.json").read_text())
            assert (dummy["k"], dummy["n_stable"]) == (ica["k"], ica["n_stable"])
            assert dummy["run_id"] == resolve.run_id(resolve.config_from_dict(store.read_json("config.json"), ""), 9)
            assert "09_dummy.py" in json.loads(store.path("timings.json").read_text())
            # the report (rebuilt now that 09 ran) lists the step and the baseline
            assert cli.main(8, ["--outputs", str(out)]) == 0
            report = store.path("report.md").read_text()
            assert "09_dummy.py" in report and "| axes |" in report and "coordinate axes" in report
            sim = json.loads(store.path("similarity.json").read_text())
            assert list(sim["sets"]) == ["ICA", "null", "random", "PCA", "axes"] == list(sim["sets_projected"])
            truth = json.loads(store.path("groundtruth.json").read_text())
            assert truth["sets"]["axes"]["n_directions"] == ica["k"]
            # a missing input of the dummy step names its producer; its own output names it too
            store.path("ica.json").unlink()
            assert cli.main(9, ["--outputs", str(out)]) == 2
            assert "run scripts/04_run_ica.py first" in capsys.readouterr().err
            with pytest.raises(DarkMatterError, match="09_dummy.py"):
                OutputStore(tmp_path / "empty").require("dummy.json")
        finally:
            directions.unregister_baseline("axes")
    assert "dummy.json" not in table.known_files() and "axes" not in directions.set_names()


def test_an_owner_of_a_section_records_its_change_in_config_json(tmp_path, capsys):
    """config.json lands with the commit of every step that owns a section (05 and 07 included),
    so a later step reads the value the owner ran with instead of refusing its outputs."""
    out = tmp_path / "run"
    small = ["--preset", "planted", "--planted-d-model", "16", "--planted-features", "24", "--planted-withheld", "4",
             "--n-tokens", "4000", "--stability-splits", "1", "--completeness-runs", "0", "--outputs", str(out)]
    assert cli.run_all([*small, "--until", "5"]) == 0
    assert cli.main(5, ["--outputs", str(out), "--null-draws", "7"]) == 0  # 05 owns compare.null_draws
    assert json.loads((out / "config.json").read_text())["compare"]["null_draws"] == 7
    assert cli.main(6, ["--outputs", str(out)]) == 0, capsys.readouterr().err

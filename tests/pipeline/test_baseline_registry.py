"""A baseline registered in analysis/directions.py reaches every comparison: step 05's sets, ground
truth, step 06's causal add-back, report.md's tables, the dashboard; and a snapshot of the older
results shape (one field per set) still reads back with its numbers under the baselines' names."""

import json

import numpy as np
import pytest

from darkmatter.analysis import directions
from darkmatter.pipeline import cli
from darkmatter.pipeline.report import readme
from darkmatter.pipeline.report.causal_table import causal_line, causal_markdown
from darkmatter.pipeline.results import SCHEMA_VERSION

DUMMY = "reversed"
#: The principal components in reverse order: the same parts as the PCA baseline, so every figure of
#: it must equal PCA's (each set is reordered by attribution before the add-back).
REVERSED = directions.Baseline(
    name=DUMMY, label="reversed PCA ({k} components)", description="the principal components, last first (a test)",
    build=directions.in_subspace(lambda c: np.eye(c.k)[::-1]), rotation=lambda c: np.eye(c.k)[::-1])
SMALL = ["--preset", "planted", "--planted-d-model", "32", "--planted-features", "48", "--planted-withheld", "8",
         "--n-tokens", "20000", "--stability-splits", "1", "--completeness-runs", "0", "--causal-windows", "32"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    with directions.registered(REVERSED):
        assert [b.name for b in directions.causal_baselines()] == [directions.NULL, directions.PCA, DUMMY]
        assert cli.run_all([*SMALL, "--outputs", str(out)]) == 0
    assert DUMMY not in directions.set_names()  # unregistered when the block ends
    return out


def _json(run_dir, name):
    data = json.loads((run_dir / name).read_text())
    assert data.pop("schema_version") == SCHEMA_VERSION
    return data


def test_registered_is_undone_even_when_the_block_raises():
    with pytest.raises(RuntimeError), directions.registered(REVERSED):
        assert DUMMY in directions.set_names() and directions.baseline(DUMMY).causal
        raise RuntimeError
    assert DUMMY not in directions.set_names()
    assert [b.name for b in directions.causal_baselines()] == [directions.NULL, directions.PCA]  # not "random"


def test_the_dummy_is_added_back_in_the_causal_tests_with_pca_s_numbers(run_dir):
    table = _json(run_dir, "causal.json")["table"]
    assert table["baseline_draws"] == {directions.NULL: 10, directions.PCA: 1, DUMMY: 1}
    assert [r["m"] for r in table["top_m"]] == [1, 3, 10]  # k = 13
    for r in table["top_m"]:
        assert list(r["baselines"]) == [directions.NULL, directions.PCA, DUMMY]
        mine, pca = r["baselines"][DUMMY], r["baselines"][directions.PCA]
        assert len(mine["draws"]) == 1 and mine["draws"][0] == mine["gap"]["share"]
        assert mine["gap"]["share"] == pytest.approx(pca["gap"]["share"], abs=1e-6)
        assert mine["gap"]["se"] == pytest.approx(pca["gap"]["se"], abs=1e-6)
        assert mine["parts"] == pytest.approx(pca["parts"], abs=1e-9) and 0 < mine["parts"] <= 13
        assert mine["versus"]["difference"] == pytest.approx(pca["versus"]["difference"], abs=1e-6)
        assert mine["versus"]["difference"] == pytest.approx(r["ica"]["share"] - mine["gap"]["share"], abs=1e-9)
    # the planted readout reads dark features: at m = 3 ICA beats its null and the principal components
    r = table["top_m"][1]
    assert r["ica"]["share"] > r["baselines"][directions.NULL]["high"]
    assert r["baselines"][DUMMY]["versus"]["difference"] > 0.1 and r["baselines"][DUMMY]["versus"]["p"] < 0.01


def test_the_dummy_is_a_direction_set_in_compare_and_ground_truth(run_dir):
    sim, truth = _json(run_dir, "similarity.json"), _json(run_dir, "groundtruth.json")
    assert list(sim["sets"]) == [directions.ICA, directions.NULL, "random", directions.PCA, DUMMY]
    assert sim["descriptions"][DUMMY] == REVERSED.description
    for key in ("sets", "sets_projected"):  # the same directions as PCA, in another order
        assert sim[key][DUMMY]["mean_max_abs_cos"] == pytest.approx(sim[key][directions.PCA]["mean_max_abs_cos"])
    assert truth["sets"][DUMMY]["n_found"] == truth["sets"][directions.PCA]["n_found"]
    assert truth["sets"][DUMMY]["mean_max_abs_cos"] == pytest.approx(truth["sets"][directions.PCA]["mean_max_abs_cos"])


def test_the_dummy_appears_in_report_md_the_causal_table_and_the_dashboard(run_dir):
    report = (run_dir / "report.md").read_text()
    causal = report.split("## Causal tests", 1)[1]
    r = _json(run_dir, "causal.json")["table"]["top_m"][1]
    mine = r["baselines"][DUMMY]
    assert f"| {DUMMY} |" in report.split("## Causal tests", 1)[0]  # the direction-set table (step 05)
    assert f"| {DUMMY} (same variance) |" in causal and f"| ICA − {DUMMY} (paired) |" in causal
    assert f"*{DUMMY}* (1 draw): {REVERSED.description}" in causal
    row = next(line for line in causal.splitlines() if line.startswith("| 3 | "))
    assert f"| {mine['gap']['share']:+.1%} ({mine['parts']:.1f} parts) |" in row
    assert f"{mine['versus']['difference']:+.1%} ± {mine['versus']['se']:.1%}" in row
    html = (run_dir / "dashboard" / "index.html").read_text()
    assert f"<th class=\"num\">ICA − {DUMMY}</th>" in html


def test_a_stored_result_renders_after_the_baseline_is_gone(run_dir):
    from pydantic import TypeAdapter

    from darkmatter.pipeline.results import CausalResult

    data = _json(run_dir, "causal.json")
    data.pop("run_id")
    result = TypeAdapter(CausalResult).validate_python(data)
    text = causal_markdown(result, len(result.table.order))
    assert f"| {DUMMY} (same variance) |" in text and f"*{DUMMY}* (1 draw)." in text  # no description left
    assert f" {DUMMY} {result.table.top_m[-1].baselines[DUMMY].gap.share:.1%}" in causal_line(result)


def test_a_schema_6_snapshot_reads_back_under_the_baselines_names():
    old = json.loads((readme.RUNS / "planted.json").read_text())["causal"]["table"]
    assert "null_draws" in old  # the committed snapshot is of the older shape
    t = readme.load("planted").causal.table
    assert t.baseline_draws == {directions.NULL: old["null_draws"], directions.PCA: 1}
    for was, now in zip(old["top_m"], t.top_m, strict=True):
        null, pca = now.baselines[directions.NULL], now.baselines[directions.PCA]
        assert (null.gap.share, null.draws, null.low, null.high) == (was["null_mean"], was["null"], was["null_low"],
                                                                     was["null_high"])
        assert null.versus is not None and null.versus.p == was["versus_null"]["p"]
        assert (pca.gap.share, pca.gap.se, pca.parts, pca.versus) == (was["pca"]["share"], was["pca"]["se"],
                                                                       was["pca_parts"], None)

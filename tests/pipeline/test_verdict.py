"""The verdict: report.md's first lines say what was found against which null, the detection limit,
what would change it and how FastICA ended; step 08 and a skipped rerun print it, then the paths."""

import dataclasses
import json
import shutil

import pytest
from pydantic import TypeAdapter

from darkmatter.pipeline import cli
from darkmatter.pipeline.report import aggregate as report
from darkmatter.pipeline.report import console, verdict
from darkmatter.pipeline.results import SCHEMA_VERSION
from darkmatter.pipeline.results.document import Results
from tests.conftest import SMALL_PLANTED


def load(run_dir) -> Results:
    data = json.loads((run_dir / "ica_dark_matter_results.json").read_text())
    assert data.pop("schema_version") == SCHEMA_VERSION and data.pop("run_id")
    return TypeAdapter(Results).validate_python(data)


def parts(r: Results, **changes) -> report.Parts:
    p = report.Parts(setup=r.setup, sae_stats=r.sae_stats, diagnostics=r.diagnostics, ica=r.ica,
                     similarity=r.similarity, bank=None, statistics=r.statistics,  # type: ignore[arg-type]
                     groundtruth=r.groundtruth, linear_split=r.linear_split, causal=r.causal,
                     completeness=r.completeness, amplitude=r.amplitude)
    return dataclasses.replace(p, **changes)


def test_report_md_opens_with_the_answer_its_limit_and_what_would_change_it(small_planted_run):
    r = load(small_planted_run)
    lines = (small_planted_run / "report.md").read_text().splitlines()
    assert [line.split(":**")[0] for line in lines[2:6]] == [f"- **{label}" for label in verdict.LABELS]
    answer, limit, change, converged = lines[2:6]
    n = len(r.candidate_dark_matter_components)
    assert (f"{n} dark-matter candidate" in answer) if n else ("no dark-matter candidates" in answer)
    assert "matched null" in answer and "norm-matched elliptical surrogate" in answer
    c = r.completeness
    assert c is not None and f"of {int(c.grid['runs'])} injections" in limit
    for lim in c.limits:  # every firing rate's limit is in the sentence, as a share of the residual's variance
        rate = f"{lim.rate:.1%}".replace(".0%", "%")
        assert rate in limit
        if lim.kept is not None:
            assert verdict._pct(lim.kept) in limit
    assert f"gave {c.false_candidates} false candidate" in limit
    assert f"{r.ica.n_tokens:,} tokens" in change and f"allows k ≤ {r.ica.k_bound}" in change
    assert "--ica-max-iter" in converged and "settled" in converged
    assert r.answer == [line.replace("**", "", 2).removeprefix("- ").replace(":", ":", 1)
                        for line in []] or len(r.answer) == 4


def test_a_count_without_the_grid_says_it_has_no_limit(small_planted_run):
    r = load(small_planted_run)
    lines = verdict.verdict(parts(r, completeness=None), [])
    assert lines[1].startswith("Detection limit: not measured (--completeness-runs 0)")
    assert "--completeness-runs 3" in lines[2]


def test_candidates_are_named_with_their_null(small_planted_run):
    r = load(small_planted_run)
    answer = verdict.finding(parts(r), [3, 7])
    assert answer.startswith("2 dark-matter candidates (components 3, 7)")
    assert f"{r.similarity.against_null.null_p99:.3f}" in answer


def test_the_convergence_line_counts_restarts_that_hit_the_cap(small_planted_run):
    r = load(small_planted_run)
    seeds = list(r.ica.seeds)
    capped = dataclasses.replace(seeds[-1], converged=False, stopped_on_stability=False, n_settled=0)
    ica = dataclasses.replace(r.ica, seeds=[*seeds[:-1], capped])
    text = verdict.convergence(ica)
    assert f"{len(seeds) - 2} of {len(seeds) - 1} restarts stopped once stable" in text
    assert "1 hit the cap (--ica-max-iter" in text and "with 0 rows settled" in text
    assert f"main fit settled {seeds[0].n_settled} of {r.ica.k} rows" in text


def test_the_console_ends_with_the_paths(small_planted_run):
    r = load(small_planted_run)
    lines = console.closing_lines(r, small_planted_run)
    paths = console.path_lines(r, small_planted_run)
    assert lines[-len(paths):] == paths and paths[0].startswith("report:")
    assert str(small_planted_run / "dashboard/index.html") in "\n".join(paths)
    assert lines.index(r.answer[0]) < len(lines) - len(paths)  # the verdict comes before the paths


@pytest.mark.slow(seconds=30)
def test_a_fully_skipped_rerun_prints_the_verdict_and_the_paths(small_planted_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(small_planted_run, out)
    assert cli.run_all([*SMALL_PLANTED, "--outputs", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert all(f"{s}: skipped" in "\n".join(printed) for s in ("01_setup_and_load.py", "08_save_report.py"))
    assert printed[-1].startswith("plots:") and any(line.startswith("report:") for line in printed[-6:])
    assert any(line.startswith("Answer: ") for line in printed)

"""The report builder: results from typed stage results only, rendered the same from the JSON."""

import json

import pytest
from pydantic import TypeAdapter

from darkmatter.analysis.directions import set_names
from darkmatter.pipeline import cli, table
from darkmatter.pipeline.report import aggregate as report
from darkmatter.pipeline.report.markdown import layers_markdown, report_markdown
from darkmatter.pipeline.results import SCHEMA_VERSION
from darkmatter.pipeline.results.document import Results

SMALL = ["--preset", "planted", "--planted-d-model", "32", "--planted-features", "48", "--planted-withheld", "8",
         "--n-tokens", "20000", "--stability-splits", "1", "--completeness-runs", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert cli.run_all([*SMALL, "--outputs", str(out)]) == 0
    return out


def load(run_dir) -> Results:
    data = json.loads((run_dir / "ica_dark_matter_results.json").read_text())
    assert data.pop("schema_version") == SCHEMA_VERSION and data.pop("run_id")
    return TypeAdapter(Results).validate_python(data)


def test_the_results_file_reads_back_typed_and_renders_report_md(run_dir):
    results = load(run_dir)
    assert report_markdown(results) == (run_dir / "report.md").read_text()
    assert results.generated and "CPU cores" in results.machine
    assert [s.script for s in results.steps] == [s.script for s in table.steps()]
    assert results.steps[0].timing is not None and "setup.json" in results.steps[0].outputs
    assert len(results.components) == results.ica.k
    assert set(results.arrays) >= {"residuals.npy", "ica_activations.npy"}
    assert results.plots[-1] == "groundtruth_recovery.png"


def test_report_md_has_every_direction_set_the_null_and_the_steps(run_dir):
    text = (run_dir / "report.md").read_text()
    for name in set_names():
        assert f"| {name} |" in text, name
    assert "## Noise floor" in text and "## Ground truth (planted)" in text and "## The k sweep" in text
    assert "## How to read this report" in text and "FVU with excluded tokens" in text
    assert all(s.script in text for s in table.steps())
    results = load(run_dir)
    assert any("noise floor" in line for line in results.headline)
    assert any("matched null" in line for line in results.headline)
    assert results.noise_floor.control_n_stable == 0
    assert results.candidate_dark_matter_components == report.candidates(report.Parts(
        setup=results.setup, sae_stats=results.sae_stats, diagnostics=results.diagnostics, ica=results.ica,
        similarity=results.similarity, bank=None, statistics=results.statistics))  # type: ignore[arg-type]


def test_components_md_lists_every_component(run_dir):
    text = (run_dir / "components.md").read_text()
    k = load(run_dir).ica.k
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(line.split("|")[1]) for line in rows] == list(range(k))  # one row per component, in order
    assert "no logit lens" in text and "feature_bank.json" in text  # what the source cannot show; the detail


def test_layers_table_has_one_row_per_layer(run_dir):
    results = load(run_dir)
    summary = report.layers_summary({0: results, 6: results})
    text = layers_markdown(summary)
    assert [r.layer for r in summary.layers] == [0, 6]
    assert text.count("| planted |") == 0 and text.count("`planted`") == 2
    assert " / ".join(set_names()) + " max abs cos to SAE" in text


def test_the_causal_section_reports_the_clustered_tests(run_dir):
    """The planted readout reads 4 dark features: 4 tested components close the gap beyond their null;
    report.md shows the per-component table, the null range and both losses recovered, named."""
    results = load(run_dir)
    assert results.causal is not None
    t = results.causal.table
    # planted documents hold ~200 rows: 64 held-out sequences of 128 come from ≥ 32 of them
    assert t.n_sequences == 64 and t.n_documents >= 32 and t.fit_documents + t.score_documents == t.n_documents
    assert 3 <= sum(e.closes_gap for e in t.components) <= 4 and all(e.holm for e in t.components if e.closes_gap)
    assert t.null_draws == 10 and all(len(r.null) == 10 and r.null_low <= r.null_high for r in t.top_m)
    md = report_markdown(results)
    for text in ("Loss recovered by the SAE (SAELens)", "on the analysed positions only", "matched-null part",
                 "Holm (α = 0.01)", "95% range of 10", "ICA − null (paired)", "random error of norm"):
        assert text in md, text


PROBES = ["<img src=x onerror=alert(1)>", "``<script>alert(1)</script>``", "a\n<img src=y onerror=alert(2)>",
          "](javascript:alert(3)) ![x](http://x/y.png)", "| <b>cell</b> |"]


def _live_html(markdown: str) -> list[str]:
    """Raw HTML tags a CommonMark + GFM-tables renderer would emit from ``markdown``."""
    import re

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    ours = {f'src="{p}"' for p in report.PLOTS}  # the report's own plots
    tags = [t for t in re.findall(r"<(?:img|script|b)\b[^>]*>", rendered) if not any(o in t for o in ours)]
    return tags + re.findall(r'(?:href|src)="javascript', rendered)


def test_generated_markdown_escapes_what_comes_from_data(run_dir):
    """Contexts, tokens, paths, descriptions and labels from a hostile corpus stay text in
    components.md and report.md (the probe strings of the trust review)."""
    import dataclasses

    from darkmatter.pipeline.report.markdown import components_markdown
    from darkmatter.pipeline.results import FeatureBank

    bank = TypeAdapter(FeatureBank).validate_python(
        {k: v for k, v in json.loads((run_dir / "feature_bank.json").read_text()).items()
         if k not in ("schema_version", "run_id")})
    probe = " ".join(PROBES)
    comps = [dataclasses.replace(c, top=[dataclasses.replace(t, context=probe) for t in c.top],
                                 token_histogram=[(p, 1) for p in PROBES]) for c in bank.components]
    hostile = dataclasses.replace(bank, components=comps, description=probe, hook_name=probe, note=probe)
    text = components_markdown(hostile)
    assert _live_html(text) == [] and "&lt;img src=x onerror=alert(1)&gt;" in \
        __import__("markdown_it").MarkdownIt("commonmark").enable("table").render(text)
    results = load(run_dir)
    setup = dataclasses.replace(results.setup, description=probe,
                                sae=dataclasses.replace(results.setup.sae, source=probe),
                                hook=dataclasses.replace(results.setup.hook, hook_name=probe))
    comps = [dataclasses.replace(c, labels=PROBES, top_tokens=PROBES) for c in results.components]
    hostile_results = dataclasses.replace(results, setup=setup, components=comps, machine=probe,
                                          headline=[*results.headline, probe], verdict=probe)
    assert _live_html(report_markdown(hostile_results)) == []

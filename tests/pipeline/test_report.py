"""The report builder: results from typed stage results only, rendered the same from the JSON."""

import json

import pytest
from pydantic import TypeAdapter

from darkmatter.analysis.directions import NULL, set_names
from darkmatter.pipeline import table
from darkmatter.pipeline.report import aggregate as report
from darkmatter.pipeline.report.markdown import layers_markdown, report_markdown
from darkmatter.pipeline.results import SCHEMA_VERSION
from darkmatter.pipeline.results.document import Results


@pytest.fixture(scope="module")
def run_dir(small_planted_run):
    return small_planted_run


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
        assert f"| {name} |" in text or f"| {name} (one draw) |" in text, name
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
    assert t.baseline_draws[NULL] == 10
    assert all(len(r.baselines[NULL].draws) == 10 and r.baselines[NULL].low <= r.baselines[NULL].high for r in t.top_m)
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


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading``, split into cells at unescaped pipes."""
    import re

    lines = markdown.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_report_md_sections_tables_and_candidates(run_dir):
    """report.md (templates/report.md.j2): its sections in order, the components table one row per
    component with the candidates marked, the chosen k in bold; optional sections drop out whole."""
    import dataclasses

    results = load(run_dir)
    md = report_markdown(results)
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## Headline", "## Key figures against their nulls", "## How to read this report", "## Verdict", "## SAE",
        "## The k sweep",
        "## Direction sets against the SAE dictionary", "## ICA", "## Noise floor",
        "## Detection limit (injection–recovery)", "## Amplitude error", "## Components",
        "## The linear part (Engels et al. 2024)", "## Causal tests: does the model use the residual?",
        "## Ground truth (planted)", "## Plots", "## Steps", "## Arrays"]
    assert md.endswith(" |\n") and "\n\n\n" not in md
    rows = _table_rows(md, "## Components")
    assert [int(r[0]) for r in rows] == [c.component for c in results.components[:40]]
    marked = {int(r[0]) for r in rows if r[7] == "**yes**"}
    assert marked and marked == set(results.candidate_dark_matter_components)
    assert all(r[7] == ", ".join(c.not_candidate_because) for r, c in zip(rows, results.components)
               if not c.candidate)
    sweep = _table_rows(md, "## The k sweep")
    assert [r[0] for r in sweep] == [f"**{x.k}**" if x.k == results.ica.k else str(x.k) for x in results.ica.k_sweep]
    assert sum(r[0].startswith("**") for r in sweep) == 1
    steps = _table_rows(md, "## Steps")
    assert [r[0] for r in steps] == [s.script for s in results.steps] + ["**total**"]
    plots = md.split("## Plots\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert plots == [f"![{p}]({p})" for p in results.plots]

    bare = dataclasses.replace(results, noise_floor=None, completeness=None, amplitude=None, linear_split=None,
                               causal=None, groundtruth=None, detection_limit=None, headline=[])
    text = report_markdown(bare)
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## Headline", "## Key figures against their nulls", "## How to read this report", "## Verdict", "## SAE",
        "## The k sweep",
        "## Direction sets against the SAE dictionary", "## ICA", "## Detection limit", "## Components", "## Plots",
        "## Steps", "## Arrays"]
    assert "## Headline\n\n\n## Key figures against their nulls" in text
    assert "- **detection limit**: not measured.\n" in text and "(detection limit not measured).\n" in text
    assert "\n\n## Detection limit\n\nNot measured (`--completeness-runs 0`)" in text


def test_report_md_escapes_data_through_esc_and_code(run_dir):
    """The template's |esc and |code filters are mdtable's: the probe strings come out exactly as
    esc()/code() write them, in the title, the prose and the components table's cells."""
    import dataclasses

    from darkmatter.pipeline.report.mdtable import code, esc, token

    results = load(run_dir)
    probe = " ".join(PROBES)
    setup = dataclasses.replace(results.setup, description=probe,
                                hook=dataclasses.replace(results.setup.hook, hook_name=probe))
    comps = [dataclasses.replace(c, labels=PROBES, top_tokens=PROBES) for c in results.components]
    md = report_markdown(dataclasses.replace(results, setup=setup, components=comps, verdict=probe, machine=probe,
                                             headline=[probe], answer=[f"Answer: {probe}"]))
    lines = md.splitlines()
    assert lines[0] == f"# ICA dark matter report: planted activations {code(probe)}"
    assert lines[2] == f"- **Answer:** {esc(probe)}"
    lines = lines[2:]  # the rest as before the verdict lines
    assert lines[2] == f"Source: {esc(probe)}."
    assert lines[4].endswith(f" on {esc(probe)}.") and f"- {esc(probe)}" in lines
    assert lines[lines.index("## Verdict") + 2] == esc(probe)
    rows = _table_rows(md, "## Components")
    assert all(r[8] == esc(", ".join(PROBES)) and r[9] == ", ".join(token(t) for t in PROBES[:3]) for r in rows)
    assert lines[2].startswith(r"Source: &lt;img src=x onerror=alert(1)&gt; "
                               r"\`\`&lt;script&gt;alert(1)&lt;/script&gt;\`\`")

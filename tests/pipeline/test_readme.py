"""The README's results tables are generated from the runs in docs/runs/, not typed by hand."""

from darkmatter.pipeline import readme


def test_readme_tables_match_the_runs():
    text = (readme.ROOT / "README.md").read_text()
    assert readme.render_readme(text) == text, "README.md is stale: run python -m darkmatter.pipeline.readme"
    assert len(readme.BLOCK.findall(text)) == len(readme.TABLES)


def test_every_snapshot_reads_back_typed():
    for name in ("offline_default", "planted"):
        r = readme.load(name)
        assert r.generated and r.machine and r.steps

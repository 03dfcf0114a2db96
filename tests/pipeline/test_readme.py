"""The README's results tables are generated from the runs in docs/runs/, not typed by hand."""

from darkmatter.pipeline import readme


def test_readme_tables_match_the_runs():
    names = []
    for path in readme.GENERATED_FILES:
        text = path.read_text()
        assert readme.render_readme(text) == text, f"{path.name} is stale: run python -m darkmatter.pipeline.readme"
        names += [m.group("name") for m in readme.BLOCK.finditer(text)]
    assert sorted(names) == sorted(readme.TABLES)  # every table appears once, in one of the files


def test_every_snapshot_reads_back_typed():
    for name in ("offline_default", "planted", "study_2m"):
        r = readme.load(name)
        assert r.generated and r.machine and r.steps

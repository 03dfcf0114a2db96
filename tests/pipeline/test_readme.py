"""The README's results tables are generated from the runs in docs/runs/, not typed by hand."""

from darkmatter.pipeline.report import readme


def test_readme_tables_match_the_runs():
    names = []
    for path in readme.GENERATED_FILES:
        text = path.read_text()
        fix = "python -m darkmatter.pipeline.report.readme"
        assert readme.render_readme(text) == text, f"{path.name} is stale: run {fix}"
        names += [m.group("name") for m in readme.BLOCK.finditer(text)]
    assert sorted(names) == sorted(readme.TABLES)  # every table appears once, in one of the files


def test_every_snapshot_reads_back_typed():
    for name in ("offline_default", "planted", "study_2m"):
        r = readme.load(name)
        assert r.generated and r.machine and r.steps


def test_the_faster_offline_default_gives_the_same_results_within_their_standard_errors():
    from darkmatter.pipeline.report.speed_table import agreement

    before, after = readme.load("offline_default_before_speed"), readme.load("offline_default")
    checks = agreement(before, after)
    assert len(checks) >= 12
    assert [c.quantity for c in checks if not c.ok] == []
    # the after run is the faster one (the per-step seconds the RESULTS.md table shows)
    seconds = [sum(s.timing.seconds for s in r.steps if s.timing) for r in (before, after)]
    assert seconds[1] < seconds[0]


def test_agreement_flags_a_run_whose_results_moved():
    from dataclasses import replace

    from darkmatter.pipeline.report.speed_table import agreement

    before = readme.load("offline_default")
    gap = before.causal.table.subspace_gap_closed
    table = replace(before.causal.table, subspace_gap_closed=replace(gap, share=gap.share + 10 * gap.se))
    moved = replace(before, ica=replace(before.ica, floor=before.ica.floor_interval[1] * 2),
                    causal=replace(before.causal, table=table))
    bad = {c.quantity for c in agreement(before, moved) if not c.ok}
    assert bad == {"noise floor (largest control |excess kurtosis|)", "gap closed by the whole k-subspace"}

"""Step 08: aggregate every step's typed result into ica_dark_matter_results.json and report.md."""

from __future__ import annotations

from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.tails import TailComparison
from darkmatter.pipeline import report, table
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.document import ArrayInfo, StepRecord, Timing
from darkmatter.pipeline.markdown import report_markdown
from darkmatter.pipeline.results import (
    CollectResult,
    ICAResult,
    InterpretationsResult,
    LinearSplitResult,
    SetupResult,
    SimilarityResult,
    TrainingRecord,
)


def run(ctx: StepContext) -> None:
    """Aggregate every JSON into ica_dark_matter_results.json and write report.md."""
    store = ctx.store
    parts = report.Parts(
        setup=ctx.read(SetupResult), sae_stats=ctx.read(CollectResult), diagnostics=ctx.read(ResidualDiagnostics),
        ica=ctx.read(ICAResult), similarity=ctx.read(SimilarityResult),
        interpretations=ctx.read(InterpretationsResult), statistics=ctx.read(TailComparison),
        groundtruth=ctx.read(GroundTruthScores) if ctx.exists(GroundTruthScores) else None,
        sae_training=ctx.read(TrainingRecord) if ctx.exists(TrainingRecord) else None,
        linear_split=ctx.read(LinearSplitResult) if ctx.exists(LinearSplitResult) else None)
    timings = store.read_json("timings.json") if store.exists("timings.json") else {}
    steps = [StepRecord(number=s.number, script=s.script, summary=s.summary,
                        outputs=[f for f in s.writes if store.exists(f)],
                        timing=Timing(**timings[s.script]) if s.script in timings else None)
             for s in table.steps()]
    arrays = {}
    for name in sorted(n for n in table.known_files() if n.endswith(".npy") and store.exists(n)):
        arr = store.load_npy(name)
        arrays[name] = ArrayInfo(shape=list(arr.shape), dtype=str(arr.dtype))
    plots = [p for p in report.PLOTS if store.exists(p)]
    results = report.aggregate(ctx.cfg.to_dict(), parts, steps, arrays, plots)
    with store.transaction():
        ctx.write(results)
        store.write_text("report.md", report_markdown(results))
    print(f"wrote {store.path('report.md')}")
    for line in results.headline:
        print("  " + line)

"""Step 08: aggregate every step's typed result into ica_dark_matter_results.json and report.md; the
static dashboard (dashboard/index.html and a page per component, :mod:`darkmatter.pipeline.report.dashboard`);
the ICA components as an SAELens SAE in ica_sae/ (:mod:`darkmatter.sources.ica_sae`)."""

from __future__ import annotations

import dataclasses
import math

from darkmatter.analysis.amplitude import Amplitude
from darkmatter.analysis.diagnostics import ResidualDiagnostics
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.analysis.injection import CompletenessResult
from darkmatter.analysis.tails import TailComparison
from darkmatter.pipeline import source_kinds, table
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.report import aggregate as report
from darkmatter.pipeline.report import console, dashboard, statistics
from darkmatter.pipeline.report.markdown import report_markdown
from darkmatter.pipeline.results import (
    CausalResult,
    CollectResult,
    FeatureBank,
    ICAResult,
    LinearSplitResult,
    SetupResult,
    SimilarityResult,
    TrainingRecord,
)
from darkmatter.pipeline.results.document import ArrayInfo, StepRecord, Timing
from darkmatter.pipeline.steps import autointerp_step
from darkmatter.sources.collect import SAEMetrics
from darkmatter.sources.ica_sae import ica_sae_metadata, rms_norm, save_ica_sae


def _ica_sae_metadata(ctx: StepContext, hook_name: str, metrics: SAEMetrics) -> dict:
    """The ICA SAE's metadata: the run's, the base SAE (pretrained release/id, else its folder,
    absolute) and the RMS row norms of the residual (from step 02's MSE: √(MSE · d_model)) and of
    activations.npy (streamed)."""
    s, store, chunk = ctx.cfg.source, ctx.store, ctx.cfg.run.sae_chunk_size
    base = ({"base_sae_release": s.sae_release, "base_sae_id": s.sae_id} if s.sae_release else
            {"base_sae_path": s.sae_path or store.path("sae")})
    activations = store.load_npy("activations.npy")
    return ica_sae_metadata(source_kinds.sae_metadata(ctx.cfg.to_dict()), hook_name=hook_name, **base,
                            residual_rms_norm=math.sqrt(metrics.mse * activations.shape[1]),
                            activation_rms_norm=rms_norm(activations, chunk))


def run(ctx: StepContext) -> None:
    """Aggregate every JSON into ica_dark_matter_results.json and write report.md."""
    store = ctx.store
    parts = report.Parts(
        setup=ctx.read(SetupResult), sae_stats=ctx.read(CollectResult), diagnostics=ctx.read(ResidualDiagnostics),
        ica=ctx.read(ICAResult), similarity=ctx.read(SimilarityResult),
        bank=ctx.read(FeatureBank), statistics=ctx.read(TailComparison),
        groundtruth=ctx.read(GroundTruthScores) if ctx.exists(GroundTruthScores) else None,
        sae_training=ctx.read(TrainingRecord) if ctx.exists(TrainingRecord) else None,
        linear_split=ctx.read(LinearSplitResult) if ctx.exists(LinearSplitResult) else None,
        causal=ctx.read(CausalResult) if ctx.exists(CausalResult) else None,
        completeness=ctx.read(CompletenessResult) if ctx.exists(CompletenessResult) else None,
        amplitude=ctx.read(Amplitude) if ctx.exists(Amplitude) else None)
    timings = store.read_json(table.TIMINGS_FILE) if store.exists(table.TIMINGS_FILE) else {}
    steps = [StepRecord(number=s.number, script=s.script, summary=s.summary,
                        outputs=list(s.writes) if s == ctx.step else [f for f in s.writes if store.exists(f)],
                        timing=Timing(**timings[s.script]) if s.script in timings else None)
             for s in table.steps()]
    arrays = {}
    for name in sorted(n for n in table.known_files() if n.endswith(".npy") and store.exists(n)):
        arr = store.load_npy(name)
        arrays[name] = ArrayInfo(shape=list(arr.shape), dtype=str(arr.dtype))
    plots = [p for p in report.PLOTS if store.exists(p)]
    results = report.aggregate(ctx.cfg.to_dict(), parts, steps, arrays, plots)
    auto = autointerp_step.read_current(store.root, store.read_json("feature_bank.json").get("run_id"))
    if auto is not None:  # the optional auto-interpretation, when it ran on this feature bank
        results = dataclasses.replace(results, headline=[*results.headline, autointerp_step.summary_line(auto)])
    pages = dashboard.render(parts.bank, parts.causal, results.headline,
                             f"{parts.setup.description}, SAE {results.setup.sae.source}", auto,
                             key_figures=statistics.rows(results), verdict=results.answer,
                             unit=parts.ica.resampling_unit)
    with store.transaction():
        ctx.write(results)
        store.write_text("report.md", report_markdown(results))
        folder = store.staged_dir("dashboard")
        for rel, html in pages.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(html)
        save_ica_sae(store.staged_dir("ica_sae"), store.load_npy("ica_unmixing.npy", mmap=False),
                     store.load_npy("ica_mixing.npy", mmap=False), store.load_npy("residual_mean.npy", mmap=False),
                     _ica_sae_metadata(ctx, parts.setup.hook.hook_name, parts.sae_stats.metrics),
                     final=store.path("ica_sae"))
    print(f"wrote {store.path('report.md')}, the dashboard ({len(pages) - 1} component pages) and the components as "
          "an SAELens SAE of the residual")
    print("\n".join(console.closing_lines(results, store.root)))

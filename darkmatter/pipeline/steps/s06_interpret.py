"""Step 06: what each component means and whether the model uses it.

In order: the linear/nonlinear split of the residual (Engels et al. 2024;
:mod:`darkmatter.pipeline.steps.linear_part`), the causal tests on held-out text
(:mod:`darkmatter.pipeline.steps.causal_part`), and the feature bank (:mod:`darkmatter.pipeline.steps.bank`):
one entry per component with its examples, histogram, logit lens, nearest SAE features, verdicts,
linear share and causal figures; ``components.md`` is its short index.
"""

from __future__ import annotations

import time

import numpy as np

from darkmatter.analysis.directions import NULL
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.report import plots
from darkmatter.pipeline.report.causal_table import causal_line
from darkmatter.pipeline.report.components_table import components_frame
from darkmatter.pipeline.report.markdown import components_markdown
from darkmatter.pipeline.results import CollectResult, ICAResult, SetupResult, SimilarityResult
from darkmatter.pipeline.steps import bank, causal_part, linear_part

#: the top-m add-back against its baselines (written only where the causal tests ran top-m rows)
TOPM_PLOT = "causal_topm.png"


def run(ctx: StepContext) -> None:
    """The linear split, the causal tests and the feature bank of every component."""
    setup, _, ica, similarity = (ctx.read(SetupResult), ctx.read(CollectResult), ctx.read(ICAResult),
                                 ctx.read(SimilarityResult))
    store = ctx.store
    truth = ctx.read(GroundTruthScores) if ctx.exists(GroundTruthScores) else None
    t0 = time.perf_counter()
    x, r = ctx.arrays("activations.npy", "residuals.npy", d_model=setup.d_model)
    split = linear_part.split(ctx, ica, x, r)
    t_split = time.perf_counter() - t0
    causal = causal_part.run(ctx, ica, similarity)
    t0 = time.perf_counter()
    result = bank.build(ctx, setup, ica, similarity, truth, split, causal)
    t_bank = time.perf_counter() - t0
    with store.transaction():
        ctx.write(split)
        if causal is not None:
            ctx.write(causal)
        if causal is not None and causal.table.top_m:
            store.save_figure(TOPM_PLOT, plots.causal_topm(
                causal.table, f"Top-m add-back of the {ica.k} ICA components against "
                + " and ".join(("the matched null" if n == NULL else n) for n in causal.table.top_m[0].baselines)
                + " at equal variance"))
        ctx.discard_unless(({"causal.json"} if causal else set())
                           | ({TOPM_PLOT} if causal and causal.table.top_m else set()), "causal.json", TOPM_PLOT)
        ctx.write(result)
        store.write_text("components.md", components_markdown(result))
        table = components_frame(result)
        table.to_csv(store.staged_file("components.csv"), index=False)
        table.to_parquet(store.staged_file("components.parquet"), index=False)
    s = split.split
    print(f"linear part (Engels et al. 2024; map fitted on half the {split.unit}s, scored on the other): "
          f"{s.variance_predicted:.1%} of residual variance, R² {s.norm_predicted:.2f} for its norm; components "
          f"in the linear / nonlinear part / both / neither: " + " / ".join(str(v) for v in split.counts.values())
          + f" ({t_split:.0f} s)")
    if causal is not None:
        print(causal_line(causal) + f" ({causal.route}, {causal.seconds:.0f} s)")
    else:
        print("causal tests: skipped (" + ("--causal-windows 0" if ctx.cfg.interpret.causal_windows <= 0
                                           else "the source has no model after the hook") + ")")
    n_dup = int(np.mean([len(e.top) for e in result.components])) if result.components else 0
    print(f"feature bank: {result.k} components (~{n_dup} top contexts each, one per {split.unit}; {t_bank:.0f} s) → "
          f"{store.path('feature_bank.json')}" + (f" ({result.note})" if result.note else ""))

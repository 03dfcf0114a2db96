"""Step 06: what each component means: contexts, quantile samples, frequent tokens, logit lens,
nearest SAE features. The source decides what a row looks like (text with the token marked,
or a planted row's active features) and whether there is an unembedding for the logit lens."""

from __future__ import annotations

import numpy as np

from darkmatter.analysis import interpret, stats
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.markdown import components_markdown
from darkmatter.pipeline.results import (
    CollectResult,
    ComponentReading,
    Example,
    ICAResult,
    InterpretationsResult,
    LogitLens,
    NearestFeature,
    SetupResult,
    SimilarityResult,
)
from darkmatter.sources.base import RowContext

#: Random rows from which the quantile samples are drawn.
QUANTILE_SAMPLE = 100_000


def _example(ctx: RowContext, activation: float, quantile: float | None = None) -> Example:
    return Example(token=ctx.token, context=ctx.context, activation=float(activation), window=ctx.window,
                   position=ctx.position, row=ctx.row, quantile=quantile)


def run(ctx: StepContext) -> None:
    """Top/bottom contexts, quantile samples, frequent tokens, logit lens, nearest SAE features."""
    setup, _, _, similarity = (ctx.read(SetupResult), ctx.read(CollectResult), ctx.read(ICAResult),
                               ctx.read(SimilarityResult))
    cfg, store, source = ctx.cfg, ctx.store, ctx.source
    truth = ctx.read(GroundTruthScores) if ctx.exists(GroundTruthScores) else None
    sources = store.load_npy("ica_activations.npy")
    directions = store.load_npy("ica_directions.npy", mmap=False)
    index = store.load_npy("token_index.npy", mmap=False)
    tokens = store.load_npy("tokens.npy", mmap=False) if store.exists("tokens.npy") else None
    n_top = cfg.interpret.n_top_contexts
    top, bottom = interpret.extreme_rows(sources, n_top)
    qrows = stats.random_rows(len(sources), QUANTILE_SAMPLE, cfg.source.seed)
    qvalues = np.asarray(sources[qrows], dtype=np.float64)
    shown = np.unique(np.concatenate([top.ravel(), bottom.ravel(), qrows]))
    read = source.row_contexts(shown, index, tokens, cfg.interpret.context_window,
                               set(truth.dark_features) if truth else set())
    W_U = source.unembed()
    npid = cfg.source.neuronpedia_id
    components = []
    for i in range(directions.shape[0]):
        top_examples = [_example(read(r), sources[r, i]) for r in top[i]]
        logit = None
        if W_U is not None:
            up, down = interpret.logit_lens(directions[i], W_U, source.decode)
            logit = LogitLens(top=up, bottom=down)
        sim = similarity.components[i]
        components.append(ComponentReading(
            component=i, top=top_examples, bottom=[_example(read(r), sources[r, i]) for r in bottom[i]],
            quantiles=[_example(read(r), v, q) for q, r, v in interpret.quantile_rows(qvalues[:, i], qrows)],
            frequent_top_tokens=interpret.frequent_tokens(np.array([e.token for e in top_examples]), str),
            logit_lens=logit,
            nearest_sae_features=[NearestFeature(feature=f, cos=c, neuronpedia=f"{npid}/{f}" if npid else None)
                                  for f, c in zip(sim.top_features, sim.top_cos)],
            nearest_true_feature=truth.per_component[i] if truth else None))
    result = InterpretationsResult(k=len(components), note=source.note(), components=components)
    with store.transaction():
        ctx.record_config()
        ctx.write(result)
        store.write_text("components.md", components_markdown(result, setup))
    print(f"interpreted {len(components)} components → {store.path('components.md')}"
          + (f" ({result.note})" if result.note else ""))

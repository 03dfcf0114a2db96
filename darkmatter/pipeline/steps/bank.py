"""Step 06's feature bank: everything the run knows of each ICA component, in one entry.

Examples come from the sources over every analysed token: the top and bottom ones at most one
per document (so a repeated passage cannot fill them), quantile samples from a random subset,
each with its context token by token and the source's value at every token; beside them the
histogram, the share of tokens beyond ±2 standard deviations, frequent tokens, the logit lens,
the nearest SAE features, the verdicts of steps 04-05, the linear split and the causal figures.
"""

from __future__ import annotations

import numpy as np

from darkmatter.analysis import interpret, stats
from darkmatter.analysis.groundtruth import GroundTruthScores
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import (
    BankEntry,
    CausalResult,
    Example,
    FeatureBank,
    Histogram,
    ICAResult,
    LinearSplitResult,
    LogitLens,
    NearestFeature,
    SetupResult,
    SimilarityResult,
)
from darkmatter.sources.base import RowContext

#: Random rows from which the quantile samples are drawn.
QUANTILE_SAMPLE = 100_000
#: Ranked rows searched for top/bottom examples from distinct documents (× the examples wanted).
SEARCH = 10
#: Tokens among the top activations counted for the token histogram.
TOKEN_ROWS = 200


def build(ctx: StepContext, setup: SetupResult, ica: ICAResult, similarity: SimilarityResult,
          truth: GroundTruthScores | None, split: LinearSplitResult | None,
          causal: CausalResult | None) -> FeatureBank:
    """The feature bank of the run's components.

    Raises:
        DarkMatterError: an array of steps 02-04 is missing or unusable (names the step to rerun).
    """
    cfg, store, source = ctx.cfg, ctx.store, ctx.source
    sources = store.load_npy("ica_activations.npy")
    directions = store.load_npy("ica_directions.npy", mmap=False)
    index = store.load_npy("token_index.npy", mmap=False)
    tokens = store.load_npy("tokens.npy", mmap=False) if store.exists("tokens.npy") else None
    units, _ = ctx.units()
    n_top, width = cfg.interpret.n_top_contexts, cfg.interpret.context_window
    top_ranked, bottom_ranked = interpret.extreme_rows(sources, max(n_top * SEARCH, TOKEN_ROWS))
    top = interpret.one_per_unit(top_ranked, units, n_top)
    bottom = interpret.one_per_unit(bottom_ranked, units, n_top)
    qrows = stats.random_rows(len(sources), QUANTILE_SAMPLE, cfg.source.seed)
    qvalues = np.asarray(sources[qrows], dtype=np.float64)
    frequent = top_ranked[:, :TOKEN_ROWS]
    shown = np.unique(np.concatenate([*top, *bottom, qrows, frequent.ravel()]))
    read = source.row_contexts(shown, index, tokens, width, set(truth.dark_features) if truth else set())
    keys = interpret.row_keys(index, tokens.shape[1]) if tokens is not None and len(tokens) else None
    bos = setup.hook.bos_id if setup.hook.bos_id is not None else -1
    edges, counts, above, below = interpret.histograms(sources)
    W_U = source.unembed()
    npid = cfg.source.neuronpedia_id
    lin = {c.component: c for c in split.components} if split else {}

    def example(row: int, c: int, quantile: float | None = None) -> Example:
        rc: RowContext = read(int(row))
        toks = vals = at = None
        if keys is not None and rc.window is not None and rc.position is not None:
            toks, per, at = interpret.context_values(tokens, keys, sources, rc.window, rc.position, width,  # type: ignore[arg-type]
                                                     source.decode, bos)
            vals = [None if v is None else float(v[c]) for v in per]
        return Example(token=rc.token, context=rc.context, activation=float(sources[row, c]), window=rc.window,
                       position=rc.position, row=rc.row, quantile=quantile, unit=int(units[row]), tokens=toks,
                       values=vals, at=at)

    entries = []
    for c in range(ica.k):
        f, s = ica.components[c], similarity.components[c]
        logit = None
        if W_U is not None:
            up, down = interpret.logit_lens(directions[c], W_U, source.decode)
            logit = LogitLens(top=up, bottom=down)
        entries.append(BankEntry(
            component=c, source_excess_kurtosis=f.source_excess_kurtosis, kurtosis_se=f.kurtosis_se,
            stability=f.stability, stability_status=f.stability_status, stable=f.stable, settled=f.settled,
            above_floor=f.above_floor, artifact=f.artifact.reason, max_abs_cos=s.max_abs_cos,
            max_abs_cos_projected=s.max_abs_cos_projected,
            novelty=1.0 - s.max_abs_cos, candidate=s.candidate, not_candidate_because=s.not_candidate_because,
            rate_above=float(above[c]), rate_below=float(below[c]),
            histogram=Histogram(edges=edges[c].tolist(), counts=counts[c].tolist()),
            top=[example(r, c) for r in top[c]], bottom=[example(r, c) for r in bottom[c]],
            quantiles=[example(r, c, q) for q, r, _ in interpret.quantile_rows(qvalues[:, c], qrows)],
            token_histogram=interpret.frequent_tokens(np.array([read(int(r)).token for r in frequent[c]]), str, 20),
            logit_lens=logit,
            nearest_sae_features=[NearestFeature(feature=i, cos=v, neuronpedia=f"{npid}/{i}" if npid else None)
                                  for i, v in zip(s.top_features, s.top_cos)],
            nearest_true_feature=truth.per_component[c] if truth else None,
            linear_share=lin[c].linear_share if c in lin else None, lives_in=lin[c].lives_in if c in lin else None,
            causal=causal.table.components[c] if causal else None))
    return FeatureBank(k=ica.k, n_tokens=len(sources), description=setup.description,
                       hook_name=setup.hook.hook_name, note=source.note(), neuronpedia=npid,
                       loss_name=causal.table.loss_name if causal else None,
                       divergence_name=causal.table.divergence_name if causal else None, components=entries)

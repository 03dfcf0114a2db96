"""Step 05: every direction set (ICA and each registered baseline) against the SAE's decoder rows,
and, where the source has a known answer, against the planted dark features."""

from __future__ import annotations

from darkmatter.analysis import directions as direction_sets
from darkmatter.analysis.compare import HIGH, LOW, decoder_match
from darkmatter.analysis.groundtruth import FALSE_COS, FOUND_COS, GroundTruthScores, score_sets
from darkmatter.pipeline import plots
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import ComponentMatch, ICAResult, SetupResult, SimilarityResult
from darkmatter.sources.saes import decoder_rows


def run(ctx: StepContext) -> None:
    """Max |cos| of ICA, baseline and top-PCA directions to the SAE decoder rows; ground truth."""
    setup, ica_result = ctx.read(SetupResult), ctx.read(ICAResult)
    cfg, store = ctx.cfg, ctx.store
    directions = store.load_npy("ica_directions.npy", mmap=False)
    k, d = directions.shape
    W_dec = decoder_rows(ctx.sae(), d)
    context = direction_sets.DirectionContext(k=k, d_model=d, seed=cfg.source.seed,
                                              pca_components=store.load_npy("pca_components.npy", mmap=False))
    sets = direction_sets.direction_sets(directions, context)
    matches = {name: decoder_match(dirs, W_dec) for name, dirs in sets.items()}
    ica = matches[direction_sets.ICA]
    npid = cfg.source.neuronpedia_id
    result = SimilarityResult(
        k=k, d_sae=int(W_dec.shape[0]), thresholds=[LOW, HIGH],
        sets={name: m.summary() for name, m in matches.items()},
        descriptions={b.name: b.description for b in direction_sets.baselines()},
        components=[ComponentMatch(component=c, max_abs_cos=float(ica.max_abs_cos[c]),
                                   best_feature=int(ica.best_feature[c]), top_features=ica.top_features[c].tolist(),
                                   top_cos=ica.top_cos[c].tolist(),
                                   neuronpedia=f"{npid}/{int(ica.best_feature[c])}" if npid else None)
                    for c in range(k)])
    truth = ctx.source.ground_truth(W_dec)
    scores: GroundTruthScores | None = None
    with store.transaction():
        ctx.write(result)
        if truth is not None:
            stable = [ica_result.is_stable(c) for c in range(k)]
            import numpy as np

            scores, recoveries = score_sets(sets, truth.directions, truth.dark, truth.rule, np.asarray(stable),
                                            W_dec, direction_sets.ICA)
            ctx.write(scores)
            store.save_figure("groundtruth_recovery.png", plots.similarity_histograms(
                {f"{name} ({k} directions)": r.max_abs_cos for name, r in recoveries.items()},
                f"Recovery of {len(truth.dark)} planted dark features (best |cos| of each to any direction)",
                xlabel="best |cos| of each dark feature to the direction set", marks=(FALSE_COS, FOUND_COS),
                ylabel="dark features"))
        ctx.discard_unless({"groundtruth.json", "groundtruth_recovery.png"} if truth is not None else set(),
                           "groundtruth.json", "groundtruth_recovery.png")
        labels = direction_sets.labels(k)
        store.save_figure("ica_sae_similarity.png", plots.similarity_histograms(
            {labels[name]: m.max_abs_cos for name, m in matches.items()},
            f"Nearest SAE feature: {setup.sae.source} (d_sae {W_dec.shape[0]:,})", ylabel="directions"))
    for name, s in result.sets.items():
        print(f"{name:>8}: mean max|cos| {s.mean_max_abs_cos:.3f}; >{HIGH}: {s.above_high}, "
              f"{LOW}–{HIGH}: {s.between}, <{LOW}: {s.below_low}")
    if scores is not None:
        found = ", ".join(f"{name} {s.n_found}" for name, s in scores.sets.items())
        i = scores.sets[direction_sets.ICA]
        print(f"ground truth ({len(scores.dark_features)} dark features: {scores.dark_rule}): found at |cos| > "
              f"{FOUND_COS}: {found}; ICA mean max|cos| {i.mean_max_abs_cos:.3f}, false discoveries "
              f"{i.n_false_discoveries}/{k}")

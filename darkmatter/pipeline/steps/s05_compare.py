"""Step 05: every direction set (ICA and each registered baseline) against the SAE's decoder rows,
raw and projected into the whitened subspace, read against the matched null; the candidate rule;
and, where the source has a known answer, recovery of the planted dark features."""

from __future__ import annotations

import numpy as np

from darkmatter.analysis import compare, stats
from darkmatter.analysis import directions as direction_sets
from darkmatter.analysis.candidates import RULE, classify
from darkmatter.analysis.compare import HIGH, LOW, DecoderMatch, MatchSummary, decoder_match
from darkmatter.analysis.groundtruth import FALSE_COS, FOUND_COS, GroundTruthScores, score_sets
from darkmatter.analysis.ica import pca_whitening
from darkmatter.analysis.search import null_cuts
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.report import plots
from darkmatter.pipeline.results import ComponentMatch, ICAResult, SetupResult, SimilarityResult
from darkmatter.sources.saes import decoder_rows


def _summary(m: DecoderMatch, keep: np.ndarray | None = None) -> MatchSummary:
    return m.summary() if keep is None else m.subset(keep).summary()


def run(ctx: StepContext) -> None:
    """Max |cos| of ICA, the matched null and every baseline to the SAE decoder rows; candidates;
    ground truth."""
    setup, ica_result = ctx.read(SetupResult), ctx.read(ICAResult)
    cfg, store = ctx.cfg, ctx.store
    directions = store.load_npy("ica_directions.npy", mmap=False)
    k, d = directions.shape
    W_dec = decoder_rows(ctx.sae(), d)
    pca = stats.PCA(np.asarray(store.load_npy("pca_eigenvalues.npy", mmap=False), dtype=np.float64),
                    np.asarray(store.load_npy("pca_components.npy", mmap=False), dtype=np.float64))
    basis = pca.components[:k]
    white = pca_whitening(pca, np.zeros(d), k)  # directions only: the mean plays no part
    context = direction_sets.DirectionContext(k=k, d_model=d, seed=cfg.source.seed, pca_components=pca.components,
                                              dewhitener=white.dewhitener)
    sets = direction_sets.direction_sets(directions, context)
    W_proj = compare.project_rows(W_dec, basis)
    raw = {name: decoder_match(dirs, W_dec) for name, dirs in sets.items()}
    proj = {name: decoder_match(dirs, W_proj) for name, dirs in sets.items()}
    null_raw, null_proj, cuts = null_cuts(W_dec, W_proj, context, cfg.compare.null_draws)
    ica, ica_p = raw[direction_sets.ICA], proj[direction_sets.ICA]
    comps = ica_result.components
    settled = np.array([c.settled for c in comps])
    an = compare.against_null(ica.max_abs_cos[settled], null_raw)
    anp = compare.against_null(ica_p.max_abs_cos[settled], null_proj)
    verdicts = classify(settled, np.array([c.stable for c in comps]), np.array([c.above_floor for c in comps]),
                        ica.max_abs_cos, ica_p.max_abs_cos,
                        np.array([c.artifact.positional and not cfg.compare.keep_artifacts for c in comps]), *cuts,
                        undetermined=np.array([c.stability_status == "undetermined" for c in comps]))
    share = compare.subspace_share(W_dec, basis)
    npid = cfg.source.neuronpedia_id
    keep = settled if not settled.all() else None  # similarity means over settled components only
    result = SimilarityResult(
        k=k, d_sae=int(W_dec.shape[0]), thresholds=[LOW, HIGH],
        sets={name: _summary(m, keep if name == direction_sets.ICA else None) for name, m in raw.items()},
        sets_projected={name: _summary(m, keep if name == direction_sets.ICA else None) for name, m in proj.items()},
        descriptions={b.name: b.description for b in direction_sets.baselines()},
        n_unsettled_excluded=int((~settled).sum()), null_draws=cfg.compare.null_draws,
        against_null=an, against_null_projected=anp, novelty_cuts=list(cuts),
        decoder_share_in_subspace=stats.Summary.of(share[np.linalg.norm(W_dec, axis=1) > 0]),
        candidate_rule=RULE.format(low=f"{cuts[0]:.3f}", low_projected=f"{cuts[1]:.3f}"),
        candidates=[c for c in range(k) if not verdicts[c]],
        components=[ComponentMatch(component=c, max_abs_cos=float(ica.max_abs_cos[c]),
                                   best_feature=int(ica.best_feature[c]), top_features=ica.top_features[c].tolist(),
                                   top_cos=ica.top_cos[c].tolist(),
                                   neuronpedia=f"{npid}/{int(ica.best_feature[c])}" if npid else None,
                                   max_abs_cos_projected=float(ica_p.max_abs_cos[c]),
                                   best_feature_projected=int(ica_p.best_feature[c]),
                                   best_feature_share_in_subspace=float(share[int(ica.best_feature[c])]),
                                   candidate=not verdicts[c], not_candidate_because=verdicts[c])
                    for c in range(k)])
    truth = ctx.source.ground_truth(W_dec)
    scores: GroundTruthScores | None = None
    with store.transaction():
        ctx.write(result)
        if truth is not None:
            stable = np.array([c.stable and c.settled for c in comps])
            scores, recoveries = score_sets(sets, truth.directions, truth.dark, truth.rule, stable,
                                            W_dec, direction_sets.ICA)
            ctx.write(scores)
            store.save_figure("groundtruth_recovery.png", plots.similarity_histograms(
                {f"{name} ({k} directions)": r.max_abs_cos for name, r in recoveries.items()},
                f"Recovery of {len(truth.dark)} planted dark features (best |cos| of each to any direction)",
                xlabel="best |cos| of each dark feature to the direction set", marks=(FALSE_COS, FOUND_COS),
                ylabel="dark features"))
        ctx.discard_unless({"groundtruth.json", "groundtruth_recovery.png"} if truth is not None else set(),
                           "groundtruth.json", "groundtruth_recovery.png")
        store.save_figure("ica_sae_similarity.png", plots.similarity_vs_null(
            ica.max_abs_cos, ica_p.max_abs_cos, null_raw, null_proj,
            np.array([c.stable for c in comps]) & settled, np.array([not v for v in verdicts]),
            {direction_sets.labels(k)[name]: m.max_abs_cos for name, m in raw.items()
             if name not in (direction_sets.ICA, direction_sets.NULL)},
            f"{k} ICA components vs the nearest decoder row of the {plots.sae_label(setup.sae)}", (LOW, HIGH)))
    _print(result, scores, k)


def _print(result: SimilarityResult, scores: GroundTruthScores | None, k: int) -> None:
    for name, s in result.sets.items():
        p = result.sets_projected[name]
        print(f"{name:>8}: mean max|cos| {s.mean_max_abs_cos:.3f} (projected {p.mean_max_abs_cos:.3f}); "
              f">{HIGH}: {s.above_high}, {LOW}–{HIGH}: {s.between}, <{LOW}: {s.below_low}")
    a = result.against_null
    print(f"matched null ({result.null_draws} rotations): mean {a.null_mean:.3f}, 99th pct {a.null_p99:.3f}; "
          f"ICA above it: {a.share_above_p99:.0%} raw, {result.against_null_projected.share_above_p99:.0%} projected"
          + (f" ({result.n_unsettled_excluded} unsettled components excluded)" if result.n_unsettled_excluded else ""))
    print(f"dark-matter candidates: {len(result.candidates)}/{k} {result.candidates[:20]}")
    if scores is not None:
        found = ", ".join(f"{name} {s.n_found}" for name, s in scores.sets.items())
        i = scores.sets[direction_sets.ICA]
        print(f"ground truth ({len(scores.dark_features)} dark features: {scores.dark_rule}): found at |cos| > "
              f"{FOUND_COS}: {found}; ICA mean max|cos| {i.mean_max_abs_cos:.3f}, false discoveries "
              f"{i.n_false_discoveries}/{k}")

"""Step 06's causal tests (:mod:`darkmatter.analysis.causal`) on the run's decomposition.

The ICA parts come from step 04's unmixing/mixing and the residual mean; the baselines are every
registered baseline that is a rotation of the same whitened k-subspace
(:func:`darkmatter.analysis.directions.causal_baselines`: the principal components, the matched null
rotations of step 05 with fresh seeds, and any a user registers), one draw of a deterministic one and
``--causal-null-draws`` of a randomised one. Per-component tests go to the components the run
calls reproducible (settled and stable) and the candidates, at most ``--causal-max-components`` of
them in the add-back order (candidates first, then components that are settled, stable and above
the noise floor, then the rest, each by excess kurtosis), or to every component with
``--causal-components all``; each gets its own matched-null part (a part of a fresh random rotation
of the whitened subspace).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from darkmatter.analysis import causal, stats
from darkmatter.analysis import directions as direction_sets
from darkmatter.analysis.ica import Whitening, pca_whitening
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CausalResult, ICAResult, SimilarityResult
from darkmatter.pipeline.steps.bars import bar
from darkmatter.sources.saes import decoder_rows

#: α of the logit effect, in units of the source's standard deviation.
SCALES = (-4.0, 4.0)
#: Held-out windows the logit effect runs on.
LOGIT_WINDOWS = 2
#: Seed offsets of the top-m baseline draws (+ draw) and of the per-component null rotations (+ component).
NULL_SEED, COMPONENT_NULL_SEED = 5000, 6000
ADD_BACK_ORDER = ("candidates first, then components settled, stable and above the noise floor, then the rest; "
                  "within each, by source excess kurtosis (largest first)")


def add_back_order(ica: ICAResult, similarity: SimilarityResult) -> np.ndarray:
    """int64[k] components in the add-back order (:data:`ADD_BACK_ORDER`): the order in which
    components are picked for per-component tests."""
    def key(c: int) -> tuple[int, int, float]:
        f = ica.components[c]
        return (-int(similarity.components[c].candidate), -int(f.settled and f.stable and f.above_floor),
                -f.source_excess_kurtosis)
    return np.array(sorted(range(ica.k), key=key), dtype=np.int64)


def components_to_test(ica: ICAResult, similarity: SimilarityResult, rule: str,
                      cap: int) -> tuple[list[int], str, dict[int, str]]:
    """Which components get per-component causal tests.

    Args:
        rule: ``reproducible`` (settled and stable, or a candidate; at most ``cap``) or ``all``.
    Returns:
        (tested components in the add-back order, the rule in words, {untested component: why}).
    """
    order = [int(c) for c in add_back_order(ica, similarity)]
    if rule == "all":
        return order, f"every component (--causal-components all), in the add-back order: {ADD_BACK_ORDER}", {}
    keep = [c for c in order if similarity.components[c].candidate
            or (ica.components[c].settled and ica.components[c].stable)]
    why = {c: "not a reproducible direction (neither settled and stable nor a candidate); --causal-components all "
              "tests it" for c in order if c not in keep}
    why.update({c: f"beyond the first {cap} reproducible components (--causal-max-components)" for c in keep[cap:]})
    text = (f"{len(keep[:cap])} components, the reproducible ones (settled and stable) and the candidates"
            + (f", the first {cap} of {len(keep)}" if len(keep) > cap else "")
            + f" in the add-back order ({ADD_BACK_ORDER})")
    return keep[:cap], text, why


def draws(null_draws: int) -> dict[str, int]:
    """{name: draws} of every baseline the causal tests add back
    (:func:`~darkmatter.analysis.directions.causal_baselines`): ``null_draws`` (``--causal-null-draws``)
    for a randomised one, 1 for a deterministic one."""
    return {b.name: null_draws if b.randomised else 1 for b in direction_sets.causal_baselines()}


def baseline_parts(white: Whitening, seed: int, null_draws: int) -> dict[str, list[causal.Parts]]:
    """The top-m's baselines: {name: its draws as decompositions of the residual}, draw i of a baseline
    built with seed ``seed + NULL_SEED + i`` (its rotation of the whitened k-subspace, :func:`draws` of each).

    Args:
        white: the ICA set's whitening (its k, whitener, dewhitener and residual mean).
    """
    context = direction_sets.DirectionContext(k=white.k, d_model=white.whitener.shape[1], seed=seed,
                                              dewhitener=white.dewhitener)
    out = {}
    for name, n in draws(null_draws).items():
        rotation = direction_sets.baseline(name).rotation
        assert rotation is not None  # causal_baselines() have one
        out[name] = [causal.rotated_parts(name, white.whitener, white.dewhitener,
                                          rotation(replace(context, seed=seed + NULL_SEED + i)), white.mean)
                     for i in range(n)]
    return out


def component_nulls(white: Whitening, seed: int, tested: list[int]) -> list[causal.Parts]:
    """Per tested component c, the matched null's rotation seeded ``seed + COMPONENT_NULL_SEED + c``
    (its part 0, scaled to ‖a_c‖², is c's matched-null part)."""
    null = direction_sets.baseline(direction_sets.NULL)
    assert null.rotation is not None
    context = direction_sets.DirectionContext(k=white.k, d_model=white.whitener.shape[1], seed=seed,
                                              dewhitener=white.dewhitener)
    return [causal.rotated_parts(null.name, white.whitener, white.dewhitener,
                                 null.rotation(replace(context, seed=seed + COMPONENT_NULL_SEED + c)), white.mean)
            for c in tested]


def run(ctx: StepContext, ica: ICAResult, similarity: SimilarityResult) -> CausalResult | None:
    """The causal table on ``--causal-windows`` held-out windows, or None where the source has no
    downstream (cached activations) or the option is 0."""
    cfg, store = ctx.cfg, ctx.store
    n_seq = cfg.interpret.causal_windows
    if n_seq <= 0:
        return None
    t0 = time.perf_counter()
    source, sae = ctx.source, ctx.sae()
    d = int(store.load_npy("ica_directions.npy").shape[1])
    truth = source.ground_truth(decoder_rows(sae, d))
    skip = len(store.load_npy("tokens.npy")) if store.exists("tokens.npy") else cfg.collect.n_tokens
    down = source.downstream(truth, n_seq, skip, ctx.device)
    if down is None:
        return None
    k = ica.k
    mean = store.load_npy("residual_mean.npy", mmap=False).astype(np.float64)
    pca = stats.PCA(np.asarray(store.load_npy("pca_eigenvalues.npy", mmap=False), dtype=np.float64),
                    np.asarray(store.load_npy("pca_components.npy", mmap=False), dtype=np.float64))
    white = pca_whitening(pca, mean, k)
    parts = causal.Parts(direction_sets.ICA, store.load_npy("ica_unmixing.npy", mmap=False).astype(np.float64),
                         store.load_npy("ica_mixing.npy", mmap=False).astype(np.float64), mean, np.arange(k))
    seed = cfg.source.seed
    tested, rule, why = components_to_test(ica, similarity, cfg.interpret.causal_components,
                                          cfg.interpret.causal_max_components)

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        chunk = cfg.run.sae_chunk_size
        return torch.cat([sae.decode(sae.encode(x[i:i + chunk])) for i in range(0, len(x), chunk)])

    has_logits = source.unembed() is not None
    table = causal.causal_tests(
        down, reconstruct, parts, baseline_parts(white, seed, cfg.interpret.causal_null_draws), source.decode,
        tested=tested, component_nulls=component_nulls(white, seed, tested),
        test_rule=rule, not_tested=why, scales=SCALES if has_logits else (), logit_sequences=LOGIT_WINDOWS,
        seed=seed, stack=4, progress=lambda desc, total: bar(desc, total, "window pass"))
    return CausalResult(table=table, held_out=down.description, route=getattr(down, "route", None) or "readout",
                        seconds=time.perf_counter() - t0)

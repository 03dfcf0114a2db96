"""Step 06's causal tests (:mod:`darkmatter.analysis.causal`) on the run's decomposition.

The ICA parts come from step 04's unmixing/mixing and the residual mean; the baselines are the
same whitened k-subspace's principal components and matched null rotations (the null of step 05,
with fresh seeds). Per-component tests go to the components the run calls reproducible (settled
and stable) and the candidates, at most ``--causal-max-components`` of them in the add-back order
(candidates first, then components that are settled, stable and above the noise floor, then the
rest, each by excess kurtosis), or to every component with ``--causal-components all``; each gets
its own matched-null part (a part of a fresh random rotation of the whitened subspace).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from darkmatter.analysis import causal
from darkmatter.analysis.directions import random_rotation
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CausalResult, ICAResult, SimilarityResult
from darkmatter.sources.saes import decoder_rows

#: α of the logit effect, in units of the source's standard deviation.
SCALES = (-4.0, 4.0)
#: Held-out windows the logit effect runs on.
LOGIT_WINDOWS = 2
#: Seed offsets of the top-m null draws and of the per-component null rotations (+ component).
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
    pcs, eig = store.load_npy("pca_components.npy", mmap=False), store.load_npy("pca_eigenvalues.npy", mmap=False)
    basis, root = np.asarray(pcs[:k], dtype=np.float64), np.sqrt(np.asarray(eig[:k], dtype=np.float64))
    white, dewhite = basis / root[:, None], basis * root[:, None]
    parts = causal.Parts("ICA", store.load_npy("ica_unmixing.npy", mmap=False).astype(np.float64),
                         store.load_npy("ica_mixing.npy", mmap=False).astype(np.float64), mean, np.arange(k))
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(k), mean)
    seed = cfg.source.seed
    nulls = [causal.rotated_parts("null", white, dewhite, random_rotation(k, seed + NULL_SEED + i), mean)
             for i in range(cfg.interpret.causal_null_draws)]
    tested, rule, why = components_to_test(ica, similarity, cfg.interpret.causal_components,
                                          cfg.interpret.causal_max_components)
    component_nulls = [causal.rotated_parts("null", white, dewhite, random_rotation(k, seed + COMPONENT_NULL_SEED + c),
                                            mean) for c in tested]

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        chunk = cfg.run.sae_chunk_size
        return torch.cat([sae.decode(sae.encode(x[i:i + chunk])) for i in range(0, len(x), chunk)])

    def bar(desc: str, total: int) -> tqdm:
        return tqdm(desc=desc, total=total, unit="window pass", mininterval=2.0)

    has_logits = source.unembed() is not None
    table = causal.causal_tests(
        down, reconstruct, parts, pca, nulls, source.decode, tested=tested, component_nulls=component_nulls,
        test_rule=rule, not_tested=why, scales=SCALES if has_logits else (), logit_sequences=LOGIT_WINDOWS,
        seed=seed, stack=4, progress=bar)
    return CausalResult(table=table, held_out=down.description, route=getattr(down, "route", None) or "readout",
                        seconds=time.perf_counter() - t0)

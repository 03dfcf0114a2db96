"""Step 06's causal tests (:mod:`darkmatter.analysis.causal`) on the run's decomposition.

The ICA parts come from step 04's unmixing/mixing and the residual mean; the baselines are the
same whitened k-subspace's principal components and matched null rotations (the null of step 05,
with fresh seeds); the add-back order is the candidate rule's (candidates first, then components
that are settled, stable and above the noise floor, then the rest, each by excess kurtosis).
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
ORDER_RULE = ("candidates first, then components settled, stable and above the noise floor, then the rest; "
              "within each, by source excess kurtosis (largest first)")


def add_back_order(ica: ICAResult, similarity: SimilarityResult) -> np.ndarray:
    """int64[k] components in the order the top-m add-back takes them (:data:`ORDER_RULE`)."""
    def key(c: int) -> tuple[int, int, float]:
        f = ica.components[c]
        return (-int(similarity.components[c].candidate), -int(f.settled and f.stable and f.above_floor),
                -f.source_excess_kurtosis)
    return np.array(sorted(range(ica.k), key=key), dtype=np.int64)


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
                         store.load_npy("ica_mixing.npy", mmap=False).astype(np.float64), mean,
                         add_back_order(ica, similarity))
    pca = causal.rotated_parts("PCA", white, dewhite, np.eye(k), mean)
    seed = cfg.source.seed + 5000
    nulls = [causal.rotated_parts("null", white, dewhite, random_rotation(k, seed + i), mean)
             for i in range(cfg.interpret.causal_null_draws)]

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        chunk = cfg.run.sae_chunk_size
        return torch.cat([sae.decode(sae.encode(x[i:i + chunk])) for i in range(0, len(x), chunk)])

    has_logits = source.unembed() is not None
    with tqdm(desc="causal tests (edits × held-out batches)", unit="edit", mininterval=2.0) as bar:
        table = causal.causal_tests(
            down, reconstruct, parts, pca, nulls, ORDER_RULE, source.decode, SCALES if has_logits else (),
            logit_sequences=min(n_seq, 2), stack=4, progress=bar.update)
    return CausalResult(table=table, held_out=down.description, route=getattr(down, "route", None) or "readout",
                        seconds=time.perf_counter() - t0)

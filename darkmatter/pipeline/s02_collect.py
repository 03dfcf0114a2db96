"""Step 02: the source's analysed rows → SAE reconstruction in chunks → residual, streamed to memmaps.

The SAE's feature activations never exist as ``[n_tokens, d_sae]``: each chunk is encoded,
decoded and reduced to running sums (FVU, L0, per-feature power sums) before the next.
"""

from __future__ import annotations

import time

import numpy as np

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CollectResult, SetupResult
from darkmatter.sources.base import RowLog
from darkmatter.sources.collect import Throughput, collect_rows, now


def run(ctx: StepContext) -> None:
    """Text → windows → activations → SAE encode/decode in chunks → residual, streamed to memmaps."""
    setup = ctx.read(SetupResult)
    cfg, store = ctx.cfg, ctx.store
    sae = ctx.sae()
    if int(sae.cfg.d_in) != setup.d_model:
        raise DarkMatterError("the SAE no longer matches setup.json: rerun scripts/01_setup_and_load.py")
    n, d = cfg.collect.n_tokens, setup.d_model
    with store.transaction():
        ctx.record_config()
        acts = store.open_npy("activations.npy", (n, d), np.float32)
        resid = store.open_npy("residuals.npy", (n, d), np.float32)
        index = store.open_npy("token_index.npy", (n, 2), np.int32)
        log, clock = RowLog(), Throughput()
        t0 = time.perf_counter()
        got = collect_rows(ctx.source.rows("analysis", n, cfg.run.batch_size, ctx.device, log, desc="collect",
                                           clock=clock),
                           sae, cfg.run.sae_chunk_size, acts, resid, index, clock)
        clock.total = now(ctx.device) - t0
        for arr in (acts, resid, index):
            arr.flush()
        del acts, resid, index
        if log.windows:
            store.save_npy("tokens.npy", np.stack(log.windows))
        ctx.discard_unless({"tokens.npy"} if log.windows else set(), "tokens.npy")
        assert got.stats.feature_moments is not None
        store.save_npy("sae_feature_moments.npy", got.stats.feature_moments.cpu().numpy())
        result = CollectResult(metrics=got.stats.finish(), massive_tokens_excluded=got.n_massive,
                               bos_positions_excluded=got.n_bos, max_norm_ratio=cfg.source.max_norm_ratio,
                               throughput=clock.record(n) if clock.model > 0 else None,
                               n_windows=len(log.windows), context_size=len(log.windows[0]) if log.windows else None,
                               metrics_with_excluded=got.with_excluded.finish() if got.with_excluded else None)
        ctx.write(result)
    _print(result, n)


def _print(r: CollectResult, n: int) -> None:
    if r.n_windows:
        print(f"{r.n_windows} windows of {r.context_size}; {n:,} tokens analysed; excluded: "
              f"{r.bos_positions_excluded:,} BOS positions")
    else:
        print(f"{n:,} rows analysed")
    if r.max_norm_ratio is not None:
        print(f"  and {r.massive_tokens_excluded:,} tokens with massive activations "
              f"(norm > {r.max_norm_ratio}× batch median)")
    m = r.metrics
    print(f"SAE on the analysed tokens: FVU {m.fvu:.4f}, L0 {m.mean_l0:.1f}, dead {m.dead_fraction:.1%}, "
          f"mean cos(x, x̂) {m.mean_cos_x_xhat:.3f}")
    if r.metrics_with_excluded:
        print(f"  with the excluded tokens too: FVU {r.metrics_with_excluded.fvu:.4f}")
    tp = r.throughput
    if tp:
        print(f"throughput: model {tp.tokens_per_second_model:,.0f} tok/s, model + SAE "
              f"{tp.tokens_per_second_model_and_sae:,.0f} tok/s, end to end {tp.tokens_per_second_end_to_end:,.0f} "
              f"tok/s (model {tp.seconds_model:.1f} s, SAE {tp.seconds_sae:.1f} s, writes {tp.seconds_write:.1f} s "
              f"of {tp.seconds_total:.1f} s)")

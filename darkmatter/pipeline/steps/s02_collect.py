"""Step 02: the source's analysed rows → SAE reconstruction in chunks → residual, streamed to memmaps.

The SAE's feature activations never exist as ``[n_tokens, d_sae]``: each chunk is encoded,
decoded and reduced to running sums (FVU, L0, per-feature power sums) before the next.
"""

from __future__ import annotations

import time

import numpy as np

from darkmatter.distributed import Comm, current, is_peer_failure
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.resolve import run_id
from darkmatter.pipeline.results import CollectResult, SetupResult
from darkmatter.pipeline.storage import shards
from darkmatter.pipeline.storage.partial import OtherWorld, Partial
from darkmatter.sources.base import RowLog
from darkmatter.sources.collect import CollectState, Throughput, collect_rows, collected, now


def run(ctx: StepContext) -> None:
    """Text → windows → activations → SAE encode/decode in chunks → residual, streamed to memmaps.

    Resumable (:mod:`darkmatter.pipeline.storage.partial`) and, under torchrun, sharded: each rank computes
    its own batches of the stream and writes its own shard (:mod:`darkmatter.pipeline.storage.shards`)."""
    setup = ctx.read(SetupResult)
    cfg, store = ctx.cfg, ctx.store
    sae = ctx.sae()
    if int(sae.cfg.d_in) != setup.d_model:
        raise DarkMatterError("the SAE no longer matches setup.json: rerun "
                              f"scripts/{table.producer('setup.json')}")
    n, d = cfg.collect.n_tokens, setup.d_model
    comm = current()
    partial = Partial(store.root, run_id(cfg, 2, ctx.inputs), n, d, comm)  # changed text: no resume
    log, clock = RowLog(), Throughput()
    t0 = time.perf_counter()
    try:
        state, resume = partial.open(int(sae.cfg.d_sae))
        rows = ctx.source.rows("analysis", n, cfg.run.batch_size, ctx.device, log, desc="collect", clock=clock,
                               comm=comm, resume=resume)
        a = partial.arrays
        state = collect_rows(rows, sae, cfg.run.sae_chunk_size, a["activations.npy"], a["residuals.npy"],
                             a["token_index.npy"], clock, state, partial.checkpoint)
    except Exception as exc:  # an error, a full disk: nothing to resume; an interrupt or a lost peer keeps it
        if (comm.sharded and is_peer_failure(exc)) or isinstance(exc, OtherWorld):
            partial.close()
        else:
            partial.discard()
        raise
    clock.total = now(ctx.device) - t0
    got = collected(state, comm)
    if comm.sharded:
        segments = _segments(state, comm)
        partial.finish_shard(state.row)
    else:
        partial.close()
        if state.row != n:
            raise DarkMatterError(f"only {state.row:,} of {n:,} rows arrived")
    comm.barrier()
    if comm.is_main:
        result = CollectResult(metrics=got.stats.finish(), massive_tokens_excluded=got.n_massive,
                               bos_positions_excluded=got.n_bos, max_norm_ratio=cfg.source.max_norm_ratio,
                               throughput=clock.record(state.row) if clock.model > 0 else None,
                               n_windows=len(log.windows), context_size=len(log.windows[0]) if log.windows else None,
                               metrics_with_excluded=got.with_excluded.finish() if got.with_excluded else None)
        with store.transaction():
            if log.windows:
                store.save_npy("tokens.npy", np.stack(log.windows))
            ctx.discard_unless({"tokens.npy"} if log.windows else set(), "tokens.npy")
            assert got.stats.feature_moments is not None
            store.save_npy("sae_feature_moments.npy", got.stats.feature_moments.cpu().numpy())
            ctx.write(result)
            if comm.sharded:
                np.save(partial.folder / "segments.npy", segments)
                store.remove_on_commit(store.path(shards.FOLDER) / "meta.json")  # once adopted, with the commit
                for name in shards.ARRAYS:
                    if store.path(name).exists():
                        store.discard(name)
                store.write_json(shards.MANIFEST, {"world": comm.world, "n_tokens": n, "arrays": list(shards.ARRAYS),
                                                   "batches": int(len(segments))})
                store.adopt(partial.folder, shards.FOLDER)
            else:
                ctx.discard_unless(set(), shards.MANIFEST, shards.FOLDER)
                for name in shards.ARRAYS:
                    store.adopt(partial.file(name), name)
                store.remove_on_commit(partial.folder)
        _print(result, n, comm.world)
    comm.barrier()


def _segments(state: CollectState, comm: Comm) -> np.ndarray:
    """int64[S, 3] (rank, first row in its shard, rows) of every batch of the stream, in order."""
    mine = np.array(state.segments, dtype=np.int64).reshape(-1, 3)
    longest = int(comm.gather_ints([len(mine)]).max())
    padded = np.full((longest, 3), -1, dtype=np.int64)
    padded[:len(mine)] = mine
    every = comm.gather_ints(padded.ravel().tolist()).reshape(comm.world, longest, 3)
    out = [(int(b), r, int(first), int(m)) for r in range(comm.world) for b, first, m in every[r] if b >= 0]
    out.sort()
    return np.array([(r, first, m) for _, r, first, m in out], dtype=np.int64).reshape(-1, 3)


def _print(r: CollectResult, n: int, world: int = 1) -> None:
    if world > 1:
        print(f"sharded over {world} ranks: each wrote its own batches to shards/ (shards.json lists them)")
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

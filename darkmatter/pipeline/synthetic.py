"""Start a run at step 03 from activations and residuals made elsewhere (tests, benchmarks).

:func:`seed_collection` writes what steps 01-02 would leave: ``config.json``, typed
``setup.json`` / ``sae_stats.json`` stamped for ``cfg``, and the two float32 arrays, filled
chunk by chunk by a callback so that arrays larger than RAM can be made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from darkmatter.pipeline import table
from darkmatter.pipeline.config import Config
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import CollectResult, Environment, SAEInfo, SetupResult
from darkmatter.pipeline.storage.store import OutputStore
from darkmatter.sources.base import HookInfo
from darkmatter.sources.collect import SAEMetrics

Fill = Callable[[np.ndarray, np.ndarray], None]
"""``fill(activations, residuals)``: write float32[n, d_model] rows into both memmaps."""


def seed_collection(cfg: Config, d_model: int, fill: Fill, description: str = "synthetic arrays") -> None:
    """Write steps 01-02's outputs for ``cfg`` (n = ``cfg.collect.n_tokens`` rows, and their
    ``token_index.npy`` of (row, 0)) into
    ``cfg.run.outputs``; the SAE fields are placeholders (no SAE exists), so steps 05-06 cannot run.

    Args:
        d_model: width of the arrays.
        fill: fills the activation and residual memmaps.
    """
    n = cfg.collect.n_tokens
    one = StepContext(cfg=cfg, store=OutputStore(cfg.run.outputs), step=table.step(1))
    two = replace(one, step=table.step(2))
    with one.store.transaction():
        one.store.write_json("config.json", cfg.to_dict())
        one.write(SetupResult(
            environment=Environment(python="", platform="", cpu_count=None, ram_free_gb=0.0, device="cpu",
                                    packages={}),
            source_kind="synthetic", description=description, hook=HookInfo(hook_name="synthetic", d_model=d_model),
            sae=SAEInfo(source="none", sae_class="none", d_sae=1, d_in=d_model, W_dec_shape=[1, d_model],
                        W_dec_transposed=False, hook_name=None, made_by="none: arrays given"),
            sae_train_windows=0, source_details={}))
        two.write(CollectResult(metrics=SAEMetrics(n_tokens=n, d_sae=1, fvu=float("nan"), mse=float("nan"),
                                                   mean_l0=0.0, mean_cos_x_xhat=float("nan"), dead_features=0,
                                                   dead_fraction=0.0),
                                massive_tokens_excluded=0, bos_positions_excluded=0, max_norm_ratio=None,
                                throughput=None, n_windows=0, context_size=None))
        acts = one.store.open_npy("activations.npy", (n, d_model), np.float32)
        resid = one.store.open_npy("residuals.npy", (n, d_model), np.float32)
        fill(acts, resid)
        acts.flush()
        resid.flush()
        del acts, resid
        # every row its own unit (synthetic rows carry no windows): (row, 0) as the sources write it
        one.store.save_npy("token_index.npy", np.stack([np.arange(n), np.zeros(n, dtype=np.int64)], 1).astype(np.int32))

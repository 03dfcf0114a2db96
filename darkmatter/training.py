"""Training an SAE for a model that has none published, with SAELens's ``SAETrainer``.

We write no SAE of our own: the architecture is SAELens's ``TopKTrainingSAE``,
trained from in-memory activations through ``SAETrainer`` with a data
provider, saved with ``save_inference_model`` and reloaded with
``SAE.load_from_disk`` like any downloaded SAE.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from darkmatter.collect import SAERunningStats, reconstruct


@dataclass(frozen=True)
class SAETrainingResult:
    """Validation metrics and a loss history of one training run.

    ``validation`` holds FVU, MSE, mean L0, mean cos and dead fraction on the
    held-out activations; ``history`` holds (samples seen, loss, MSE loss) every
    ``log_every`` steps.
    """

    n_train: int
    n_val: int
    validation: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0


def _batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """An endless stream of shuffled batches (epochs over ``acts``), seeded."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield acts[order[start:start + batch_size]]


def train_topk_sae(acts: torch.Tensor, d_sae: int, k: int, total_samples: int, lr: float,
                   seed: int, device: str, out_dir: Path, batch_size: int = 4096,
                   val_fraction: float = 0.1, log_every: int = 10) -> SAETrainingResult:
    """Train a TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") on
    ``acts`` with SAELens and save it in SAELens's format to ``out_dir``.

    Args:
        acts: float32[n, d_model] training activations (BOS rows already removed).
        d_sae: number of latents.
        k: active latents per token (the L0 target).
        total_samples: samples the trainer sees (several epochs over the training split).
        lr: Adam learning rate (constant).
        out_dir: folder that receives ``cfg.json`` + ``sae_weights.safetensors``.
        val_fraction: share of ``acts`` held out for the validation metrics.
    Returns:
        SAETrainingResult with validation FVU / L0 / dead fraction.
    """
    os.environ.setdefault("WANDB_MODE", "disabled")
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(acts), generator=gen)
    n_val = max(1, int(len(acts) * val_fraction))
    val, train = acts[order[:n_val]], acts[order[n_val:]]
    batch_size = min(batch_size, len(train))

    # Train on activations scaled to mean norm sqrt(d_in), SAELens's "expected_average_only_in"
    # convention, with b_dec starting at the (scaled) mean: residual streams carry a large constant
    # offset that otherwise dominates the first thousand steps. SAELens folds the factor back in.
    scale = float(np.sqrt(acts.shape[1]) / train.norm(dim=1).mean())
    train = train * scale
    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=d_sae, k=k, device=device))
    with torch.no_grad():
        sae.b_dec.copy_(train.mean(0).to(sae.b_dec.device))
    trainer = SAETrainer(
        cfg=SAETrainerConfig(total_training_samples=total_samples, train_batch_size_samples=batch_size,
                             lr=lr, lr_end=lr, device=device,
                             logger=LoggingConfig(log_to_wandb=False)),
        sae=sae, data_provider=(b.to(device) for b in _batches(train, batch_size, seed)))

    history: list[dict[str, float]] = []
    plain_step = trainer.step

    def logged_step(batch: torch.Tensor):  # SAETrainer logs only to wandb; keep our own record
        out = plain_step(batch)
        if trainer.n_training_steps % log_every == 0:
            history.append({"samples": trainer.n_training_samples, "loss": out.loss.item(),
                            **{name: v.item() for name, v in out.losses.items()}})
        return out

    trainer.step = logged_step
    trained = trainer.fit()
    trained.fold_activation_norm_scaling_factor(scale)
    trained.save_inference_model(out_dir)

    from sae_lens import SAE

    reloaded = SAE.load_from_disk(str(out_dir), device=device)
    return SAETrainingResult(n_train=len(train), n_val=n_val,
                             validation=evaluate_sae(reloaded, val.to(device)),
                             history=history, steps=trainer.n_training_steps)


def evaluate_sae(sae, acts: torch.Tensor, chunk_size: int = 4096) -> dict[str, float]:
    """FVU, MSE, mean L0, mean cos(x, x̂) and dead fraction of ``sae`` on acts: float32[n, d_model]."""
    stats = SAERunningStats(d_sae=int(sae.cfg.d_sae), d_model=acts.shape[1])
    for start in range(0, len(acts), chunk_size):
        x = acts[start:start + chunk_size]
        feats, x_hat = reconstruct(sae, x)
        stats.update(x, x_hat, feats)
    return stats.finish()

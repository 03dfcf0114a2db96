"""Training an SAE for a model that has none published, with SAELens's ``SAETrainer``.

We write no SAE of our own: each architecture is a SAELens training SAE, resolved by
name through SAELens's own registry (``sae_lens.registry.get_sae_training_class``:
``StandardTrainingSAE``, ``TopKTrainingSAE``, ``BatchTopKTrainingSAE``,
``JumpReLUTrainingSAE``), trained from in-memory activations by :class:`RecordingTrainer`
(SAELens's ``SAETrainer`` with a per-step hook), saved with ``save_inference_model`` and
reloaded with ``SAE.load_from_disk`` like any downloaded SAE. Everything in the project that
trains an SAE (step 01, the architecture sweep, the toy models) goes through :func:`train_sae`.

Conventions shared by every architecture:

* By default the trainer sees activations scaled by one constant so that their
  mean norm is sqrt(d_in) (SAELens's ``expected_average_only_in`` convention),
  with ``b_dec`` starting at the scaled mean; the factor is folded back into the
  weights (``fold_activation_norm_scaling_factor``) before anything is saved,
  so saved SAEs read raw activations. Sparsity coefficients are therefore in
  the units of the scaled activations, with SAELens's per-row summed MSE
  (``normalize=False`` and ``b_dec_init="zero"`` train on raw activations, as
  the toy models of Elhage et al. do).
* The L0 target of ``topk`` / ``batchtopk`` is set directly (k). ``standard``
  (L1) and ``jumprelu`` (L0 penalty) have a sparsity coefficient instead, which
  is calibrated by a search over full training runs (see :func:`train_sae`).
* Validation rows are held out by a seeded permutation; every metric is
  computed by :func:`evaluate_sae` on a saved-and-reloaded inference SAE, so it
  describes exactly what the rest of the pipeline loads.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from darkmatter.sources.collect import SAERunningStats, reconstruct

#: Architectures :func:`train_sae` trains (SAELens's training-SAE names).
ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")

#: The paper each architecture follows.
PAPERS = {
    "standard": "Bricken et al. 2023, 'Towards Monosemanticity' (ReLU + L1), with the L1 term weighted "
                "by decoder norms as in Anthropic's April 2024 update",
    "topk": "Gao et al. 2024, 'Scaling and evaluating sparse autoencoders'",
    "batchtopk": "Bussmann et al. 2024, 'BatchTopK Sparse Autoencoders'",
    "jumprelu": "Rajamanoharan et al. 2024, 'Jumping Ahead: Improving Reconstruction Fidelity with "
                "JumpReLU Sparse Autoencoders'",
}

#: Calibrated architectures: (SAELens config field, SAELens coefficient-scheduler key); the
#: warm-up field is ``<key>_warm_up_steps`` and is set to 0 (a constant coefficient).
SPARSITY_COEFFICIENTS = {"standard": ("l1_coefficient", "l1"), "jumprelu": ("l0_coefficient", "l0")}

#: Architectures whose L0 target is a config field directly: (field, type) — TopK's k is an integer.
L0_FIELDS: dict[str, tuple[str, Callable[[float], float]]] = {
    "topk": ("k", lambda l0: int(round(l0))), "batchtopk": ("k", float)}

#: Relative L0 tolerance: |L0 / target - 1| <= L0_TOLERANCE counts as on target.
L0_TOLERANCE = 0.2

#: First guess of the coefficient from the initial firing cut-off ``cut`` (the mean pre-activation
#: quantile that :func:`_init_to_target` sets, in scaled units): ``c0 = factor · cut ** power``.
#: Standard: c0 = 1.3 · cut (an L1 SAE shrinks every activation by about c/2, so c/2 acts as a
#: magnitude cut-off). JumpReLU: c0 = 0.28 · cut ** 1.2. Both fitted on the planted data of
#: tests/test_training.py and on SmolLM2-135M layer-15 activations (d_sae 4608, L0 32); the
#: search corrects them.
INITIAL_COEFFICIENT = {"standard": (1.3, 1.0), "jumprelu": (0.28, 1.2)}

#: Assumed |d log L0 / d log c| for the first search step (measured: L1 ≈ 1.4 on planted data;
#: JumpReLU ≈ 0.65 on planted data and 0.62 on SmolLM2); later steps use the secant slope.
ASSUMED_SLOPE = {"standard": 1.4, "jumprelu": 0.65}


@dataclass(frozen=True)
class TrainingSpec:
    """What :func:`train_sae` trains and how: the architecture, its size and sparsity target, the
    optimiser's budget and every setting of the calibration search. Data (training and validation
    rows) and output folders are arguments of :func:`train_sae`, not part of the spec.

    Attributes:
        arch: one of :data:`ARCHITECTURES` (SAELens training-SAE name).
        d_sae: number of latents.
        l0_target: target mean number of active latents per token (topk: k = round(l0_target);
            batchtopk: k per token on average over a batch).
        total_samples: activation rows the trainer sees per run (epochs over the training split).
        lr: Adam learning rate (constant; SAELens's ``lr_end`` is set to it).
        seed: seeds the validation split, the initialisation and the batch order (same in every
            calibration round).
        device: torch device string the SAE trains and is evaluated on.
        batch_size: rows per training step (capped at the training split's size).
        val_fraction: share of the rows held out for validation (seeded permutation); unused when
            :func:`train_sae` is given ``val_acts``.
        log_every: steps between history entries.
        n_evals: evenly spaced validation evaluations per run (the last one is the final SAE).
        calibration_rounds: maximum runs for standard / jumprelu (topk / batchtopk train once).
        initial_coefficient: coefficient of the first run, in units of activations scaled to mean
            norm sqrt(d_in) (raw units with ``normalize=False``) and SAELens's per-row summed MSE;
            None: a first guess from the data (:data:`INITIAL_COEFFICIENT`).
        l0_tolerance: relative L0 tolerance (0.2 = 20 %).
        init_to_target: start standard / jumprelu latents at the target firing rate.
        arch_options: extra fields of the SAELens training config (e.g. ``jumprelu_bandwidth``,
            ``aux_loss_coefficient``, ``decoder_init_norm``); they override :func:`_default_options`.
        dead_feature_window: steps without firing after which SAETrainer counts a latent dead
            (the TopK / BatchTopK AuxK loss then trains it on the residual). None:
            ``min(1000, max(10, steps // 10))``: SAELens's 1000 exceeds short runs, which silently
            disables AuxK (its loss stayed 0.0 for all 352 steps of a default-size run).
        normalize: scale the training activations to mean norm sqrt(d_in) (SAELens's
            ``expected_average_only_in``); False trains on raw activations (coefficients in raw units).
        b_dec_init: ``"mean"`` starts ``b_dec`` at the training mean, ``"zero"`` keeps SAELens's 0.

    Raises:
        ValueError: ``arch`` is not one of "standard", "topk", "batchtopk", "jumprelu";
            ``l0_target`` is not in (0, d_sae]; a size or fraction is out of range.
    """

    arch: str
    d_sae: int
    l0_target: float
    total_samples: int
    lr: float
    seed: int
    device: str
    batch_size: int = 4096
    val_fraction: float = 0.1
    log_every: int = 10
    n_evals: int = 10
    calibration_rounds: int = 4
    initial_coefficient: float | None = None
    l0_tolerance: float = L0_TOLERANCE
    init_to_target: bool = True
    arch_options: Mapping[str, Any] | None = None
    dead_feature_window: int | None = None
    normalize: bool = True
    b_dec_init: Literal["mean", "zero"] = "mean"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture {self.arch!r}: expected one of {', '.join(ARCHITECTURES)}")
        if not 0 < self.l0_target <= self.d_sae:
            raise ValueError(f"l0_target must be in (0, d_sae={self.d_sae}], got {self.l0_target}")
        if self.arch == "topk" and round(self.l0_target) < 1:
            raise ValueError(f"topk needs l0_target >= 0.5 (k = round(l0_target)), got {self.l0_target}")
        if (self.total_samples <= 0 or self.batch_size <= 0 or self.n_evals < 1 or self.log_every < 1
                or self.calibration_rounds < 1):
            raise ValueError("total_samples, batch_size, n_evals, log_every and calibration_rounds "
                             "must be positive")
        if not 0 < self.val_fraction < 1 or not 0 < self.l0_tolerance:
            raise ValueError("val_fraction must be in (0, 1) and l0_tolerance positive")

    @property
    def calibrated(self) -> bool:
        """True for the architectures whose sparsity coefficient is searched (standard, jumprelu)."""
        return self.arch in SPARSITY_COEFFICIENTS


@dataclass(frozen=True)
class SAETrainingResult:
    """Validation metrics, loss history and checkpoints of one training run.

    ``validation`` holds FVU, MSE, mean L0, mean cos and dead fraction of the
    final SAE (the one saved to ``out_dir``) on the held-out activations.
    ``history`` holds, every ``log_every`` steps, samples seen, total loss,
    SAELens's component losses (``mse_loss`` plus ``l1_loss`` / ``l0_loss`` /
    ``auxiliary_reconstruction_loss``) and the training batch's mean L0 (for
    batchtopk that is k by construction; the saved JumpReLU's L0 is in
    ``evals`` / ``validation``). ``evals`` holds the evenly spaced validation
    evaluations (steps, samples, FVU, MSE, L0, dead fraction) of the saved
    inference form. ``best`` is the evaluation saved to ``best_dir``. Units:
    MSE in squared raw activation units, L0 in latents per token, seconds of
    wall time; all sparsity coefficients refer to activations scaled by
    ``activation_scale`` (mean norm sqrt(d_in)).
    ``sparsity_coefficient`` is ``None`` for topk / batchtopk, else
    ``{"name", "value", "calibration": [...], ...}`` (see :func:`train_sae`).
    """

    n_train: int
    n_val: int
    validation: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    arch: str = "topk"
    d_sae: int = 0
    l0_target: float = 0.0
    sparsity_coefficient: dict[str, Any] | None = None
    best: dict[str, Any] = field(default_factory=dict)
    evals: list[dict[str, float]] = field(default_factory=list)
    within_tolerance: bool = False
    l0_tolerance: float = L0_TOLERANCE
    samples: int = 0
    batch_size: int = 0
    lr: float = 0.0
    activation_scale: float = 1.0
    training_seconds: float = 0.0
    saved_class: str = ""
    paper: str = ""
    sae_options: dict[str, Any] = field(default_factory=dict)
    dead_feature_window: int = 0


def _batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """An endless stream of shuffled batches (epochs over ``acts``), seeded."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=gen)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield acts[order[start:start + batch_size]]


def _within(l0: float, target: float, tol: float) -> bool:
    return abs(l0 / target - 1.0) <= tol


def _build_sae(spec: TrainingSpec, d_in: int, coefficient: float | None):
    """A SAELens training SAE for ``spec.arch`` with ``spec.arch_options`` (already merged with
    :func:`_default_options`), resolved through SAELens's registry; sparsity warm-ups are off
    (constant coefficient)."""
    from sae_lens.registry import get_sae_training_class

    sae_class, config_class = get_sae_training_class(spec.arch)
    fields: dict[str, Any] = dict(d_in=d_in, d_sae=spec.d_sae, device=spec.device)
    if spec.arch in SPARSITY_COEFFICIENTS:
        name, key = SPARSITY_COEFFICIENTS[spec.arch]
        fields |= {name: coefficient, f"{key}_warm_up_steps": 0}
    if spec.arch in L0_FIELDS:
        name, convert = L0_FIELDS[spec.arch]
        fields[name] = convert(spec.l0_target)
    return sae_class(config_class(**fields, **(spec.arch_options or {})))


class RecordingTrainer:
    """SAELens's ``SAETrainer`` with one documented observation hook.

    ``SAETrainer.step(batch)`` is SAELens's public per-step seam (``fit()`` calls it once per
    batch, before it advances ``n_training_steps``); the subclass built by :meth:`build` calls
    ``on_step(trainer, step_index, output)`` right after it, where ``output`` is SAELens's
    ``TrainStepOutput`` (``loss``, ``losses``, ``feature_acts``). SAETrainer itself reports only
    to wandb; every record this project keeps of a training run comes through this hook.
    """

    @staticmethod
    def build(cfg: Any, sae: Any, data_provider: Iterator[torch.Tensor],
              on_step: Callable[[Any, int, Any], None]) -> Any:
        """An ``SAETrainer`` subclass instance whose ``step`` also calls ``on_step``."""
        from sae_lens import SAETrainer

        class _Recording(SAETrainer):
            def step(self, batch: torch.Tensor):
                index = self.n_training_steps
                out = super().step(batch)
                on_step(self, index, out)
                return out

        return _Recording(cfg=cfg, sae=sae, data_provider=data_provider)


def _default_options(arch: str, n_steps: int) -> dict[str, Any]:
    """SAELens config fields we set away from SAELens's defaults (``arch_options`` overrides them)."""
    if arch == "standard":
        # Unit-norm decoder rows at the start, as in Bricken et al. 2023 (SAELens's 0.1 is
        # Anthropic's later heuristic); W_enc starts as W_dec transposed.
        return {"decoder_init_norm": 1.0}
    if arch == "jumprelu":
        # Unit-norm decoder rows, W_enc = W_dec^T, as in Rajamanoharan et al. 2024. The L0 penalty's
        # straight-through gradient also reaches the pre-activations (Anthropic's variant; DeepMind's
        # passes it to the threshold only): with threshold-only gradients the coefficient had no
        # measurable effect in short runs (SmolLM2 activations, 352 steps at lr 1e-3: L0 13.0-13.5
        # for every l0_coefficient from 0.47 down to 5e-5), as few rows fall in the 0.05-wide
        # window around a threshold and Adam moves a threshold by <= lr per step.
        return {"decoder_init_norm": 1.0, "jumprelu_sparsity_loss_mode": "step",
                "jumprelu_ste_to_input": True}
    if arch == "batchtopk":
        # The saved JumpReLU threshold is an EMA (rate topk_threshold_lr, SAELens default 0.01) of
        # the batch top-k cut-off that starts at 0: after n steps 0 still weighs 0.99**n (13 % at
        # 200 steps), so short runs save too low a threshold and too high an L0. Scale the rate so
        # the start weighs under e**-5 by the end.
        return {"topk_threshold_lr": max(0.01, 5.0 / n_steps)}
    return {}


@torch.no_grad()
def _init_to_target(sae, arch: str, train: torch.Tensor, l0_target: float,
                    n_rows: int = 8192) -> dict[str, float]:
    """Start a calibrated SAE at L0 ≈ ``l0_target``: every latent's firing cut-off (``b_enc`` of a
    standard SAE, ``threshold`` of a JumpReLU SAE) is set to the pre-activation quantile at which it
    fires on ``l0_target / d_sae`` of the rows. SAELens's defaults (b_enc = 0, threshold = 0.01)
    start with about half the latents active, and Adam moves a bias or threshold by only ~lr per
    step, so short runs would otherwise end far from the target. Returns summary numbers."""
    x = train[:n_rows].to(sae.W_enc.device)
    hidden_pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    n = len(hidden_pre)
    k = min(n, max(1, n - int(round(n * l0_target / sae.cfg.d_sae))))
    cut = hidden_pre.kthvalue(k, dim=0).values  # float[d_sae]
    if arch == "standard":
        sae.b_enc.data.sub_(cut)
        return {"b_enc_mean": float(sae.b_enc.mean())}
    sae.threshold.data.copy_(cut.clamp(min=1e-4).to(sae.threshold.dtype))
    return {"threshold_mean": float(sae.threshold.mean())}


def _save_inference(sae, scale: float, path: Path) -> None:
    """Deep-copy the training SAE, fold the activation scale and save it in SAELens's inference
    format (``cfg.json`` + ``sae_weights.safetensors``); the training SAE is left untouched."""
    copy_ = copy.deepcopy(sae)
    copy_.fold_activation_norm_scaling_factor(scale)
    if path.exists():
        shutil.rmtree(path)
    copy_.save_inference_model(path)


def _load(path: Path, device: str):
    from sae_lens import SAE

    return SAE.load_from_disk(str(path), device=device)


def _train_run(spec: TrainingSpec, train: torch.Tensor, val: torch.Tensor, scale: float, work: Path,
               coefficient: float | None) -> dict[str, Any]:
    """One SAETrainer run of ``spec`` on scaled ``train`` (float32[n, d_in]) with a fixed sparsity
    ``coefficient`` (None for topk / batchtopk); evaluations on raw ``val``. ``spec`` is resolved
    (:func:`train_sae`: batch size capped, ``arch_options`` merged, ``dead_feature_window`` set).
    Saves the final SAE to ``work/final`` and the best evaluated checkpoint to ``work/best``."""
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig

    device, log_every, n_evals = spec.device, spec.log_every, spec.n_evals
    sae = _new_sae(spec, train, coefficient, spec.init_to_target)
    total_steps = math.ceil(spec.total_samples / spec.batch_size)
    eval_steps = sorted({max(1, round(total_steps * (i + 1) / n_evals)) for i in range(n_evals)})

    history: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    best: dict[str, dict[str, Any]] = {}  # "within" / "overall" → eval entry

    def record(trainer: Any, step: int, out: Any) -> None:  # SAETrainer logs only to wandb
        if step % log_every == 0:
            history.append({"steps": step, "samples": trainer.n_training_samples, "loss": out.loss.item(),
                            **{name: v.item() for name, v in out.losses.items()},
                            "l0": float((out.feature_acts != 0).float().sum(-1).mean())})
        done = step + 1
        if done in eval_steps:
            path = work / f"eval_{done}"
            _save_inference(trainer.sae, scale, path)
            v = evaluate_sae(_load(path, device), val)
            e = {"steps": done, "samples": trainer.n_training_samples, "fvu": v["fvu"], "mse": v["mse"],
                 "mean_l0": v["mean_l0"], "dead_fraction": v["dead_fraction"]}
            evals.append(e)
            for slot, ok in (("within", _within(v["mean_l0"], spec.l0_target, spec.l0_tolerance)),
                             ("overall", True)):
                if ok and (slot not in best or v["fvu"] < best[slot]["fvu"]):
                    best[slot] = {**e, "path": path}
            live = {b["path"] for b in best.values()}
            for p in work.glob("eval_*"):  # keep only checkpoints still best in some slot
                if p not in live:
                    shutil.rmtree(p)

    trainer = RecordingTrainer.build(
        cfg=SAETrainerConfig(total_training_samples=spec.total_samples, train_batch_size_samples=spec.batch_size,
                             lr=spec.lr, lr_end=spec.lr, device=device, dead_feature_window=spec.dead_feature_window,
                             logger=LoggingConfig(log_to_wandb=False)),
        sae=sae, data_provider=(b.to(device) for b in _batches(train, spec.batch_size, spec.seed)),
        on_step=record)
    t0 = time.perf_counter()
    trained = trainer.fit()
    seconds = time.perf_counter() - t0
    final_dir = work / "final"
    _save_inference(trained, scale, final_dir)
    reloaded = _load(final_dir, device)
    validation = evaluate_sae(reloaded, val)
    chosen = best.get("within") or best["overall"]
    best_dir = work / "best"
    shutil.copytree(chosen["path"], best_dir)
    best_info = {"steps": chosen["steps"], "samples": chosen["samples"],
                 "l0_within_tolerance": "within" in best,
                 "validation": {k: chosen[k] for k in ("fvu", "mse", "mean_l0", "dead_fraction")}}
    return {"validation": validation, "history": history, "evals": evals, "best": best_info,
            "steps": trainer.n_training_steps, "samples": trainer.n_training_samples,
            "seconds": seconds, "saved_class": type(reloaded).__name__, "coefficient": coefficient,
            "final_dir": final_dir, "best_dir": best_dir}


def _new_sae(spec: TrainingSpec, train: torch.Tensor, coefficient: float | None, init_to_target: bool):
    """A SAELens training SAE of ``spec`` seeded by ``spec.seed``, with b_dec at the (scaled) data mean
    (``b_dec_init="mean"``; ``"zero"`` keeps SAELens's zero) and, for the calibrated architectures
    with ``init_to_target``, latents cut off to fire at the target rate (``train``: float32[n, d_in])."""
    torch.manual_seed(spec.seed)
    sae = _build_sae(spec, train.shape[1], coefficient)
    if spec.b_dec_init == "mean":
        with torch.no_grad():
            sae.b_dec.copy_(train.mean(0).to(sae.b_dec.device))
    if spec.calibrated and init_to_target:
        _init_to_target(sae, spec.arch, train, spec.l0_target)
    return sae


def _next_coefficient(points: list[tuple[float, float]], target: float, slope: float,
                      max_log_step: float = math.log(30.0)) -> float:
    """Next coefficient of the search for L0(c) = target, working on y = log L0 against x = log c
    (L0 falls as c grows).

    ``points``: (coefficient, validation L0) of the runs so far. The proposal solves, near the
    point closest to the target, a quadratic through the three points closest to the target (the
    log-log curve steepens near typical targets), else the secant of the two closest points (slope
    clamped to [0.1, 5]), else a step with the assumed ``slope``; steps are capped at
    ±``max_log_step``. Once runs bracket the target, a proposal outside the bracket's inner 80 % is
    replaced by the regula-falsi point, or by the bracket's geometric midpoint.
    """
    lt = math.log(target)
    pts = sorted(((math.log(c), math.log(max(l0, 1e-3 * target))) for c, l0 in points),
                 key=lambda p: abs(p[1] - lt))
    x0, y0 = pts[0]
    x = None
    if len(pts) >= 3 and len({round(p[0], 9) for p in pts[:3]}) == 3:
        a, b, c = np.polyfit([p[0] for p in pts[:3]], [p[1] for p in pts[:3]], 2)
        roots = [r.real for r in np.roots([a, b, c - lt]) if abs(r.imag) < 1e-9 and 2 * a * r.real + b < 0]
        if roots:
            x = min(roots, key=lambda r: abs(r - x0))
    if x is None and len(pts) >= 2 and pts[1][0] != x0:
        slope = -(pts[1][1] - y0) / (pts[1][0] - x0)
    if x is None:
        x = x0 + (y0 - lt) / min(max(slope, 0.1), 5.0)
    x = float(np.clip(x, x0 - max_log_step, x0 + max_log_step))
    above = [p for p in pts if p[1] > lt]  # coefficient too small
    below = [p for p in pts if p[1] < lt]  # coefficient too large
    if above and below:
        lo = max(above, key=lambda p: p[0])  # largest coefficient still above the target
        hi = min(below, key=lambda p: p[0])  # smallest coefficient already below it
        if lo[0] < hi[0]:
            margin = 0.1 * (hi[0] - lo[0])
            if not lo[0] + margin <= x <= hi[0] - margin:
                x = lo[0] + (lt - lo[1]) * (hi[0] - lo[0]) / (hi[1] - lo[1])
                if not lo[0] + margin <= x <= hi[0] - margin:
                    x = (lo[0] + hi[0]) / 2
    return math.exp(x)


def _insensitive(points: list[tuple[float, float]]) -> bool:
    """True when two runs whose coefficients differ by over 10x have L0 within 5 % of each other:
    the coefficient has no grip on L0 at this budget, and more runs would only waste time."""
    return any(abs(math.log(c1 / c2)) > math.log(10) and abs(math.log(max(l1, 1e-6) / max(l2, 1e-6))) < 0.05
               for i, (c1, l1) in enumerate(points) for c2, l2 in points[i + 1:])


def train_sae(acts: torch.Tensor, spec: TrainingSpec, *, out_dir: Path, best_dir: Path | None = None,
              val_acts: torch.Tensor | None = None, verbose: bool = False) -> SAETrainingResult:
    """Train one SAE as ``spec`` says with SAELens on ``acts`` and save it in SAELens's inference
    format to ``out_dir`` (final weights) and ``best_dir`` (best validation checkpoint).

    Architectures (``spec.arch``; SAELens training classes, papers):

    * ``"standard"``: ``StandardTrainingSAE``, ReLU + L1 penalty c·Σ_i f_i·‖W_dec,i‖ (Bricken et
      al. 2023, "Towards Monosemanticity"; the decoder-norm weighting of the penalty, with an
      unconstrained decoder, is Anthropic's April 2024 update). Decoder rows start at unit norm
      as in Bricken et al. (SAELens's default 0.1 is the later "heuristic" init).
    * ``"topk"``: ``TopKTrainingSAE``, k = round(l0_target) per token (Gao et al. 2024).
    * ``"batchtopk"``: ``BatchTopKTrainingSAE``, k = l0_target on average over each batch
      (Bussmann et al. 2024). SAELens saves it as a ``JumpReLUSAE`` with one threshold for all
      latents, an EMA of the batch top-k cut-off (its rate ``topk_threshold_lr`` is raised to
      5 / steps for short runs, see :func:`_default_options`), so the inference L0 is only close
      to k: ``validation["mean_l0"]`` is the reloaded SAE's.
    * ``"jumprelu"``: ``JumpReLUTrainingSAE``, "step" L0 penalty c·‖f‖₀ with straight-through
      gradients and unit-norm initial decoder rows, W_enc = W_decᵀ (Rajamanoharan et al. 2024).
      The penalty's straight-through gradient also reaches the pre-activations
      (``jumprelu_ste_to_input=True``, Anthropic's variant): with DeepMind's threshold-only
      gradient the coefficient had no grip on L0 in runs of a few hundred steps.

    ``spec.arch_options`` overrides any of these choices (see :func:`_default_options`).

    Sparsity calibration (standard, jumprelu): every round is a complete run of
    ``spec.total_samples`` at one fixed coefficient; the reloaded final SAE's validation L0 is the
    measurement. Round 0 uses ``spec.initial_coefficient`` or a first guess from the data
    (:data:`INITIAL_COEFFICIENT`); later rounds search log(c) against log(L0) by secant or
    three-point quadratic steps, kept inside the bracket once there is one
    (:func:`_next_coefficient`). The search stops at the first run within ``spec.l0_tolerance``,
    when L0 does not respond to a 10x change of c, or after ``spec.calibration_rounds`` runs; the
    run whose L0 is closest to the target (log ratio) is kept, saved and reported, and
    ``within_tolerance`` says whether it lands. Full-length runs are used because short runs do
    not transfer: at a fixed coefficient L0 keeps drifting through training (a coefficient
    controller tried first on planted data oscillated and, once frozen, drifted 30-40 % off target). With
    ``spec.init_to_target`` each latent starts firing on ``l0_target / d_sae`` of the rows (b_enc or
    threshold at that pre-activation quantile) instead of on about half of them. SAELens's
    warm-ups (``l1_warm_up_steps``, ``l0_warm_up_steps``) are set to 0, so the coefficient is
    constant from the first step.

    Args:
        acts: float32[n, d_model] training activations (BOS rows already removed), raw units.
        spec: what to train and how (:class:`TrainingSpec`; it checks its own values).
        out_dir: folder that receives the final SAE (``cfg.json`` + ``sae_weights.safetensors``);
            replaced if it exists.
        best_dir: folder for the best evaluated checkpoint (lowest validation FVU among evaluations
            with L0 within tolerance, else lowest FVU); default ``out_dir / "best"`` (a subfolder,
            so a store transaction that stages ``out_dir`` commits both; ``SAE.load_from_disk``
            of ``out_dir`` ignores it).
        val_acts: float32[m, d_model] validation rows given separately (e.g. a fresh evaluation set):
            then every row of ``acts`` trains and ``spec.val_fraction`` is unused.
        verbose: print one line per run (coefficient, validation L0, FVU, seconds).
    Returns:
        SAETrainingResult of the kept run; ``sparsity_coefficient`` is ``{"name": "l1_coefficient"
        | "l0_coefficient", "value": c, "calibration": [{"round", "coefficient", "l0", "fvu",
        "within_tolerance", "seconds"}, ...], "chosen_round", "initial_guess"}`` for standard /
        jumprelu, ``None`` otherwise; ``training_seconds`` sums all rounds; ``batch_size``,
        ``sae_options`` and ``dead_feature_window`` are the values used (capped, merged, defaulted).
    Raises:
        ValueError: acts is not 2-D or too short; ``best_dir`` is ``out_dir``.
    """
    arch, l0_target, tol, seed, device = spec.arch, spec.l0_target, spec.l0_tolerance, spec.seed, spec.device
    if acts.ndim != 2 or len(acts) < 4:
        raise ValueError(f"acts must be float[n, d_model] with n >= 4, got shape {tuple(acts.shape)}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    out_dir = Path(out_dir)
    best_dir = Path(best_dir) if best_dir is not None else out_dir / "best"
    if best_dir.resolve() == out_dir.resolve():
        raise ValueError("best_dir must differ from out_dir")
    calibrated = spec.calibrated

    acts = acts.float()
    if val_acts is None:
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(acts), generator=gen)
        n_val = max(1, int(len(acts) * spec.val_fraction))
        val, train = acts[order[:n_val]].to(device), acts[order[n_val:]]
    else:
        val, train, n_val = val_acts.float().to(device), acts, len(val_acts)
    batch_size = min(spec.batch_size, len(train))

    # Train on activations scaled to mean norm sqrt(d_in), SAELens's "expected_average_only_in"
    # convention, with b_dec starting at the (scaled) mean: residual streams carry a large constant
    # offset that otherwise dominates the first thousand steps. The factor is folded back in.
    scale = float(np.sqrt(acts.shape[1]) / train.norm(dim=1).mean()) if spec.normalize else 1.0
    train = train * scale
    n_steps = math.ceil(spec.total_samples / batch_size)
    arch_options = {**_default_options(arch, n_steps), **(spec.arch_options or {})}
    dead_feature_window = (min(1000, max(10, n_steps // 10)) if spec.dead_feature_window is None
                           else spec.dead_feature_window)
    spec = replace(spec, batch_size=batch_size, arch_options=arch_options, dead_feature_window=dead_feature_window)

    guess = None
    coefficient = None
    if calibrated:
        if spec.initial_coefficient is None:
            factor, power = INITIAL_COEFFICIENT[arch]
            probe = _new_sae(spec, train, 1.0, True)
            cut = float((-probe.b_enc if arch == "standard" else probe.threshold).detach().mean())
            guess = {"cut": cut, "coefficient": factor * max(cut, 1e-3) ** power}
            del probe
        if spec.initial_coefficient is not None:
            coefficient = spec.initial_coefficient
        else:
            assert guess is not None
            coefficient = guess["coefficient"]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sae_train_") as tmp:  # every run's checkpoints
        for rnd in range(spec.calibration_rounds if calibrated else 1):
            run = _train_run(spec, train, val, scale, Path(tmp) / f"round_{rnd}", coefficient)
            runs.append(run)
            l0 = run["validation"]["mean_l0"]
            if verbose:
                c = "" if coefficient is None else f"{SPARSITY_COEFFICIENTS[arch][0]} {coefficient:.4g}, "
                print(f"train_sae {arch} run {rnd}: {c}validation L0 {l0:.2f} (target {l0_target:g}), "
                      f"FVU {run['validation']['fvu']:.4f}, {run['seconds']:.0f} s", flush=True)
            if _within(l0, l0_target, tol) or not calibrated:
                break
            if _insensitive([(r["coefficient"], r["validation"]["mean_l0"]) for r in runs]):
                if verbose:
                    print(f"train_sae {arch}: L0 does not respond to the coefficient; search stopped")
                break
            coefficient = _next_coefficient([(r["coefficient"], r["validation"]["mean_l0"]) for r in runs],
                                            l0_target, ASSUMED_SLOPE[arch])
        chosen = min(runs, key=lambda r: abs(math.log(max(r["validation"]["mean_l0"], 1e-6) / l0_target)))
        for src, dst in ((chosen["final_dir"], out_dir), (chosen["best_dir"], best_dir)):
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst)

    sparsity = None
    if calibrated:
        sparsity = {"name": SPARSITY_COEFFICIENTS[arch][0], "value": chosen["coefficient"],
                    "method": "full runs at fixed coefficients; secant / quadratic search on log c vs log L0",
                    "chosen_round": runs.index(chosen), "initial_guess": guess,
                    "calibration": [{"round": i, "coefficient": r["coefficient"],
                                     "l0": r["validation"]["mean_l0"], "fvu": r["validation"]["fvu"],
                                     "within_tolerance": _within(r["validation"]["mean_l0"], l0_target, tol),
                                     "seconds": r["seconds"]} for i, r in enumerate(runs)]}
    validation = chosen["validation"]
    return SAETrainingResult(
        n_train=len(train), n_val=n_val, validation=validation, history=chosen["history"],
        steps=chosen["steps"], arch=arch, d_sae=spec.d_sae, l0_target=float(l0_target),
        sparsity_coefficient=sparsity, best=chosen["best"], evals=chosen["evals"],
        within_tolerance=_within(validation["mean_l0"], l0_target, tol), l0_tolerance=tol,
        samples=chosen["samples"], batch_size=batch_size, lr=spec.lr, activation_scale=scale,
        training_seconds=sum(r["seconds"] for r in runs), saved_class=chosen["saved_class"],
        paper=PAPERS[arch], sae_options=arch_options, dead_feature_window=dead_feature_window)


def evaluate_sae(sae, acts: torch.Tensor, chunk_size: int = 4096) -> dict[str, float]:
    """FVU, MSE, mean L0, mean cos(x, x̂) and dead fraction of ``sae`` on raw activations.

    Args:
        sae: a SAELens SAE reading raw activations.
        acts: float32[n, d_model], on the SAE's device.
        chunk_size: rows per encode/decode.
    Returns:
        as :meth:`SAERunningStats.finish`: ``fvu`` (residual energy / total variance about the
        mean, unitless), ``mse`` (per element, squared activation units), ``mean_l0`` (latents per
        token), ``mean_cos_x_xhat``, ``dead_features`` / ``dead_fraction`` (never fired on ``acts``).
    """
    stats = SAERunningStats(d_sae=int(sae.cfg.d_sae), d_model=acts.shape[1])
    for start in range(0, len(acts), chunk_size):
        x = acts[start:start + chunk_size]
        feats, x_hat = reconstruct(sae, x)
        stats.update(x, x_hat, feats)
    return asdict(stats.finish())

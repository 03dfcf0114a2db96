"""SAE training through SAELens (darkmatter.experiments.training) for the four architectures, on planted data.

The data: 96 random unit directions in 32 dimensions, each active on a row with probability
0.04 with an exponential magnitude (+0.5), plus a constant offset and small Gaussian noise.
Every architecture must beat predicting the mean by a wide margin, land within 20 % of the
L0 target, and leave reloadable final and best checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

from darkmatter.experiments.training import (  # noqa: E402
    ARCHITECTURES,
    RecordingTrainer,
    TrainingSpec,
    evaluate_sae,
    train_sae,
)

D_MODEL, N_DIRECTIONS, P_ACTIVE, N_ROWS = 32, 96, 0.04, 20_000
D_SAE, L0_TARGET, STEPS, BATCH, LR, SEED = 128, 6, 200, 256, 3e-3, 0
N_EVALS = 5


def planted_rows(n: int = N_ROWS, seed: int = 0) -> torch.Tensor:
    """float32[n, 32]: sparse non-negative codes over 96 unit directions + offset + noise."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(N_DIRECTIONS, D_MODEL, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    active = torch.rand(n, N_DIRECTIONS, generator=g) < P_ACTIVE
    magnitude = torch.empty(n, N_DIRECTIONS).exponential_(1.0, generator=g) + 0.5
    offset = 6.0 * torch.ones(D_MODEL) / math.sqrt(D_MODEL)
    return ((active * magnitude) @ directions + offset + 0.05 * torch.randn(n, D_MODEL, generator=g)).float()


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    return planted_rows()


@pytest.fixture(scope="module", params=ARCHITECTURES)
def trained(request, acts, tmp_path_factory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    spec = TrainingSpec(arch=arch, d_sae=D_SAE, l0_target=L0_TARGET, total_samples=STEPS * BATCH, lr=LR,
                        seed=SEED, device="cpu", batch_size=BATCH, log_every=10, n_evals=N_EVALS)
    result = train_sae(acts, spec, out_dir=folder / "final", best_dir=folder / "best")
    return arch, result, folder


def _validation_rows(acts: torch.Tensor) -> torch.Tensor:
    """The held-out rows train_sae uses (same seeded permutation, val_fraction 0.1)."""
    order = torch.randperm(len(acts), generator=torch.Generator().manual_seed(SEED))
    return acts[order[:int(len(acts) * 0.1)]]


def test_beats_the_mean_and_hits_l0(trained):
    arch, result, _ = trained
    v = result.validation
    assert v["fvu"] < 0.6, f"{arch}: validation FVU {v['fvu']:.3f} (1.0 = predicting the mean)"
    assert abs(v["mean_l0"] / L0_TARGET - 1) <= 0.2, f"{arch}: validation L0 {v['mean_l0']:.2f}"
    assert result.within_tolerance
    assert result.arch == arch and result.d_sae == D_SAE and result.l0_target == L0_TARGET


def test_checkpoints_reload_and_match_the_report(trained, acts):
    from sae_lens import SAE

    arch, result, folder = trained
    final = SAE.load_from_disk(str(folder / "final"), device="cpu")
    expected = {"standard": "StandardSAE", "topk": "TopKSAE", "batchtopk": "JumpReLUSAE",
                "jumprelu": "JumpReLUSAE"}[arch]
    assert type(final).__name__ == expected == result.saved_class
    again = evaluate_sae(final, _validation_rows(acts))
    assert again["fvu"] == pytest.approx(result.validation["fvu"], rel=1e-5)
    assert again["mean_l0"] == pytest.approx(result.validation["mean_l0"], rel=1e-6)

    best = SAE.load_from_disk(str(folder / "best"), device="cpu")
    assert type(best).__name__ == expected
    assert result.best["steps"] in {e["steps"] for e in result.evals}
    if result.best["l0_within_tolerance"] and result.within_tolerance:
        assert result.best["validation"]["fvu"] <= result.validation["fvu"] + 1e-12


def test_history_and_evaluations(trained):
    arch, result, _ = trained
    assert len(result.history) == STEPS // 10
    assert {"samples", "loss", "mse_loss", "l0"} <= set(result.history[0])
    samples = [h["samples"] for h in result.history]
    assert samples == sorted(samples) and samples[-1] <= STEPS * BATCH
    assert [e["steps"] for e in result.evals] == [STEPS * (i + 1) // N_EVALS for i in range(N_EVALS)]
    assert all({"fvu", "mean_l0", "dead_fraction"} <= set(e) for e in result.evals)
    assert result.evals[-1]["fvu"] == pytest.approx(result.validation["fvu"], rel=1e-6)
    assert result.steps == STEPS
    if arch in ("topk", "batchtopk"):  # AuxK is live: the dead-latent window fits inside the run
        assert result.dead_feature_window == STEPS // 10
        assert max(h["auxiliary_reconstruction_loss"] for h in result.history) > 0


def test_sparsity_coefficient_record(trained):
    arch, result, _ = trained
    sc = result.sparsity_coefficient
    if arch in ("topk", "batchtopk"):
        assert sc is None
        return
    assert sc["name"] == {"standard": "l1_coefficient", "jumprelu": "l0_coefficient"}[arch]
    assert sc["value"] > 0 and sc["calibration"]
    kept = sc["calibration"][sc["chosen_round"]]
    assert kept["coefficient"] == sc["value"] and kept["l0"] == result.validation["mean_l0"]
    for step in result.history:
        assert ("l1_loss" if arch == "standard" else "l0_loss") in step


def test_unknown_architecture_is_refused(acts, tmp_path):
    with pytest.raises(ValueError, match="standard, topk, batchtopk, jumprelu"):
        TrainingSpec(arch="gated", d_sae=D_SAE, l0_target=L0_TARGET, total_samples=BATCH, lr=LR, seed=SEED,
                     device="cpu")
    with pytest.raises(ValueError, match="l0_target"):
        TrainingSpec(arch="topk", d_sae=D_SAE, l0_target=D_SAE + 1, total_samples=BATCH, lr=LR, seed=SEED,
                     device="cpu")
    spec = TrainingSpec(arch="topk", d_sae=D_SAE, l0_target=L0_TARGET, total_samples=BATCH, lr=LR, seed=SEED,
                        device="cpu")
    with pytest.raises(ValueError, match="val_fraction"):
        dataclasses.replace(spec, val_fraction=1.0)
    with pytest.raises(ValueError, match="best_dir must differ"):
        train_sae(acts, spec, out_dir=tmp_path / "x", best_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="acts must be"):
        train_sae(acts[:3], spec, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_default_best_folder_sits_inside_the_output(acts, tmp_path):
    spec = TrainingSpec(arch="topk", d_sae=64, l0_target=4, total_samples=20 * BATCH, lr=LR, seed=SEED, device="cpu",
                        batch_size=BATCH)
    result = train_sae(acts, spec, out_dir=tmp_path / "sae")
    assert result.arch == "topk" and result.validation["mean_l0"] == pytest.approx(4.0)
    assert (tmp_path / "sae" / "cfg.json").is_file() and (tmp_path / "sae" / "best" / "cfg.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no stray folders beside it


def test_raw_activations_fixed_coefficient_and_separate_validation(acts, tmp_path):
    """The toy models' settings: no scaling, b_dec at 0, one run at a given L1 coefficient,
    validation on rows given apart from the training rows."""
    spec = TrainingSpec(arch="standard", d_sae=64, l0_target=1.0, total_samples=10 * BATCH, lr=LR, seed=SEED,
                        device="cpu", batch_size=BATCH, calibration_rounds=1, initial_coefficient=0.01,
                        init_to_target=False, normalize=False, b_dec_init="zero", log_every=1, n_evals=1)
    result = train_sae(acts[:2000], spec, out_dir=tmp_path / "sae", val_acts=acts[2000:2500])
    assert result.activation_scale == 1.0 and result.n_train == 2000 and result.n_val == 500
    assert result.sparsity_coefficient["value"] == 0.01 and len(result.sparsity_coefficient["calibration"]) == 1
    assert len(result.history) == 10 and result.steps == 10


def test_recording_trainer_calls_the_hook_once_per_step():
    from sae_lens import LoggingConfig, StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    seen = []
    rows = torch.randn(64, 8)
    trainer = RecordingTrainer.build(
        SAETrainerConfig(total_training_samples=5 * 16, train_batch_size_samples=16, lr=1e-3, lr_end=1e-3,
                         device="cpu", logger=LoggingConfig(log_to_wandb=False)),
        StandardTrainingSAE(StandardTrainingSAEConfig(d_in=8, d_sae=16)),
        iter(rows.split(16) * 3), lambda trainer, step, out: seen.append((step, float(out.loss.detach()))))
    trainer.fit()
    assert [s for s, _ in seen] == [0, 1, 2, 3, 4] and all(loss > 0 for _, loss in seen)


@pytest.mark.parametrize("slope", [0.4, 0.65, 1.0, 1.5, 2.5])
@pytest.mark.parametrize("start", [1 / 30, 1 / 3, 3.0, 30.0])
def test_coefficient_search_on_power_laws(slope, start):
    """L0 = 6 · c**-slope: the search reaches ±20 % of 6 within four proposals from 30x off."""
    from darkmatter.experiments.training import _next_coefficient

    points = [(start, 6.0 * start ** -slope)]
    for _ in range(4):
        c = _next_coefficient(points, 6.0, slope=1.0)
        points.append((c, 6.0 * c ** -slope))
        if abs(points[-1][1] / 6.0 - 1) <= 0.2:
            break
    assert abs(points[-1][1] / 6.0 - 1) <= 0.2, points


def test_search_stops_when_l0_ignores_the_coefficient():
    from darkmatter.experiments.training import _insensitive

    assert _insensitive([(0.47, 13.0), (0.049, 13.4), (0.0016, 13.45)])
    assert not _insensitive([(0.47, 13.0), (0.2, 13.1)])  # a 2.4x change may move L0 little
    assert not _insensitive([(0.47, 35.0), (2.0, 13.0)])


@pytest.mark.parametrize("arch,start", [("standard", 10.0), ("jumprelu", 0.02)])
def test_calibration_recovers_from_a_bad_start(acts, tmp_path, arch, start):
    """Starting ~10x away from the right coefficient, full-run search lands within 20 %."""
    spec = TrainingSpec(arch=arch, d_sae=D_SAE, l0_target=L0_TARGET, total_samples=STEPS * BATCH, lr=LR,
                        seed=SEED, device="cpu", batch_size=BATCH, n_evals=2, initial_coefficient=start,
                        calibration_rounds=5)
    result = train_sae(acts, spec, out_dir=tmp_path / "sae")
    runs = result.sparsity_coefficient["calibration"]
    assert runs[0]["coefficient"] == start and not runs[0]["within_tolerance"]
    assert result.within_tolerance and 1 < len(runs) <= 5
    sc = result.sparsity_coefficient
    assert sc["value"] == runs[sc["chosen_round"]]["coefficient"]

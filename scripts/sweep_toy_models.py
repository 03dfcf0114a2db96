#!/usr/bin/env python
"""Sweep toy models of superposition × sparsity × seed: toy AE → SAELens SAE → ICA on the residual.

Writes toy_sweep.json (settings, per-run records, summary), toy_sweep.md (tables) and
toy_sweep.png (150 DPI) to --outputs, each atomically. The logic is in darkmatter/experiments/toy.py.
Run from the repository root after `pip install -e .`.

    .venv/bin/python scripts/sweep_toy_models.py            # default grid: 2 archs × 3 S × 5 seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from darkmatter.analysis.directions import baselines
from darkmatter.experiments import toy
from darkmatter.pipeline.storage.store import PLOT_DPI

os.environ.setdefault("WANDB_MODE", "disabled")


def _csv(parse):
    def convert(text: str) -> list:
        try:
            return [parse(p) for p in text.split(",") if p.strip()]
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return convert


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = toy.ToySettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--architectures", type=_csv(toy.parse_architecture), default="10-5-10,20-10-20",
                   help="comma-separated n-m-n toy models")
    p.add_argument("--sparsities", type=_csv(float), default="0.85,0.9,0.95",
                   help="comma-separated S (probability a feature is 0)")
    p.add_argument("--seeds", type=_csv(int), default="123,124,125,126,127", help="comma-separated seeds")
    p.add_argument("--ae-steps", type=int, default=d.ae_steps, help="toy-AE Adam steps (fresh batch each)")
    p.add_argument("--ae-batch-size", type=int, default=d.ae_batch_size, help="toy-AE batch size")
    p.add_argument("--ae-lr", type=float, default=d.ae_lr, help="toy-AE learning rate")
    p.add_argument("--n-samples", type=int, default=d.n_train, help="hidden activations the SAE trains on")
    p.add_argument("--n-eval", type=int, default=d.n_eval, help="fresh evaluation samples")
    p.add_argument("--sae-epochs", type=int, default=d.sae_epochs, help="SAE epochs over --n-samples")
    p.add_argument("--sae-batch-size", type=int, default=d.sae_batch_size, help="SAE batch size")
    p.add_argument("--sae-l1", type=float, default=d.sae_l1, help="SAELens l1_coefficient")
    p.add_argument("--sae-lr", type=float, default=d.sae_lr, help="SAE learning rate (constant)")
    p.add_argument("--d-sae", type=int, default=None, help="SAE latents (default: n, the true features)")
    p.add_argument("--outputs", type=Path, default=Path("outputs/toy_sweep"), help="output folder")
    args = p.parse_args(argv)
    try:
        args.settings = toy.ToySettings(
            ae_steps=args.ae_steps, ae_batch_size=args.ae_batch_size, ae_lr=args.ae_lr,
            n_train=args.n_samples,
            n_eval=args.n_eval, sae_epochs=args.sae_epochs, sae_batch_size=args.sae_batch_size,
            sae_l1=args.sae_l1, sae_lr=args.sae_lr, d_sae=args.d_sae)
        for s in args.sparsities:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {s}")
    except ValueError as err:
        p.error(str(err))
    return args


# --------------------------------------------------------------------------- writing


def _finite(obj):
    """JSON has no nan/inf: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pm(row: toy.SummaryRow, name: str, fmt: str) -> str:
    m, s = row.mean[name], row.std[name]
    return "–" if not math.isfinite(m) else f"{m:{fmt}} ± {s:{fmt}}"


def markdown(rows: list[toy.SummaryRow], records: list[toy.RunRecord], settings: dict, wall_s: float) -> str:
    names = [b.name for b in baselines()]
    lines = [
        "# Toy models of superposition: SAE (SAELens StandardTrainingSAE) and ICA on its residual",
        "",
        f"Settings: {json.dumps(settings)}. Wall time {wall_s:.0f} s.",
        "",
        "Mean ± std (ddof 1) over seeds. AE loss: MSE per feature (all-zeros baseline (1−S)/3 in "
        "brackets). diag dom.: fraction of rows of WᵀW with |G_ii| > Σ_{j≠i}|G_ij| / mean share "
        "|G_ii|/Σ_j|G_ij|. SAE L0: mean active latents per sample; dead: latents never active on the "
        "evaluation set; active: latents active on ≥ 1 evaluation sample. Procrustes sim: 1 − "
        "scipy.spatial.procrustes disparity of Hungarian-matched (|cos|) decoder rows and columns of W; "
        "matched abs cos: mean matched |cos|. ICA finds: represented features the SAE missed "
        "(best alive-latent |cos| < 0.9) → those an ICA direction of the residual matches at "
        f"|cos| > 0.9. max abs cos ICA / {' / '.join(names)}: mean best |cos| of missed features to the ICA "
        "directions / to as many directions of each baseline (mean over draws).",
        "",
        "| arch | S | AE loss | cond(W) | diag dom. | SAE L0 | dead | active | Procrustes sim "
        "| matched abs cos | SAE FVU | ICA finds (missed → found) | "
        f"max abs cos ICA / {' / '.join(names)} | collapsed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ica_rand = ("–" if not math.isfinite(r.mean["missed_max_cos_ica"]) else
                    " / ".join(f"{r.mean[key]:.2f}" for key in ["missed_max_cos_ica"]
                               + [f"missed_max_cos_{n}" for n in names]))
        lines.append(
            f"| {r.arch} | {r.sparsity:g} | {_pm(r, 'ae_loss', '.2e')} ({(1 - r.sparsity) / 3:.3f}) "
            f"| {_pm(r, 'cond_W', '.3f')} | {r.mean['diag_dominant_fraction']:.2f} / "
            f"{r.mean['diag_share_mean']:.3f} | {_pm(r, 'sae_l0', '.2f')} | {_pm(r, 'sae_dead', '.1f')} "
            f"| {_pm(r, 'sae_active_latents', '.1f')} | {_pm(r, 'procrustes_similarity', '.3f')} "
            f"| {_pm(r, 'matched_abs_cos', '.3f')} | {_pm(r, 'sae_fvu', '.4f')} "
            f"| {r.mean['n_missed']:.1f} → {r.mean['n_found_by_ica']:.1f} | {ica_rand} "
            f"| {r.n_collapsed}/{r.n_runs} |")
    lines += ["", "## Per run", "",
              "| arch | S | seed | AE loss | SAE L0 | dead | FVU | Procrustes sim | missed → ICA found | "
              "SAE L0 per epoch (1, 5, 10, 15, 20) | collapsed |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        epochs = rec.sae_l0_per_epoch
        picks = [epochs[i] for i in (0, 4, 9, 14, 19) if i < len(epochs)]
        lines.append(f"| {rec.arch} | {rec.sparsity:g} | {rec.seed} | {rec.ae_loss:.2e} | {rec.sae_l0:.2f} "
                     f"| {rec.sae_dead}/{rec.d_sae} | {rec.sae_fvu:.4f} | {rec.procrustes_similarity:.3f} "
                     f"| {rec.n_missed} → {rec.n_found_by_ica} | {', '.join(f'{v:.2f}' for v in picks)} "
                     f"| {'yes' if rec.collapsed else 'no'} |")
    return "\n".join(lines) + "\n"


def figure(records: list[toy.RunRecord], rows: list[toy.SummaryRow], settings: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("sae_l0", "SAE L0 (mean active latents per sample)"),
              ("sae_dead_fraction", "dead latent fraction (never active on eval set)"),
              ("procrustes_similarity", "Procrustes similarity (decoder vs. true features)")]
    archs = list(dict.fromkeys(r.arch for r in records))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sparsities = sorted({r.sparsity for r in records})
    step = min(np.diff(sparsities)) if len(sparsities) > 1 else 0.05
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (name, label) in zip(axes, panels):
        for i, arch in enumerate(archs):
            c = colours[i % len(colours)]
            offset = (i - (len(archs) - 1) / 2) * step * 0.12
            runs = [r for r in records if r.arch == arch]
            ok = [r for r in runs if not r.collapsed]
            bad = [r for r in runs if r.collapsed]
            ax.scatter([r.sparsity + offset for r in ok], [getattr(r, name) for r in ok], color=c, alpha=0.45,
                       s=28, label=f"{arch}: one seed")
            if bad:
                ax.scatter([r.sparsity + offset for r in bad], [getattr(r, name) for r in bad], color=c,
                           marker="x", s=70, linewidths=2, label=f"{arch}: collapsed seed")
            means = [row for row in rows if row.arch == arch]
            ax.plot([row.sparsity + offset for row in means], [row.mean[name] for row in means], color=c,
                    marker="D", markersize=7, linewidth=2, label=f"{arch}: mean over seeds")
        ax.set_xlabel("feature sparsity S (probability a feature is 0)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0] + " vs. S")
        ax.set_xticks(sparsities)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.05, 1.05)
    if all(r.sae_dead == 0 for r in records):
        axes[1].text(0.5, 0.5, f"no dead latents in any of the {len(records)} runs", transform=axes[1].transAxes,
                     ha="center", va="center", fontsize=11, color="0.3")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"Toy models + SAELens StandardTrainingSAE (L1 {settings['sae_l1']}, "
                 f"lr {settings['sae_lr']}, "
                 f"{settings['sae_epochs']} epochs, batch {settings['sae_batch_size']}); "
                 f"seeds {settings['seeds']}", fontsize=11)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    args = parse_args(argv)
    settings = {"architectures": [a.name for a in args.architectures], "sparsities": args.sparsities,
                "seeds": args.seeds, **dataclasses.asdict(args.settings)}
    args.outputs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records = toy.run_sweep(args.architectures, args.sparsities, args.seeds, args.settings, progress=True)
    wall_s = time.perf_counter() - start
    rows = toy.summarise(records)

    doc = {"settings": settings, "wall_time_s": wall_s, "records": [r.to_dict() for r in records],
           "summary": [dataclasses.asdict(r) for r in rows]}
    _atomic_write(args.outputs / "toy_sweep.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(_finite(doc), indent=1, allow_nan=False)))
    _atomic_write(args.outputs / "toy_sweep.md",
                  lambda tmp: Path(tmp).write_text(markdown(rows, records, settings, wall_s)))
    fig = figure(records, rows, settings)
    _atomic_write(args.outputs / "toy_sweep.png",
                  lambda tmp: fig.savefig(tmp, dpi=PLOT_DPI, bbox_inches="tight", format="png"))

    print(f"{len(records)} runs in {wall_s:.0f} s → {args.outputs}/toy_sweep.{{json,md,png}}")
    for r in rows:
        print(f"  {r.arch} S={r.sparsity:g}: L0 {r.mean['sae_l0']:.2f}, dead {r.mean['sae_dead']:.1f}, "
              f"collapsed {r.n_collapsed}/{r.n_runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

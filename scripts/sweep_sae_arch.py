#!/usr/bin/env python
"""Train the four SAELens SAE architectures (standard/L1, TopK, BatchTopK, JumpReLU) on the same
activations and budget, for the offline default model, and tabulate validation metrics.

Activations are collected once, as step 01 does it for SAE training (``Config()`` defaults:
SmolLM2-135M from the pip package, ``blocks.15.hook_resid_pre``, even-numbered documents, BOS
and massive-activation rows dropped). Each architecture is trained by
:func:`darkmatter.experiments.training.train_sae` with the same samples, batch, learning rate and seed; the
L1 / L0 coefficients of standard / jumprelu are calibrated to the L0 target.

Writes (atomically) ``<outputs>/sae_arch_sweep/sae_arch_sweep.json`` and ``.md``, and the SAEs
under ``<outputs>/sae_arch_sweep/<arch>/`` (final) and ``<arch>_best/``.

Run from the repository root: ``python scripts/sweep_sae_arch.py [--train-samples 360000]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from darkmatter.experiments.training import ARCHITECTURES, TrainingSpec, train_sae  # noqa: E402
from darkmatter.pipeline.config import Config, with_values  # noqa: E402
from darkmatter.pipeline.context import open_source  # noqa: E402
from darkmatter.sources.collect import gather_rows  # noqa: E402


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def collect_training_activations(cfg: Config, device: str) -> tuple[torch.Tensor, int]:
    """float32[cfg.training.sae_train_tokens, d_model] SAE-training activations, as step 01 collects them,
    and the number of token windows used."""
    return gather_rows(open_source(cfg, device), "train", cfg.training.sae_train_tokens, cfg.run.batch_size, device)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# SAE architecture sweep", "",
        f"Model `{s['model']}`, hook `{s['hook_name']}`, {s['train_tokens']:,} activation tokens "
        f"({s['n_train']:,} train / {s['n_val']:,} validation rows), d_sae {s['d_sae']:,} "
        f"(expansion {s['expansion']}), L0 target {s['l0_target']:g}, {s['train_samples']:,} training "
        f"samples per run, batch {s['batch_size']}, lr {s['lr']:g}, seed {s['seed']}, device {s['device']}. "
        f"Metrics on the validation rows, from the saved SAE reloaded with `SAE.load_from_disk`. "
        f"Wall time {report['wall_seconds'] / 60:.1f} min (collection {report['collect_seconds']:.0f} s).",
        "",
        "| arch | saved as | L0 target | calibrated coefficient | val L0 | within ±20% | FVU | MSE | "
        "dead fraction | best ckpt (step: FVU, L0) | runs | training s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, r in report["results"].items():
        v, sc, b = r["validation"], r["sparsity_coefficient"], r["best"]
        coef = "—" if sc is None else f"{sc['name'].split('_')[0]} = {sc['value']:.4g}"
        runs = 1 if sc is None else len(sc["calibration"])
        lines.append(
            f"| {arch} | {r['saved_class']} | {r['l0_target']:g} | {coef} | {v['mean_l0']:.2f} | "
            f"{'yes' if r['within_tolerance'] else 'NO'} | {v['fvu']:.4f} | {_fmt(v['mse'], '.5g')} | "
            f"{v['dead_fraction']:.3f} | {b['steps']}: {b['validation']['fvu']:.4f}, "
            f"{b['validation']['mean_l0']:.1f} | {runs} | {r['training_seconds']:.0f} |")
    lines += ["", "Calibration (standard, jumprelu): each run is a full-length run at one fixed coefficient "
              "(validation L0 of its final SAE); the run closest to the target is kept.", ""]
    for arch, r in report["results"].items():
        sc = r["sparsity_coefficient"]
        if sc is None:
            continue
        for c in sc["calibration"]:
            lines.append(f"- {arch} run {c['round']}: {sc['name']} {c['coefficient']:.4g} → validation L0 "
                         f"{c['l0']:.2f}, FVU {c['fvu']:.4f}, {c['seconds']:.0f} s"
                         f"{' (kept)' if c['round'] == sc['chosen_round'] else ''}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    base = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    t = base.training
    p.add_argument("--train-tokens", type=int, default=t.sae_train_tokens)
    p.add_argument("--train-samples", type=int, default=t.sae_train_samples)
    p.add_argument("--l0", type=float, default=float(t.sae_l0), help="L0 target of every architecture")
    p.add_argument("--expansion", type=int, default=t.sae_expansion)
    p.add_argument("--outputs", default=base.run.outputs)
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    p.add_argument("--batch-size", type=int, default=t.sae_batch_size)
    p.add_argument("--lr", type=float, default=t.sae_lr)
    p.add_argument("--seed", type=int, default=base.source.seed)
    p.add_argument("--acts-cache", default=None,
                   help="optional .npy: reuse these activations if it exists, else save them there")
    args = p.parse_args(argv)

    cfg = with_values(base, dict(sae_train_tokens=args.train_tokens, sae_train_samples=args.train_samples,
                                 sae_expansion=args.expansion, seed=args.seed, outputs=args.outputs))
    device = cfg.resolved_device()
    out = Path(args.outputs) / "sae_arch_sweep"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    cache = Path(args.acts_cache) if args.acts_cache else None
    if cache is not None and cache.exists():
        acts, n_windows = torch.from_numpy(np.load(cache)), -1
        if len(acts) != cfg.training.sae_train_tokens:
            raise SystemExit(f"{cache} holds {len(acts)} rows, not --train-tokens {cfg.training.sae_train_tokens}")
    else:
        acts, n_windows = collect_training_activations(cfg, device)
        if cache is not None:
            np.save(cache, acts.numpy())
    collect_seconds = time.perf_counter() - t_start
    d_sae = cfg.training.sae_expansion * acts.shape[1]
    print(f"activations {tuple(acts.shape)} in {collect_seconds:.0f} s; d_sae {d_sae}", flush=True)

    results = {}
    for arch in args.archs:
        t0 = time.perf_counter()
        spec = TrainingSpec(arch=arch, d_sae=d_sae, l0_target=args.l0, total_samples=cfg.training.sae_train_samples,
                            lr=args.lr, seed=cfg.source.seed, device=device, batch_size=args.batch_size)
        r = train_sae(acts, spec, out_dir=out / arch, best_dir=out / f"{arch}_best", verbose=True)
        results[arch] = {**dataclasses.asdict(r), "wall_seconds": time.perf_counter() - t0}
        v = r.validation
        print(f"{arch}: L0 {v['mean_l0']:.2f} (target {args.l0:g}, within {r.within_tolerance}), "
              f"FVU {v['fvu']:.4f}, dead {v['dead_fraction']:.3f}, {r.training_seconds:.0f} s", flush=True)

    report = {
        "settings": {"model": cfg.source.model, "hook_name": cfg.source.hook_name,
                     "train_tokens": cfg.training.sae_train_tokens, "train_windows": n_windows,
                     "train_samples": cfg.training.sae_train_samples, "expansion": cfg.training.sae_expansion,
                     "d_sae": d_sae, "d_model": acts.shape[1], "l0_target": args.l0, "batch_size": args.batch_size,
                     "lr": args.lr, "seed": cfg.source.seed,
                     "device": device, "n_train": next(iter(results.values()))["n_train"],
                     "n_val": next(iter(results.values()))["n_val"],
                     "torch_threads": torch.get_num_threads()},
        "collect_seconds": collect_seconds,
        "wall_seconds": time.perf_counter() - t_start,
        "results": results,
    }
    _atomic_write(out / "sae_arch_sweep.json", json.dumps(report, indent=1))
    _atomic_write(out / "sae_arch_sweep.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Step 01: report the environment, open the source, load or train the SAE, check shapes.

The SAE comes from, in order: the source itself (the planted oracle), ``--sae-release`` /
``--sae-path``, or training through SAELens on the source's ``"train"`` rows, which are kept
apart from the analysed rows (a model: even-numbered documents train, odd ones are analysed;
cached activations: even and odd windows; planted: separate random streams).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import source_kinds
from darkmatter.pipeline.config import as_flags
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import Environment, SAEInfo, SetupResult, TrainingHistory, TrainingRecord
from darkmatter.sources.collect import gather_rows
from darkmatter.sources.saes import check_hook, oriented_decoder, sae_metadata, write_folder_metadata

PACKAGES = ("torch", "sae-lens", "transformer-lens", "transformers", "numpy", "scikit-learn", "scipy")


def environment(device: str) -> Environment:
    """The machine, its free memory and the versions of the libraries that shape the numbers."""
    import importlib.metadata as md

    import psutil

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    gpu: dict[str, Any] = {}
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        gpu = dict(gpu=torch.cuda.get_device_name(), gpu_free_gb=round(free / 2**30, 2),
                   gpu_total_gb=round(total / 2**30, 2))
    return Environment(python=platform.python_version(), platform=platform.platform(),
                       cpu_count=psutil.cpu_count(), ram_free_gb=round(psutil.virtual_memory().available / 2**30, 2),
                       device=device, packages={p: version(p) for p in PACKAGES}, **gpu)


def _train(ctx: StepContext, d_model: int) -> tuple[Path, int]:
    """Train the configured SAE on the source's training rows; stage sae/, sae_best/,
    sae_training.json and sae_history.json. Returns (staged folder of the final SAE, windows used)."""
    from darkmatter.experiments.training import TrainingSpec, train_sae

    t, store = ctx.cfg.training, ctx.store
    t0 = time.perf_counter()
    acts, n_windows = gather_rows(ctx.source, "train", t.sae_train_tokens, ctx.cfg.run.batch_size, ctx.device)
    t1 = time.perf_counter()
    sae_dir, best_dir = store.staged_dir("sae"), store.staged_dir("sae_best")
    spec = TrainingSpec(arch=t.sae_arch, d_sae=t.sae_expansion * d_model, l0_target=t.sae_l0,
                        total_samples=t.sae_train_samples, lr=t.sae_lr, seed=ctx.cfg.source.seed, device=ctx.device,
                        batch_size=t.sae_batch_size)
    result = train_sae(acts, spec, out_dir=sae_dir, best_dir=best_dir)
    for folder in (sae_dir, best_dir):
        write_folder_metadata(folder, _metadata(ctx))
    ctx.write(TrainingHistory(history=result.history, evals=result.evals))
    ctx.write(TrainingRecord(train_windows=n_windows, n_train_tokens=len(acts), seconds_activations=t1 - t0,
                             seconds_training=time.perf_counter() - t1,
                             result=dataclasses.replace(result, history=[], evals=[])))
    v = result.validation
    print(f"trained {t.sae_arch} SAE (d_sae {result.d_sae}): validation FVU {v['fvu']:.4f}, "
          f"L0 {v['mean_l0']:.1f} (target {t.sae_l0:g}), dead {v['dead_fraction']:.1%} ({result.steps} steps)")
    return sae_dir, n_windows


def _metadata(ctx: StepContext) -> dict[str, Any]:
    """SAELens metadata of the SAEs this step saves: the run's model, hook (as the source names it),
    windows and dataset."""
    return {**source_kinds.sae_metadata(ctx.cfg.to_dict()), "hook_name": ctx.source.hook().hook_name}


def _check_pretrained(ctx: StepContext, sae: Any, hook_name: str) -> None:
    """A named SAE whose SAELens metadata gives another hook stops the run; other differences
    (context size, BOS) are printed."""
    s = ctx.cfg.source
    windows = source_kinds.of(ctx.cfg).has_model
    for note in check_hook(sae_metadata(sae), hook_name, s.context_size if windows else None,
                           s.prepend_bos if windows else None):
        print(f"note: {as_flags(note)}")


def run(ctx: StepContext) -> None:
    """Report the environment, load model and SAE (training one if none is named), check shapes."""
    env = environment(ctx.device)
    print("environment: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(env).items()
                                      if k != "packages" and v is not None)
          + ", " + ", ".join(f"{k}={v}" for k, v in env.packages.items()))
    source, store = ctx.source, ctx.store
    hook = source.hook()
    print(f"source: {source.description}; hook {hook.hook_name} width {hook.d_model}")

    with store.transaction():
        train_windows, made = 0, set()
        builtin = source.builtin_sae(ctx.device)
        if builtin is not None:
            staged = store.staged_dir("sae")
            builtin.save_model(str(staged))
            write_folder_metadata(staged, _metadata(ctx))
            sae, made_by, made = ctx.sae(staged=staged), "built into the source", {"sae"}
        elif ctx.cfg.trains_sae:
            sae_dir, train_windows = _train(ctx, hook.d_model)
            sae = ctx.sae(staged=sae_dir)
            made_by = f"trained here ({ctx.cfg.training.sae_arch})"
            made = {"sae", "sae_best", "sae_training.json", "sae_history.json"}
        else:
            sae, made_by = ctx.sae(), "pretrained"
            _check_pretrained(ctx, sae, hook.hook_name)
        raw_W_dec = sae.W_dec.detach().cpu().numpy()
        W_dec, transposed = oriented_decoder(raw_W_dec, hook.d_model)
        if int(sae.cfg.d_in) != hook.d_model:
            raise DarkMatterError(
                f"the SAE reads d_in={sae.cfg.d_in} but {hook.hook_name} is {hook.d_model} wide: "
                "pick an SAE trained on this model and hook (--sae-id / --sae-path / --hook-name)")
        truth = source.ground_truth(W_dec)
        if truth is not None:
            store.save_npy("planted_directions.npy", truth.directions.astype(np.float32))
            made.add("planted_directions.npy")
        ctx.discard_unless(made, "sae", "sae_best", "sae_training.json", "sae_history.json",
                           "planted_directions.npy")
        sae_hook = sae_metadata(sae).get("hook_name")
        setup = SetupResult(
            environment=env, source_kind=source.kind, description=source.description, hook=hook,
            sae=SAEInfo(source=ctx.sae_source(), sae_class=type(sae).__name__, d_sae=int(sae.cfg.d_sae),
                        d_in=int(sae.cfg.d_in), W_dec_shape=list(raw_W_dec.shape), W_dec_transposed=transposed,
                        hook_name=sae_hook, made_by=made_by),
            sae_train_windows=train_windows, source_details=source.details())
        ctx.write(setup)
    print(f"SAE: {setup.sae.sae_class} d_sae {setup.sae.d_sae}, W_dec {tuple(raw_W_dec.shape)} ({made_by})")

"""Shared test helpers (the fixtures are in conftest.py): constants of the tiny model, a tiny
SAELens SAE in a folder, running a script as a subprocess, and what steps 01-02 would leave
behind for tests that start at a later step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_D_MODEL = 32
TINY_LAYERS = 8
TINY_HOOK = "blocks.6.hook_resid_pre"  # the GPT-2 preset's hook
TINY_RUN_TOKENS, TINY_RUN_K = 3000, 6  # the tiny end-to-end run (conftest.tiny_run)


def save_sae(folder: Path, d_in: int, d_sae: int, seed: int = 0) -> Path:
    """A randomly initialised SAELens StandardSAE saved with ``save_model``."""
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.b_enc.fill_(-0.05)
    folder.mkdir(parents=True, exist_ok=True)
    sae.save_model(str(folder))
    return folder


def run_script(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run scripts/<name> in a subprocess from the repo root; return the finished process."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                             f"stderr:\n{proc.stderr[-3000:]}")
    return proc


def context(cfg, number: int):
    """A StepContext for step ``number`` of ``cfg`` (outputs in ``cfg.run.outputs``)."""
    from darkmatter.pipeline import table
    from darkmatter.pipeline.context import StepContext
    from darkmatter.pipeline.store import OutputStore

    return StepContext(cfg=cfg, store=OutputStore(cfg.run.outputs), step=table.step(number))


def run_steps(cfg, *numbers: int) -> None:
    """Run the given steps' ``run(ctx)`` in this process (no command line)."""
    from darkmatter.pipeline import table

    for n in numbers:
        table.step(n).function()(context(cfg, n))


def write_collection(cfg, resid: np.ndarray, acts: np.ndarray) -> None:
    """What steps 01-02 would leave: config.json, typed setup/sae_stats, the two arrays."""
    from darkmatter.pipeline.synthetic import seed_collection

    def fill(a, r):
        a[:] = acts
        r[:] = resid

    seed_collection(cfg, resid.shape[1], fill, "arrays written by a test")


def oracle_residual(spec, n: int):
    """Planted analysis rows and their residual under the oracle SAE:
    (x: float32[n, d_model], f: float32[n, n_features] feature magnitudes, r: float32[n, d_model])."""
    from darkmatter.sources import planted

    x, f = planted.sample(spec, "analysis", n)
    sae = planted.oracle_sae(spec)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        r = (xt - sae.decode(sae.encode(xt))).numpy()
    return x, f, r

"""Shared fixtures: a tiny HookedTransformer folder, tiny SAEs, local text, seeded RNGs
(helpers that are not fixtures live in ``tests/helpers.py``).

Nothing here touches the network: the model is built from a HookedTransformerConfig
with seeded random weights, its tokenizer is a small byte-level BPE trained on
the bundled Python documentation, and SAEs are SAELens objects saved to folders.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from helpers import (  # noqa: E402
    TINY_D_MODEL,
    TINY_HOOK,
    TINY_RUN_K,
    TINY_RUN_TOKENS,
    make_tiny_model,
    run_script,
    save_sae,
    write_text_files,
)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def text_glob(tmp_path_factory) -> str:
    """Glob over 40 local text files (pydoc topics)."""
    return write_text_files(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A local_hooked model folder: hooked_config.json, weights.pt and a 512-token BPE tokenizer."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory) -> Path:
    return save_sae(tmp_path_factory.mktemp("tiny_sae"), TINY_D_MODEL, 128)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir, text_glob) -> Path:
    """Every numbered script, as a subprocess, on the tiny local model (its SAE trained by 01):
    the outputs folder the script, dashboard and notebook tests read."""
    from darkmatter.pipeline import table

    scripts = [s.script for s in table.steps()]
    out = tmp_path_factory.mktemp("run")
    run_script(scripts[0], "--model", str(tiny_model_dir), "--hook-name", TINY_HOOK,
               "--text-files", text_glob, "--context-size", "32", "--n-tokens", str(TINY_RUN_TOKENS),
               "--sae-train-tokens", "3000", "--sae-train-samples", "12000", "--sae-batch-size", "256",
               "--sae-expansion", "4", "--sae-l0", "4", "--n-components", str(TINY_RUN_K), "--batch-size", "8",
               "--causal-windows", "16", "--causal-components", "all", "--completeness-runs", "1",
               "--outputs", str(out))
    for name in scripts[1:]:
        run_script(name, "--outputs", str(out))
    return out

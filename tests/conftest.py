"""Shared fixtures: a tiny HookedTransformer folder, tiny SAEs, local text, seeded RNGs
(helpers that are not fixtures live in ``tests/helpers.py``).

Nothing here touches the network: the model is built from a HookedTransformerConfig
with seeded random weights, its tokenizer is a small byte-level BPE trained on
the bundled Python documentation, and SAEs are SAELens objects saved to folders.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
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
    save_sae,
    write_text_files,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slow(seconds=…)`` tests first, longest first (stable order otherwise): under ``-n 2``
    the workers start on them and the many short tests fill in around them, instead of one long
    test ending the run alone."""
    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return -float(mark.kwargs.get("seconds", 1)) if mark else 0.0

    items.sort(key=seconds)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def shared(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder built once per test session, also across pytest-xdist workers: the first worker
    to ask builds it under a file lock in the workers' common temporary folder, the others wait
    and reuse it (pytest-xdist's documented recipe for session data). Tests read it, never write it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / f"shared_{name}", root / f"shared_{name}.done"
    with FileLock(str(root / f"shared_{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def text_glob(tmp_path_factory) -> str:
    """Glob over 40 local text files (pydoc topics)."""
    return str(shared(tmp_path_factory, "text", write_text_files) / "*.txt")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A local_hooked model folder: hooked_config.json, weights.pt and a 512-token BPE tokenizer."""
    return shared(tmp_path_factory, "tiny_model", make_tiny_model)


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "tiny_sae", lambda folder: save_sae(folder, TINY_D_MODEL, 128))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir, text_glob) -> Path:
    """Every numbered step, one ``main(N)`` after the other as the scripts call it, on the tiny local
    model (its SAE trained by 01): the outputs folder the script, dashboard and notebook tests read
    (built once per session; ``tests/e2e/test_scripts.py`` runs the scripts themselves)."""
    from darkmatter.pipeline import cli, table

    def build(out: Path) -> None:
        steps = table.steps()
        first = ["--model", str(tiny_model_dir), "--hook-name", TINY_HOOK,
                 "--text-files", text_glob, "--context-size", "32", "--n-tokens", str(TINY_RUN_TOKENS),
                 "--sae-train-tokens", "3000", "--sae-train-samples", "12000", "--sae-batch-size", "256",
                 "--sae-expansion", "4", "--sae-l0", "4", "--n-components", str(TINY_RUN_K), "--batch-size", "8",
                 "--causal-windows", "16", "--causal-components", "all", "--completeness-runs", "1",
                 "--outputs", str(out)]
        for step in steps:
            assert cli.main(step.number, first if step is steps[0] else ["--outputs", str(out)]) == 0, step.script

    return shared(tmp_path_factory, "tiny_run", build)


#: the small planted run several files read (report, end to end): 20,000 tokens in 32 dimensions
SMALL_PLANTED = ["--preset", "planted", "--planted-d-model", "32", "--planted-features", "48",
                 "--planted-withheld", "8", "--n-tokens", "20000", "--stability-splits", "1",
                 "--completeness-runs", "1"]


@pytest.fixture(scope="session")
def small_planted_run(tmp_path_factory) -> Path:
    """``run_pipeline.py`` with :data:`SMALL_PLANTED` (built once per session; tests read it)."""
    from darkmatter.pipeline import cli

    def build(out: Path) -> None:
        assert cli.run_all([*SMALL_PLANTED, "--outputs", str(out)]) == 0

    return shared(tmp_path_factory, "small_planted_run", build)

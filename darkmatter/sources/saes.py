"""SAEs through SAELens: pretrained (``SAE.from_pretrained``) or a local folder (``SAE.load_from_disk``).

A trained SAE is saved by the pipeline in SAELens's format and reloaded the same way, so
every SAE the analysis sees went through one of these two calls. SAELens keeps where an SAE's
activations come from in ``cfg.json``'s ``metadata`` (``SAEMetadata``: ``model_name``,
``hook_name``, ``context_size``, ``prepend_bos``, ``dataset_path``, ...); :func:`run_metadata`
fills it for the SAEs this project writes, :func:`folder_metadata` reads it back without
loading weights, and :func:`check_hook` refuses an SAE trained at another hook.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from darkmatter.errors import DarkMatterError
from darkmatter.sources.hub import hub_guard


def load_sae(device: str, release: str | None = None, sae_id: str | None = None,
             path: str | Path | None = None, missing_fix: str = "check `sae_path`") -> Any:
    """Load an SAELens ``SAE`` in float32 on ``device``: ``release``/``sae_id`` from the hub, else
    the folder ``path`` (``cfg.json`` + ``sae_weights.safetensors``, as ``save_model`` writes).

    Args:
        missing_fix: what to tell the user when ``path`` holds no SAE.
    Raises:
        DarkMatterError: hub unreachable, unknown release/id, or no SAE at ``path``.
    """
    from sae_lens import SAE

    if release is not None:
        with hub_guard(f"SAE {release}/{sae_id}"):
            sae = SAE.from_pretrained(release=release, sae_id=sae_id, device=device, dtype="float32")
    else:
        if path is None or not (Path(path) / "cfg.json").is_file():
            raise DarkMatterError(f"no SAE at {path}: {missing_fix}")
        check_folder(path, missing_fix)
        try:
            sae = SAE.load_from_disk(str(path), device=device)
        except (KeyError, ValueError, TypeError, RuntimeError, OSError) as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            raise DarkMatterError(f"cannot load the SAE at {path} ({type(exc).__name__}: {reason}): "
                                  f"{missing_fix}") from None
    sae.eval()
    return sae


def pretrained_neuronpedia_id(release: str, sae_id: str) -> str | None:
    """The Neuronpedia id SAELens's pretrained-SAE directory lists for ``release``/``sae_id``
    (``sae_lens.loading.pretrained_saes_directory.get_pretrained_saes_directory``: the YAML shipped
    in the installed package, read offline), e.g. ``gpt2-small-res-jb``/``blocks.11.hook_resid_pre``
    → ``gpt2-small/11-res-jb``; None when the release, the id or its Neuronpedia id is not listed."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory().get(release)
    return (entry.neuronpedia_id or {}).get(sae_id) if entry is not None else None


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a .safetensors header (8-byte length, then JSON), without reading
    the tensors. Raises ValueError when the header is unreadable or the file shorter than it says."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise ValueError("the header is cut off")
        header = json.loads(fh.read(n))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"truncated: {size:,} bytes of {8 + n + end:,}")
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def check_folder(path: str | Path, fix: str = "check `sae_path`") -> None:
    """Refuse, cheaply and before any model loads, a folder that is not a whole SAELens SAE:
    ``cfg.json`` a JSON object with integer ``d_in`` and ``d_sae``; ``sae_weights.safetensors``
    complete, with ``W_dec`` of shape [d_sae, d_in] (or its transpose).

    Raises:
        DarkMatterError: what is wrong, the file, and ``fix``.
    """
    folder = Path(path)
    cfg_path, weights = folder / "cfg.json", folder / "sae_weights.safetensors"
    if not cfg_path.is_file():
        raise DarkMatterError(f"no SAE at {folder} (no cfg.json): {fix}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise DarkMatterError(f"{cfg_path} is not readable JSON ({str(exc)[:80]}): {fix}") from None
    dims = {k: cfg.get(k) if isinstance(cfg, dict) else None for k in ("d_in", "d_sae")}
    if not all(type(v) is int and v > 0 for v in dims.values()):
        raise DarkMatterError(f"{cfg_path} has no positive integer d_in and d_sae ({dims}), as SAELens writes: {fix}")
    if not weights.is_file():
        raise DarkMatterError(f"{folder} has cfg.json but no sae_weights.safetensors: {fix}")
    try:
        shapes = _safetensors_shapes(weights)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DarkMatterError(f"{weights} is not a readable safetensors file ({str(exc)[:80]}): {fix}") from None
    W_dec = shapes.get("W_dec")
    if W_dec is not None and sorted(W_dec) != sorted(int(v) for v in dims.values() if v is not None):
        raise DarkMatterError(f"{folder}: cfg.json says d_in {dims['d_in']}, d_sae {dims['d_sae']} but "
                              f"sae_weights.safetensors holds W_dec {tuple(W_dec)}; the files do not belong "
                              f"together: {fix}")


def oriented_decoder(W_dec: np.ndarray, d_model: int) -> tuple[np.ndarray, bool]:
    """Return ``W_dec`` as float32[d_sae, d_model] and whether it had to be transposed.

    Raises:
        DarkMatterError: neither axis of ``W_dec`` is ``d_model`` wide.
    """
    if W_dec.ndim != 2 or d_model not in W_dec.shape:
        raise DarkMatterError(
            f"the SAE decoder has shape {tuple(W_dec.shape)} but the hook is {d_model} wide: "
            "the SAE was trained for another model or hook; pick one that matches "
            "(`sae_id`, `sae_path` or `hook_name`)")
    if W_dec.shape[1] == d_model:
        return W_dec, False
    warnings.warn(f"W_dec has shape {W_dec.shape}; transposing to (d_sae, d_model)", stacklevel=2)
    return np.ascontiguousarray(W_dec.T), True


def decoder_rows(sae: Any, d_model: int) -> np.ndarray:
    """The SAE's decoder as float32[d_sae, d_model] (SAELens orientation; see :func:`oriented_decoder`)."""
    W_dec, _ = oriented_decoder(sae.W_dec.detach().float().cpu().numpy(), d_model)
    return W_dec


#: SAELens ``SAEMetadata`` keys that describe the activations an SAE reads (besides versions).
METADATA_KEYS = ("model_name", "model_class_name", "hook_name", "hook_head_index", "context_size",
                 "prepend_bos", "dataset_path")


def run_metadata(config: dict[str, Any], *, windows: bool, names_model: bool,
                 model_class_name: str | None) -> dict[str, Any]:
    """SAELens metadata describing a run's activations, from its config (``config.json``'s content).

    ``model_name``, ``hook_name``, ``context_size``, ``prepend_bos`` and ``dataset_path`` are SAELens's
    own keys; ``model_source``, ``text_files`` and ``dataset_description`` are ours. ``dataset_path``
    is what the text was, in the order the source reads it: the absolute glob of ``text_files``, else
    the Hugging Face ``dataset``, else ``darkmatter-corpus:<name>`` for a named corpus
    (:mod:`darkmatter.sources.corpus`, not on the hub; ``dataset_description`` names its sources).
    What the source can say comes from the caller (the pipeline's source registry): activations
    without a language model reading windows of text (planted, cached) have no window, BOS or
    dataset, and activations made elsewhere name no model.

    Args:
        config: the run config as a dict (sections ``source``, ...), e.g. ``Config.to_dict()``.
        windows: a language model read windows of text (``context_size``/``prepend_bos``/dataset apply).
        names_model: ``source.model`` names what made the activations.
        model_class_name: SAELens's ``model_class_name`` (``"HookedTransformer"`` for TransformerLens
            models, loaded with TransformerLens's default weight processing), or None.
    Raises:
        DarkMatterError: ``config`` has no ``source`` section with a ``hook_name``.
    """
    s = config.get("source") if isinstance(config, dict) else None
    if not isinstance(s, dict) or not s.get("hook_name"):
        raise DarkMatterError("the run config has no source.hook_name: pass config.json of a run "
                              "(rerun scripts/01_setup_and_load.py to write one)")
    return {"model_name": s.get("model") if names_model else None, "model_class_name": model_class_name,
            "hook_name": s["hook_name"], "hook_head_index": None,
            "context_size": s.get("context_size") if windows else None,
            "prepend_bos": s.get("prepend_bos") if windows else None,
            **(_dataset(s) if windows else {"dataset_path": None, "dataset_description": None}),
            "model_source": s.get("model_source"), "text_files": s.get("text_files") if windows else None}


def _dataset(s: dict[str, Any]) -> dict[str, Any]:
    """``dataset_path`` and ``dataset_description`` of a source section (see :func:`run_metadata`)."""
    import os

    if s.get("text_files"):
        return {"dataset_path": os.path.abspath(os.path.expanduser(s["text_files"])),
                "dataset_description": f"local text files {s['text_files']}"}
    if s.get("dataset"):
        return {"dataset_path": s["dataset"],
                "dataset_description": f"Hugging Face dataset {s['dataset']}, column {s.get('dataset_column', 'text')}"}
    if s.get("corpus"):
        from darkmatter.sources.corpus import describe

        return {"dataset_path": f"darkmatter-corpus:{s['corpus']}", "dataset_description": describe(s["corpus"])}
    return {"dataset_path": None, "dataset_description": None}


def write_folder_metadata(folder: str | Path, metadata: dict[str, Any]) -> None:
    """Merge ``metadata`` into the ``metadata`` of the SAELens ``cfg.json`` in ``folder`` (in place,
    written through a temporary file); SAELens reads it back as ``sae.cfg.metadata``.

    Raises:
        DarkMatterError: ``folder`` holds no SAELens ``cfg.json``.
    """
    path = Path(folder) / "cfg.json"
    if not path.is_file():
        raise DarkMatterError(f"no SAE at {folder}: expected cfg.json written by SAELens's save_model")
    cfg = json.loads(path.read_text())
    cfg["metadata"] = {**(cfg.get("metadata") or {}), **metadata}
    tmp = path.with_name(".cfg.json.tmp")
    tmp.write_text(json.dumps(cfg))
    tmp.replace(path)


def folder_metadata(folder: str | Path) -> dict[str, Any]:
    """The SAELens metadata of the SAE in ``folder`` without loading its weights: ``cfg.json``'s
    ``metadata`` over its top-level keys (SAELens < 6 kept ``hook_name``, ``context_size``, ...
    at the top). Empty when there is no readable ``cfg.json``."""
    try:
        cfg = json.loads((Path(folder) / "cfg.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    top = {k: cfg[k] for k in METADATA_KEYS if k in cfg}
    if "hook_point" in cfg and "hook_name" not in top:  # SAELens < 6
        top["hook_name"] = cfg["hook_point"]
    meta = cfg.get("metadata")
    return {**top, **{k: v for k, v in (meta if isinstance(meta, dict) else {}).items() if v is not None}}


def sae_metadata(sae: Any) -> dict[str, Any]:
    """A loaded SAELens SAE's metadata as a dict (only the keys it sets)."""
    meta = getattr(getattr(sae, "cfg", None), "metadata", None)
    if meta is None:
        return {}
    return {k: v for k, v in (meta.to_dict() if hasattr(meta, "to_dict") else dict(meta)).items() if v is not None}


def check_hook(metadata: dict[str, Any], hook_name: str, context_size: int | None = None,
               prepend_bos: bool | None = None) -> list[str]:
    """Refuse an SAE whose SAELens metadata names another hook; describe other differences.

    Args:
        metadata: the SAE's metadata (:func:`sae_metadata` / :func:`folder_metadata`).
        hook_name: the run's hook; context_size / prepend_bos: the run's windows (None: no windows,
            e.g. planted or cached activations, so nothing to compare).
    Returns:
        notes (one line each) where the SAE was trained with another context size or BOS setting;
        empty when everything the metadata names agrees.
    Raises:
        DarkMatterError: the metadata names a hook other than ``hook_name``.
    """
    sae_hook = metadata.get("hook_name")
    if sae_hook and sae_hook != hook_name:
        raise DarkMatterError(
            f"the SAE was trained on {sae_hook} but this run reads {hook_name}: pass `hook_name` {sae_hook}, "
            "or pick an SAE trained on this hook (`sae_release`/`sae_id` or `sae_path`)")
    notes = []
    size = metadata.get("context_size")
    if context_size is not None and isinstance(size, int) and size > 0 and size != context_size:
        notes.append(f"the SAE was trained on {size}-token contexts, this run uses {context_size} "
                     f"(`context_size` {size} matches it)")
    bos = metadata.get("prepend_bos")
    if prepend_bos is not None and isinstance(bos, bool) and bos != prepend_bos:
        notes.append(f"the SAE was trained with prepend_bos={bos}, this run uses {prepend_bos} "
                     f"(`prepend_bos` {str(bos).lower()} matches it)")
    return notes

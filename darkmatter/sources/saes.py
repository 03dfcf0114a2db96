"""SAEs through SAELens: pretrained (``SAE.from_pretrained``) or a local folder (``SAE.load_from_disk``).

A trained SAE is saved by the pipeline in SAELens's format and reloaded the same way, so
every SAE the analysis sees went through one of these two calls.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from darkmatter.errors import DarkMatterError
from darkmatter.sources.hub import hub_guard


def load_sae(device: str, release: str | None = None, sae_id: str | None = None,
             path: str | Path | None = None, missing_fix: str = "check --sae-path") -> Any:
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
            "the SAE was trained for another model or hook; pick one that matches "
            "(--sae-id, --sae-path or --hook-name)")
    if W_dec.shape[1] == d_model:
        return W_dec, False
    warnings.warn(f"W_dec has shape {W_dec.shape}; transposing to (d_sae, d_model)", stacklevel=2)
    return np.ascontiguousarray(W_dec.T), True


def decoder_rows(sae: Any, d_model: int) -> np.ndarray:
    """The SAE's decoder as float32[d_sae, d_model] (SAELens orientation; see :func:`oriented_decoder`)."""
    W_dec, _ = oriented_decoder(sae.W_dec.detach().float().cpu().numpy(), d_model)
    return W_dec

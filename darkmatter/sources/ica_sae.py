"""A run's ICA components as a SAELens SAE, so any SAELens tool can load them.

Step 04 writes, for k components of the d_model-wide residual r = x − SAE(x) (see
:mod:`darkmatter.analysis.decompose`)::

    sources   s = (r − mean) @ unmixing.T      unmixing: [k, d_model], mean: [d_model]
    r − mean ≈ s @ mixing.T                    mixing:   [d_model, k]

:func:`save_ica_sae` writes this decomposition as a SAELens folder (``cfg.json`` +
``sae_weights.safetensors``, the format of ``SAE.save_model``; SAELens: Bloom, Tigges, Duong and
Chanin, https://github.com/decoderesearch/SAELens) of SAELens's built-in ``"standard"``
architecture, so ``sae_lens.SAE.load_from_disk(folder)`` loads it with any plain sae-lens ≥ 6.
That SAE computes (``StandardSAE.encode`` / ``decode``, with ``normalize_activations="none"``,
``reshape_activations="none"`` and ``apply_b_dec_to_input=True``)::

    f = ReLU((r − b_dec) @ W_enc + b_enc)      x̂ = f @ W_dec + b_dec

Its ReLU cannot emit a signed source from one latent, so each source takes two (d_sae = 2k)::

    W_enc = [unmixing.T, −unmixing.T]  (d_model × 2k)    b_enc = 0
    W_dec = [mixing.T; −mixing.T]      (2k × d_model)    b_dec = mean

Then f[:, :k] = ReLU(s), f[:, k:] = ReLU(−s), so s = f[:, :k] − f[:, k:] exactly, and
``decode(encode(r)) = s @ mixing.T + mean`` (the k-component reconstruction of r).

The SAE's input is the *residual* of the run's SAE, not the activations at ``metadata.hook_name``:
:class:`ICASAE` recovers signed sources from residuals (:meth:`ICASAE.sources`) or from activations
through the run's SAE (:meth:`ICASAE.residual_sources`). In a ``HookedSAETransformer`` with the run's
SAE attached at ``hook_name`` and ``use_error_term=True``, the residual is the SAE's
``hook_sae_error`` (``metadata.residual_hook_name``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkmatter.errors import DarkMatterError

#: Marks a SAELens folder as written by :func:`save_ica_sae` (a key of its ``cfg.json`` metadata).
FORMAT = "darkmatter-ica-sae-v1"

README = """# ICA components of an SAE's residual, as a SAELens SAE

This folder is a SAELens SAE (`cfg.json` + `sae_weights.safetensors`, architecture "standard"):
`sae_lens.SAE.load_from_disk("{name}")` loads it.

* Input: the residual r = x - SAE(x) of the run's SAE ({base_sae}) at hook `{hook_name}`, not the
  activations x themselves. With that SAE attached to a HookedSAETransformer and
  `use_error_term=True`, r is the hook `{hook_name}.hook_sae_error`.
* Features: d_sae = 2k = {d_sae} for k = {k} ICA components. Feature i < k is ReLU(s_i) and feature
  k + i is ReLU(-s_i), where s = (r - mean) @ unmixing.T are the ICA sources (unit variance over
  the analysed tokens, signed to positive skew, ordered by descending excess kurtosis).
* Signed sources: `f = sae.encode(r); s = f[:, :k] - f[:, k:]`.
* Reconstruction: `sae.decode(sae.encode(r)) = s @ mixing.T + mean`, the k-component
  reconstruction of r; decoder row i (= -row k + i) is what source i writes.
* In Python: `darkmatter.sources.ica_sae.load_ica_sae(folder).sources(r)`, or
  `.residual_sources(x, sae)` from activations x and the run's SAE.
"""


def _matrix(name: str, a: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise DarkMatterError(f"{name} must be {ndim}-D, got shape {arr.shape}: pass step 04's "
                              "ica_unmixing.npy [k, d_model], ica_mixing.npy [d_model, k] and "
                              "residual_mean.npy [d_model] of one run")
    if not np.isfinite(arr).all():
        raise DarkMatterError(f"{name} holds NaN or inf: rerun scripts/04_run_ica.py")
    return arr


def ica_sae_weights(unmixing: Any, mixing: Any, mean: Any) -> dict[str, torch.Tensor]:
    """The ``StandardSAE`` state dict of the decomposition (float32; layout in the module docstring).

    Args:
        unmixing: float[k, d_model]; mixing: float[d_model, k]; mean: float[d_model].
    Returns:
        ``{"W_enc": [d_model, 2k], "b_enc": [2k], "W_dec": [2k, d_model], "b_dec": [d_model]}``.
    Raises:
        DarkMatterError: shapes that do not belong together, or non-finite values.
    """
    U, M, mu = _matrix("unmixing", unmixing, 2), _matrix("mixing", mixing, 2), _matrix("mean", mean, 1)
    k, d = U.shape
    if M.shape != (d, k) or mu.shape != (d,) or k == 0:
        raise DarkMatterError(f"unmixing {U.shape}, mixing {M.shape} and mean {mu.shape} do not fit together: "
                              "expected [k, d_model], [d_model, k] and [d_model] (ica_unmixing.npy, "
                              "ica_mixing.npy and residual_mean.npy of one run)")
    as32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return {"W_enc": as32(np.concatenate([U.T, -U.T], axis=1)), "b_enc": torch.zeros(2 * k),
            "W_dec": as32(np.concatenate([M.T, -M.T], axis=0)), "b_dec": as32(mu)}


def ica_sae_metadata(run_meta: dict[str, Any], base_sae: str | None = None,
                     hook_name: str | None = None) -> dict[str, Any]:
    """SAELens metadata for the ICA SAE of a run: ``run_meta`` (the run's model, hook, windows and
    dataset, :func:`darkmatter.sources.saes.run_metadata`), what the input is, and ``base_sae``
    (the run's SAE, e.g. its release/id; see ``StepContext.sae_source``). ``hook_name`` replaces
    the run's (pass ``setup.json``'s ``hook.hook_name``: the hook the source actually read).

    Raises:
        DarkMatterError: ``run_meta`` has no ``hook_name``.
    """
    if not run_meta.get("hook_name") and not hook_name:
        raise DarkMatterError("the run's metadata has no hook_name: pass run_metadata() of config.json")
    meta = {**run_meta, "hook_name": hook_name or run_meta["hook_name"]}
    return {**meta, "input": "residual x - SAE(x) of the base SAE at hook_name",
            "residual_hook_name": f"{meta['hook_name']}.hook_sae_error", "base_sae": base_sae}


def save_ica_sae(folder: str | Path, unmixing: Any, mixing: Any, mean: Any, metadata: dict[str, Any]) -> None:
    """Write the decomposition as a SAELens ``"standard"`` SAE with d_sae = 2k in ``folder``.

    The folder is written beside itself under a temporary name and renamed into place (an
    existing ``folder`` is replaced), with ``cfg.json``, ``sae_weights.safetensors`` and a
    ``README.md`` that says what the features are and how to recover signed sources.

    Args:
        folder: destination (e.g. ``outputs/ica_sae``).
        unmixing: float[k, d_model] (``ica_unmixing.npy``); mixing: float[d_model, k]
            (``ica_mixing.npy``); mean: float[d_model] (``residual_mean.npy``), residual units.
        metadata: SAELens metadata (``model_name``, ``hook_name``, ``context_size``,
            ``prepend_bos``, ``dataset_path``, ...; :func:`ica_sae_metadata` builds it from the run
            config); JSON-serialisable values only.

    Weights are stored in float32 (SAELens's default dtype): the sources it gives agree with
    step 04's float64 arithmetic to about 1e-6 of their scale.
    Raises:
        DarkMatterError: shapes that do not belong together or non-finite values.
    """
    from sae_lens import StandardSAEConfig, __version__
    from safetensors.torch import save_file

    weights = ica_sae_weights(unmixing, mixing, mean)
    d_model, d_sae = weights["W_enc"].shape
    k = d_sae // 2
    cfg = StandardSAEConfig(d_in=d_model, d_sae=d_sae, dtype="float32", device="cpu", apply_b_dec_to_input=True,
                            normalize_activations="none", reshape_activations="none").to_dict()
    cfg["metadata"] = {**cfg["metadata"], **metadata, "sae_lens_version": __version__,
                       "sae_lens_training_version": None, "darkmatter_format": FORMAT, "n_components": k,
                       "feature_layout": "feature i < k: ReLU(s_i); feature k+i: ReLU(-s_i); s = f[:, :k] - f[:, k:]"}
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp", dir=folder.parent))
    try:
        save_file(weights, str(tmp / "sae_weights.safetensors"))
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "README.md").write_text(README.format(
            name=folder.name, base_sae=metadata.get("base_sae") or "the run's SAE",
            hook_name=metadata.get("hook_name") or "hook_name", d_sae=d_sae, k=k))
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old", dir=folder.parent))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _as_tensor(a: Any, device: Any) -> torch.Tensor:
    return (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(device, torch.float32)


class ICASAE:
    """A loaded ICA SAE (:func:`load_ica_sae`): the SAELens ``StandardSAE`` and its signed sources.

    Attributes:
        sae: the SAELens SAE (d_in = d_model, d_sae = 2k); ``sae.cfg.metadata`` holds the run's
            model, hook, windows and dataset.
        k: number of ICA components; d_model: residual width.
    """

    def __init__(self, sae: Any):
        self.sae = sae
        self.d_model, self.k = int(sae.cfg.d_in), int(sae.cfg.d_sae) // 2

    @property
    def unmixing(self) -> np.ndarray:
        """float32[k, d_model]: s = (r − mean) @ unmixing.T."""
        return self.sae.W_enc.detach()[:, :self.k].T.cpu().numpy()

    @property
    def mixing(self) -> np.ndarray:
        """float32[d_model, k]: r − mean ≈ s @ mixing.T."""
        return self.sae.W_dec.detach()[:self.k].T.cpu().numpy()

    @property
    def mean(self) -> np.ndarray:
        """float32[d_model]: the residual mean (``b_dec``)."""
        return self.sae.b_dec.detach().cpu().numpy()

    def _rows(self, r: Any, what: str) -> torch.Tensor:
        t = _as_tensor(r, self.sae.W_enc.device)
        if t.ndim != 2 or t.shape[1] != self.d_model:
            raise DarkMatterError(f"{what} has shape {tuple(t.shape)} but this ICA SAE reads [m, {self.d_model}] "
                                  "rows: pass rows of the run's hook (reshape [batch, pos, d_model] to 2-D)")
        return t

    @torch.no_grad()
    def sources(self, r: Any, chunk_size: int = 16384) -> np.ndarray:
        """Signed ICA sources of residual rows through the SAELens SAE: ``f[:, :k] − f[:, k:]``
        with ``f = sae.encode(r)``, which equals ``(r − mean) @ unmixing.T``.

        Args:
            r: float[m, d_model] residual rows x − SAE(x) (array or tensor), activation units.
        Returns:
            float32[m, k] sources (unit variance over the run's analysed tokens).
        Raises:
            DarkMatterError: ``r`` is not [m, d_model].
        """
        t = self._rows(r, "the residual")
        out = np.empty((t.shape[0], self.k), dtype=np.float32)
        for s in range(0, t.shape[0], chunk_size):
            f = self.sae.encode(t[s:s + chunk_size])
            out[s:s + chunk_size] = (f[:, :self.k] - f[:, self.k:]).cpu().numpy()
        return out

    @torch.no_grad()
    def residual_sources(self, x: Any, sae: Any, chunk_size: int = 16384) -> np.ndarray:
        """Signed ICA sources of activations ``x``: the sources of ``x − sae.decode(sae.encode(x))``.

        Args:
            x: float[m, d_model] activations at the run's hook (array or tensor).
            sae: the run's SAE: a SAELens SAE, or its folder (``outputs/sae``, loaded with
                ``SAE.load_from_disk`` on this SAE's device).
        Returns:
            float32[m, k] sources.
        Raises:
            DarkMatterError: ``x`` is not [m, d_model]; ``sae`` is a folder without an SAE or reads
                another width.
        """
        if isinstance(sae, (str, Path)):
            from darkmatter.sources.saes import load_sae

            sae = load_sae(str(self.sae.W_enc.device), path=sae, missing_fix="pass the run's sae/ folder")
        if int(sae.cfg.d_in) != self.d_model:
            raise DarkMatterError(f"the SAE reads d_in={sae.cfg.d_in} but this ICA SAE is {self.d_model} wide: "
                                  "pass the SAE of the run the ICA SAE was exported from")
        t = self._rows(x, "the activations").to(sae.W_dec.device)
        out = np.empty((t.shape[0], self.k), dtype=np.float32)
        for s in range(0, t.shape[0], chunk_size):
            xs = t[s:s + chunk_size]
            out[s:s + chunk_size] = self.sources(xs - sae.decode(sae.encode(xs)), chunk_size)
        return out

    @torch.no_grad()
    def reconstruct(self, r: Any) -> np.ndarray:
        """float32[m, d_model]: ``sae.decode(sae.encode(r))`` = s @ mixing.T + mean."""
        t = self._rows(r, "the residual")
        return self.sae.decode(self.sae.encode(t)).cpu().numpy()


def load_ica_sae(folder: str | Path, device: str = "cpu") -> ICASAE:
    """Load an ICA SAE written by :func:`save_ica_sae` (``SAE.load_from_disk``) and check its layout.

    Raises:
        DarkMatterError: no SAELens SAE in ``folder`` (the message names how to write one), or one
            that is not an ICA SAE (not ``"standard"``, odd d_sae, or weights not mirrored).
    """
    from darkmatter.sources.saes import load_sae

    folder = Path(folder)
    sae = load_sae(device, path=folder, missing_fix="write it with darkmatter.sources.ica_sae.save_ica_sae from a "
                                                    "run's ica_unmixing.npy, ica_mixing.npy and residual_mean.npy")
    d_sae, k = int(sae.cfg.d_sae), int(sae.cfg.d_sae) // 2
    W_enc, W_dec = sae.W_enc.detach(), sae.W_dec.detach()
    ok = (sae.cfg.architecture() == "standard" and d_sae % 2 == 0 and sae.cfg.apply_b_dec_to_input
          and sae.cfg.normalize_activations == "none" and torch.equal(W_enc[:, k:], -W_enc[:, :k])
          and torch.equal(W_dec[k:], -W_dec[:k]) and not sae.b_enc.detach().any())
    if not ok:
        raise DarkMatterError(f"{folder} holds a SAELens SAE but not an ICA SAE (mirrored standard SAE with "
                              "d_sae = 2k): write one with darkmatter.sources.ica_sae.save_ica_sae")
    return ICASAE(sae)

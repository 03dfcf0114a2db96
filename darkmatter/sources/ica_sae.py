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

The SAE's input is the *residual* of the run's SAE (the base SAE), not the activations at
``metadata.hook_name``: ``hook_name`` names the hook the residual is computed at, and the metadata says
so plainly (``input``, ``input_warning``, ``base_sae_release``/``base_sae_id`` or ``base_sae_path``,
absolute, and ``base_sae_path_from_export``, relative to the exported folder). A generic SAELens tool
reads only ``hook_name`` and would feed x; :class:`ICASAE` refuses rows whose RMS norm is that of the
activations rather than the residual (``residual_rms_norm`` / ``activation_rms_norm``, measured over the
run's analysed tokens at export), and recovers signed sources from residuals (:meth:`ICASAE.sources`)
or from activations through the base SAE (:meth:`ICASAE.residual_sources`, :meth:`ICASAE.residual`).
In a ``HookedSAETransformer`` with the base SAE attached at ``hook_name`` and ``use_error_term=True``,
the residual is the SAE's ``hook_sae_error`` (``metadata.residual_hook_name``).
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

> **Input warning.** This SAE reads the residual r = x - base_sae(x) of the base SAE {base_sae}
> at hook `{hook_name}`, **not** the activations x at that hook (the hook SAELens's `hook_name` names).
> A tool that feeds it x gets meaningless features without an error. Compute the residual first:
> `darkmatter.sources.ica_sae.load_ica_sae("{path}").residual(x)` (it loads the base SAE), or
> `x - base_sae.decode(base_sae.encode(x))`.

This folder is a SAELens SAE (`cfg.json` + `sae_weights.safetensors`, architecture "standard"):
`sae_lens.SAE.load_from_disk("{path}")` loads it.

* Input: the residual r = x - base_sae(x) of the base SAE ({base_sae}) at hook `{hook_name}`. With
  that SAE attached to a HookedSAETransformer and `use_error_term=True`, r is the hook
  `{hook_name}.hook_sae_error`. Over the run's analysed tokens r has RMS norm {residual_rms}, x {activation_rms}.
* Features: d_sae = 2k = {d_sae} for k = {k} ICA components. Feature i < k is ReLU(s_i) and feature
  k + i is ReLU(-s_i), where s = (r - mean) @ unmixing.T are the ICA sources (unit variance over
  the analysed tokens, signed to positive skew, ordered by descending excess kurtosis).
* Signed sources: `f = sae.encode(r); s = f[:, :k] - f[:, k:]`.
* Reconstruction: `sae.decode(sae.encode(r)) = s @ mixing.T + mean`, the k-component
  reconstruction of r; decoder row i (= -row k + i) is what source i writes.
* In Python: `darkmatter.sources.ica_sae.load_ica_sae("{path}").sources(r)` (refuses rows whose norm
  is that of x; `check_input=False` turns the check off), or `.residual_sources(x)` from activations x
  through the base SAE.
"""

#: What ``metadata.input`` says: the SAE reads the base SAE's residual, not the activations at hook_name.
INPUT = "residual x - base_sae(x)"


class ResidualExpected(DarkMatterError, ValueError):
    """Rows given to an ICA SAE look like the activations x, not the residual x − base_sae(x)."""


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


def ica_sae_metadata(run_meta: dict[str, Any], base_sae: str | None = None, hook_name: str | None = None, *,
                     base_sae_release: str | None = None, base_sae_id: str | None = None,
                     base_sae_path: str | Path | None = None, residual_rms_norm: float | None = None,
                     activation_rms_norm: float | None = None) -> dict[str, Any]:
    """SAELens metadata for the ICA SAE of a run: ``run_meta`` (the run's model, hook, windows and
    dataset, :func:`darkmatter.sources.saes.run_metadata`), what the input is, the base SAE and the
    norms that tell the residual from the activations.

    Args:
        run_meta: the run's SAELens metadata (``hook_name``, ``dataset_path``, ...).
        base_sae: a name for the base SAE when neither ``base_sae_release`` nor ``base_sae_path`` is
            given (kept as written).
        hook_name: replaces the run's (pass ``setup.json``'s ``hook.hook_name``: the hook the source
            actually read); the hook at which the residual is computed.
        base_sae_release, base_sae_id: the base SAE as a SAELens pretrained release and id.
        base_sae_path: the base SAE's folder (a locally trained SAE); stored absolute.
        residual_rms_norm, activation_rms_norm: sqrt(mean ‖row‖²) of the residual and of the
            activations over the run's analysed tokens (:func:`rms_norm`), activation units; with
            both, :class:`ICASAE` refuses activations given in place of residuals.
    Returns:
        The metadata dict (JSON-serialisable): ``input`` and ``input_warning`` say that the SAE reads
        x − base_sae(x); ``base_sae`` is ``release/id`` or the absolute path.
    Raises:
        DarkMatterError: ``run_meta`` has no ``hook_name``; ``base_sae_release`` without ``base_sae_id``.
    """
    if not run_meta.get("hook_name") and not hook_name:
        raise DarkMatterError("the run's metadata has no hook_name: pass run_metadata() of config.json")
    if (base_sae_release is None) != (base_sae_id is None):
        raise DarkMatterError("pass both `base_sae_release` and `base_sae_id` (a SAELens pretrained SAE), or neither")
    meta = {**run_meta, "hook_name": hook_name or run_meta["hook_name"]}
    path = str(Path(base_sae_path).resolve()) if base_sae_path is not None else None
    name = f"{base_sae_release}/{base_sae_id}" if base_sae_release is not None else path or base_sae
    hook = meta["hook_name"]
    return {**meta, "input": INPUT, "residual_hook_name": f"{hook}.hook_sae_error", "base_sae": name,
            "base_sae_release": base_sae_release, "base_sae_id": base_sae_id, "base_sae_path": path,
            "input_warning": f"this SAE reads the residual x - base_sae(x) of the base SAE {name or '(unnamed)'} "
                             f"at hook {hook}, NOT the activations x at {hook}: compute the residual first "
                             "(darkmatter.sources.ica_sae.load_ica_sae(folder).residual(x))",
            "residual_rms_norm": residual_rms_norm, "activation_rms_norm": activation_rms_norm}


def rms_norm(rows: Any, chunk_size: int = 16384) -> float:
    """sqrt(mean over rows of ‖row‖²), streamed in chunks and accumulated in float64.

    Args:
        rows: float[n, d_model] (array or memmap), activation units.
    Returns:
        The RMS row norm (NaN for no rows).
    """
    n, total = len(rows), 0.0
    for s in range(0, n, chunk_size):
        chunk = np.asarray(rows[s:s + chunk_size], dtype=np.float64)
        total += float(np.einsum("ij,ij->", chunk, chunk))
    return float(np.sqrt(total / n)) if n else float("nan")


def save_ica_sae(folder: str | Path, unmixing: Any, mixing: Any, mean: Any, metadata: dict[str, Any],
                 final: str | Path | None = None) -> None:
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
        final: where the folder will live for its users when ``folder`` is a staging folder (the
            output store's transaction renames it there), as they would type it (e.g.
            ``outputs/ica_sae``); default ``folder``. The README's load lines name it, and a
            ``base_sae_path`` in ``metadata`` gets ``base_sae_path_from_export``, relative to it.

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
    final = Path(final) if final is not None else folder
    if metadata.get("base_sae_path"):
        cfg["metadata"]["base_sae_path_from_export"] = os.path.relpath(Path(metadata["base_sae_path"]).resolve(),
                                                                       final.resolve())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp", dir=folder.parent))
    try:
        save_file(weights, str(tmp / "sae_weights.safetensors"))
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
        norm = lambda v: "(not measured)" if v is None else f"{v:.4g}"  # noqa: E731
        (tmp / "README.md").write_text(README.format(
            path=final.as_posix(), base_sae=metadata.get("base_sae") or "(the run's SAE)",
            hook_name=metadata.get("hook_name") or "hook_name", d_sae=d_sae, k=k,
            residual_rms=norm(metadata.get("residual_rms_norm")),
            activation_rms=norm(metadata.get("activation_rms_norm"))))
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
            model, hook, windows, dataset, base SAE and the residual's and activations' RMS norms.
        k: number of ICA components; d_model: residual width.
        folder: where it was loaded from (finds a base SAE stored relative to it), or None.
        check_input: refuse rows that look like activations rather than residuals (see :meth:`check`).
    """

    def __init__(self, sae: Any, folder: str | Path | None = None, check_input: bool = True):
        self.sae = sae
        self.d_model, self.k = int(sae.cfg.d_in), int(sae.cfg.d_sae) // 2
        self.folder = Path(folder) if folder is not None else None
        self.check_input = check_input

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

    def check(self, r: torch.Tensor) -> None:
        """Refuse activations given in place of residuals: the batch's RMS row norm
        sqrt(mean ‖row‖²) is nearer (geometrically) to the activations' than to the residual's, as
        measured over the run's analysed tokens at export. Nothing is checked when the metadata has
        no norms, when they are less than 1.5× apart (the two cannot be told apart) or for an empty batch.

        Args:
            r: float32[m, d_model] rows.
        Raises:
            ResidualExpected: (a ``DarkMatterError`` and a ``ValueError``) the rows look like activations.
        """
        meta = self.sae.cfg.metadata
        res, act = meta.get("residual_rms_norm"), meta.get("activation_rms_norm")
        if res is None or act is None or not act > 1.5 * res or r.shape[0] == 0:
            return
        batch = float(torch.sqrt((r.double() ** 2).sum(dim=1).mean()))
        if batch > float(np.sqrt(res * act)):
            raise ResidualExpected(
                f"this SAE reads x - base_sae(x), the residual of the base SAE {meta.get('base_sae')} at "
                f"{meta.get('hook_name')}, but the rows given have RMS norm {batch:.4g}, like the activations x "
                f"({act:.4g}) rather than the residual ({res:.4g}): compute the residual first "
                "(ICASAE.residual(x), or .residual_sources(x) for the sources), or pass check_input=False")

    @torch.no_grad()
    def encode(self, r: Any, check_input: bool | None = None) -> np.ndarray:
        """The SAELens features ``sae.encode(r)`` of residual rows, checked first (:meth:`check`).

        Args:
            r: float[m, d_model] residual rows x − base_sae(x).
            check_input: overrides ``self.check_input`` for this call.
        Returns:
            float32[m, 2k]: feature i < k is ReLU(s_i), feature k + i is ReLU(−s_i).
        Raises:
            DarkMatterError: ``r`` is not [m, d_model]; ResidualExpected: ``r`` looks like activations.
        """
        t = self._rows(r, "the residual")
        if self.check_input if check_input is None else check_input:
            self.check(t)
        return self.sae.encode(t).cpu().numpy()

    @torch.no_grad()
    def sources(self, r: Any, chunk_size: int = 16384, check_input: bool | None = None) -> np.ndarray:
        """Signed ICA sources of residual rows through the SAELens SAE: ``f[:, :k] − f[:, k:]``
        with ``f = sae.encode(r)``, which equals ``(r − mean) @ unmixing.T``.

        Args:
            r: float[m, d_model] residual rows x − base_sae(x) (array or tensor), activation units.
            check_input: overrides ``self.check_input`` for this call (:meth:`check` on all of ``r``).
        Returns:
            float32[m, k] sources (unit variance over the run's analysed tokens).
        Raises:
            DarkMatterError: ``r`` is not [m, d_model].
            ResidualExpected: ``r`` looks like the activations x (compute :meth:`residual` first).
        """
        t = self._rows(r, "the residual")
        if self.check_input if check_input is None else check_input:
            self.check(t)
        out = np.empty((t.shape[0], self.k), dtype=np.float32)
        for s in range(0, t.shape[0], chunk_size):
            f = self.sae.encode(t[s:s + chunk_size])
            out[s:s + chunk_size] = (f[:, :self.k] - f[:, self.k:]).cpu().numpy()
        return out

    def base_sae(self) -> Any:
        """The base SAE named in the metadata, loaded on this SAE's device: the SAELens pretrained
        ``base_sae_release``/``base_sae_id`` (from the hub or its cache), else the folder
        ``base_sae_path``, else ``base_sae_path_from_export`` beside this SAE's folder.

        Raises:
            DarkMatterError: the metadata names no loadable base SAE (pass the SAE yourself), or
                loading fails (hub unreachable, no SAE at the path).
        """
        from darkmatter.sources.saes import load_sae

        meta, device = self.sae.cfg.metadata, str(self.sae.W_enc.device)
        fix = "pass the base SAE (a SAELens SAE or its folder) as `sae`"
        if meta.get("base_sae_release") and meta.get("base_sae_id"):
            return load_sae(device, release=meta["base_sae_release"], sae_id=meta["base_sae_id"])
        for path in (meta.get("base_sae_path"),
                     self.folder / meta["base_sae_path_from_export"]
                     if self.folder is not None and meta.get("base_sae_path_from_export") else None):
            if path and (Path(path) / "cfg.json").is_file():
                return load_sae(device, path=path, missing_fix=fix)
        raise DarkMatterError(f"cannot find the base SAE {meta.get('base_sae')} of this ICA SAE: {fix}")

    def _base(self, sae: Any) -> Any:
        if sae is None:
            sae = self.base_sae()
        elif isinstance(sae, (str, Path)):
            from darkmatter.sources.saes import load_sae

            sae = load_sae(str(self.sae.W_enc.device), path=sae, missing_fix="pass the run's sae/ folder")
        if int(sae.cfg.d_in) != self.d_model:
            raise DarkMatterError(f"the SAE reads d_in={sae.cfg.d_in} but this ICA SAE is {self.d_model} wide: "
                                  "pass the SAE of the run the ICA SAE was exported from")
        return sae

    @torch.no_grad()
    def residual(self, x: Any, sae: Any = None, chunk_size: int = 16384) -> np.ndarray:
        """The residual this SAE reads: ``x − sae.decode(sae.encode(x))``.

        Args:
            x: float[m, d_model] activations at ``metadata.hook_name`` (array or tensor).
            sae: the base SAE: a SAELens SAE, its folder, or None for the one the metadata names
                (:meth:`base_sae`).
        Returns:
            float32[m, d_model] residual rows.
        Raises:
            DarkMatterError: ``x`` is not [m, d_model]; no base SAE can be loaded, or it reads another width.
        """
        base = self._base(sae)
        t = self._rows(x, "the activations").to(base.W_dec.device)
        out = np.empty((t.shape[0], self.d_model), dtype=np.float32)
        for s in range(0, t.shape[0], chunk_size):
            xs = t[s:s + chunk_size]
            out[s:s + chunk_size] = (xs - base.decode(base.encode(xs))).cpu().numpy()
        return out

    @torch.no_grad()
    def residual_sources(self, x: Any, sae: Any = None, chunk_size: int = 16384) -> np.ndarray:
        """Signed ICA sources of activations ``x``: the sources of ``x − sae.decode(sae.encode(x))``.

        Args:
            x: float[m, d_model] activations at the run's hook (array or tensor).
            sae: the base SAE: a SAELens SAE, its folder (``outputs/sae``, loaded with
                ``SAE.load_from_disk`` on this SAE's device), or None for the one the metadata names.
        Returns:
            float32[m, k] sources.
        Raises:
            DarkMatterError: ``x`` is not [m, d_model]; ``sae`` is a folder without an SAE, cannot be
                found, or reads another width.
        """
        base = self._base(sae)
        return self.sources(self.residual(x, base, chunk_size), chunk_size, check_input=False)

    @torch.no_grad()
    def reconstruct(self, r: Any, check_input: bool | None = None) -> np.ndarray:
        """float32[m, d_model]: ``sae.decode(sae.encode(r))`` = s @ mixing.T + mean of residual rows
        ``r`` [m, d_model]. Raises as :meth:`encode`."""
        t = self._rows(r, "the residual")
        if self.check_input if check_input is None else check_input:
            self.check(t)
        return self.sae.decode(self.sae.encode(t)).cpu().numpy()


def load_ica_sae(folder: str | Path, device: str = "cpu", check_input: bool = True) -> ICASAE:
    """Load an ICA SAE written by :func:`save_ica_sae` (``SAE.load_from_disk``) and check its layout.

    Args:
        folder: the exported folder (e.g. ``outputs/ica_sae``).
        check_input: refuse activations given in place of residuals (:meth:`ICASAE.check`); False
            turns the check off.
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
    return ICASAE(sae, folder, check_input)

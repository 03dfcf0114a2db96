"""Amplitude error: how much of the residual lies along the decoder rows of the latents that fired.

An SAE's residual r = x − x̂ has two kinds of content. *Missing directions*: structure no latent
writes, which ICA looks for. *Amplitude error*: the latents that fired point the right way but
write the wrong amount, e.g. the shrinkage an L1 penalty causes (Wright & Sharkey 2024, "Addressing
feature suppression in SAEs"; Rajamanoharan et al. 2024, "Improving dictionary learning with gated
SAEs"). Amplitude error lies in the span of the active latents' decoder rows, so per token it is
measured by

* the share of ‖r‖² inside span{W_dec[j] : f_j > 0} (against the same count of decoder rows of
  latents that did *not* fire, a null that keeps the dictionary's geometry);
* the per-latent relative amplitude error (r · u_j) / (f_j ‖W_dec[j]‖), u_j the unit decoder row:
  positive = the SAE wrote too little along that latent (shrinkage);
* the FVU after refitting the active latents' amplitudes by least squares (x − b_dec ≈ Σ_j a_j
  W_dec[j] over the active j): what the residual would be if only amplitudes were wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Amplitude:
    """amplitude.json (step 03): the residual along the active latents' decoder rows.

    Attributes:
        n_rows: tokens measured (a seeded random subsample); mean_active: mean L0 over them.
        share_in_active_span: Σ‖P_A r‖² / Σ‖r‖², P_A the projection on the active latents' decoder rows.
        share_in_null_span: the same for as many decoder rows of latents that did not fire (the null).
        relative_error_median, relative_error_mean: of (r · u_j) / (f_j ‖W_dec[j]‖) over active pairs;
        share_shrunk: share of active pairs where it is positive (the SAE wrote too little).
        fvu, fvu_refit: FVU of the SAE on these rows, and after refitting the active amplitudes.
        amplitude_share: (fvu − fvu_refit) / fvu, the share of the residual's energy that is amplitude error.
        null: the null in words.
    """

    n_rows: int
    mean_active: float
    share_in_active_span: float
    share_in_null_span: float
    relative_error_median: float
    relative_error_mean: float
    share_shrunk: float
    fvu: float
    fvu_refit: float
    amplitude_share: float
    null: str


NULL = "the span of as many decoder rows of latents that did not fire on the token (drawn at random)"


def _project_share(r: torch.Tensor, D: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖P r‖² per row, least-squares coefficients) for rows r: [m, d] on the masked rows of D: [m, L, d]."""
    D = D * mask[..., None]
    G = D @ D.transpose(1, 2) + torch.diag_embed((~mask).double())  # padded rows: identity, coefficient 0
    b = (D @ r[..., None])[..., 0]
    coef = torch.linalg.solve(G, b[..., None])[..., 0] * mask
    return (coef * b).sum(1), coef


@torch.no_grad()
def measure(x: np.ndarray, encode: Callable[[torch.Tensor], torch.Tensor], W_dec: np.ndarray, b_dec: np.ndarray,
            decode: Callable[[torch.Tensor], torch.Tensor], seed: int, chunk: int = 1024) -> Amplitude:
    """The amplitude error of an SAE on activation rows (see the module docstring).

    Args:
        x: float[m, d_model] activation rows (a subsample; its residual is recomputed here).
        encode: x → f, float32[b, d_sae] feature activations; decode: f → x̂.
        W_dec: float[d_sae, d_model] decoder rows; b_dec: float[d_model] the decoder bias.
        seed: the null's draws.
    Returns:
        Amplitude.
    """
    Wd = torch.as_tensor(np.asarray(W_dec), dtype=torch.float64)
    norms = Wd.norm(dim=1).clamp_min(1e-12)
    bd = torch.as_tensor(np.asarray(b_dec), dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    tot = span = null = err = err_refit = var = 0.0
    rel: list[np.ndarray] = []
    active = 0
    mean_x = torch.as_tensor(np.asarray(x, dtype=np.float64).mean(0))
    for s in range(0, len(x), chunk):
        xb = torch.as_tensor(np.asarray(x[s:s + chunk], dtype=np.float32))
        f = encode(xb).double()
        r = xb.double() - decode(f.float()).double()
        on = f > 0
        L = max(int(on.sum(1).max()), 1)
        vals, idx = torch.topk(f, L, dim=1)
        mask = vals > 0
        active += int(mask.sum())
        D = Wd[idx]  # [b, L, d]
        p_span, _ = _project_share(r, D, mask)
        # null: as many rows of latents that did not fire, at random
        scores = torch.rand(f.shape, generator=gen, dtype=torch.float64).masked_fill(on, -1.0)
        null_idx = torch.topk(scores, L, dim=1).indices
        p_null, _ = _project_share(r, Wd[null_idx], mask)
        u = D / norms[idx][..., None]
        e = (u @ r[..., None])[..., 0]
        rel.append((e / (vals.double() * norms[idx]))[mask].numpy())
        _, coef = _project_share(xb.double() - bd, D, mask)
        refit = bd + (coef[..., None] * D).sum(1)
        tot += float((r * r).sum())
        span += float(p_span.sum())
        null += float(p_null.sum())
        err += float((r * r).sum())
        err_refit += float(((xb.double() - refit) ** 2).sum())
        var += float(((xb.double() - mean_x) ** 2).sum())
    ratios = np.concatenate(rel) if rel else np.zeros(0)
    fvu, fvu_refit = err / max(var, 1e-300), err_refit / max(var, 1e-300)
    return Amplitude(n_rows=len(x), mean_active=active / max(len(x), 1), share_in_active_span=span / max(tot, 1e-300),
                     share_in_null_span=null / max(tot, 1e-300),
                     relative_error_median=float(np.median(ratios)) if len(ratios) else float("nan"),
                     relative_error_mean=float(np.mean(ratios)) if len(ratios) else float("nan"),
                     share_shrunk=float(np.mean(ratios > 0)) if len(ratios) else float("nan"), fvu=fvu,
                     fvu_refit=fvu_refit, amplitude_share=(fvu - fvu_refit) / max(fvu, 1e-300), null=NULL)

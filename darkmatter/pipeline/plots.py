"""The pipeline's figures (matplotlib, Agg). Each function returns a Figure; the store saves it at 150 DPI."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from darkmatter.analysis.directions import ICA  # noqa: E402

GAUSSIAN_KURTOSIS = 3.0


def _log_kurtosis_bins(*arrays: np.ndarray, n: int = 50) -> np.ndarray:
    values = np.concatenate([a + GAUSSIAN_KURTOSIS for a in arrays])
    lo = max(min(values.min(), GAUSSIAN_KURTOSIS) * 0.9, 1.0)
    hi = max(values.max(), GAUSSIAN_KURTOSIS) * 1.1
    return np.geomspace(lo, hi, n)


def _share(values: np.ndarray) -> np.ndarray:
    """Histogram weights that make each set's bars sum to 1 (sets of very different sizes)."""
    return np.full(len(values), 1.0 / max(len(values), 1))


def _mark_gaussian(ax, se: float) -> None:
    ax.axvline(GAUSSIAN_KURTOSIS, color="black", ls="--", lw=1, label="Gaussian (3)")
    ax.axvspan(GAUSSIAN_KURTOSIS - 2 * se, GAUSSIAN_KURTOSIS + 2 * se, color="grey", alpha=0.3,
               label=f"±2 s.e. at this n ({2 * se:.3f})")


def residual_kurtosis(resid_kurt: np.ndarray, act_kurt: np.ndarray, se: float, title: str,
                      noise_floor: float | None = None) -> Figure:
    """Per-dimension kurtosis of the SAE residual and of the activations (log x-axis); with
    ``noise_floor`` (the largest |excess kurtosis| of a Gaussian surrogate), a band marks it."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = _log_kurtosis_bins(resid_kurt, act_kurt)
    left.hist(act_kurt + 3, bins=bins, alpha=0.6, label=f"activations (median {np.median(act_kurt):.2f})")
    left.hist(resid_kurt + 3, bins=bins, alpha=0.6, label=f"residual x − x̂ (median {np.median(resid_kurt):.2f})")
    _mark_gaussian(left, se)
    left.set_xscale("log")
    left.set_xlabel("kurtosis per d_model dimension (log scale; excess = value − 3)")
    left.set_ylabel("dimensions")
    left.set_title("Per-dimension kurtosis")
    left.legend(fontsize=8)
    for values, label in ((act_kurt, "activations"), (resid_kurt, "residual x − x̂")):
        right.plot(np.sort(values)[::-1] + 3, label=label)
    right.axhline(GAUSSIAN_KURTOSIS, color="black", ls="--", lw=1, label="Gaussian (3)")
    if noise_floor is not None:
        right.axhspan(max(GAUSSIAN_KURTOSIS - noise_floor, 1e-2), GAUSSIAN_KURTOSIS + noise_floor,
                      color="grey", alpha=0.3, label=f"Gaussian surrogate range (±{noise_floor:.2f})")
    right.set_yscale("log")
    right.set_xlabel("dimension rank")
    right.set_ylabel("kurtosis (log scale)")
    right.set_title("Sorted")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def residual_pca(resid_eigs: np.ndarray, act_eigs: np.ndarray, marks: dict[float, int],
                 title: str) -> Figure:
    """Scree plot and cumulative explained variance of the residual (activations for reference)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for eigs, label in ((act_eigs, "activations"), (resid_eigs, "residual x − x̂")):
        ranks = np.arange(1, len(eigs) + 1)
        left.plot(ranks, eigs / eigs.sum(), label=label)
        right.plot(ranks, np.cumsum(eigs) / eigs.sum(), label=label)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("principal component")
    left.set_ylabel("fraction of variance")
    left.set_title("Scree (full spectrum)")
    left.legend(fontsize=8)
    for frac, n in marks.items():
        right.axhline(frac, color="grey", ls=":", lw=1)
        right.axvline(n, color="grey", ls=":", lw=1)
    right.text(0.03, 0.97, "residual components needed\n" + "\n".join(
        f"{frac:.0%} of variance: {n}" for frac, n in marks.items()), transform=right.transAxes,
        va="top", fontsize=9, bbox={"facecolor": "white", "edgecolor": "grey", "alpha": 0.9})
    right.set_xscale("log")
    right.set_xlabel("components kept")
    right.set_ylabel("cumulative fraction of variance")
    right.set_title("Cumulative explained variance")
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def similarity_histograms(sets: dict[str, np.ndarray], title: str,
                          xlabel: str = "max |cos| to any SAE decoder row (W_dec)",
                          marks: tuple[float, float] = (0.3, 0.8), ylabel: str = "count") -> Figure:
    """Histograms of |cos| values in [0, 1], one panel per set, with ``marks`` drawn and counted
    (by default: max |cos| of directions to any SAE decoder row, 0.3/0.8 marked)."""
    lo, hi = marks
    fig, axes = plt.subplots(len(sets), 1, figsize=(8, 2.4 * len(sets)), sharex=True)
    bins = np.linspace(0, 1, 41)
    for ax, (label, values) in zip(np.atleast_1d(axes), sets.items()):
        ax.hist(values, bins=bins, color="tab:blue" if label.startswith(ICA) else "tab:grey")
        for x in marks:
            ax.axvline(x, color="black", ls="--", lw=1)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{label}: mean {values.mean():.3f}, "
                     f"<{lo}: {(values < lo).sum()}, >{hi}: {(values > hi).sum()} of {len(values)}",
                     fontsize=10)
    np.atleast_1d(axes)[-1].set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def kurtosis_vs_sae(ica_kurt: np.ndarray, sae_kurt: np.ndarray, ica_tail: np.ndarray,
                    sae_freq: np.ndarray, gauss_tail: float, se: float, title: str,
                    control_kurt_max: float | None = None) -> Figure:
    """Excess kurtosis and sparsity of ICA sources against SAE feature activations; with
    ``control_kurt_max`` (largest excess kurtosis of ICA sources on a Gaussian surrogate), a
    line marks that noise floor."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = _log_kurtosis_bins(ica_kurt, sae_kurt)
    left.hist(sae_kurt + 3, bins=bins, weights=_share(sae_kurt), alpha=0.6,
              label=f"SAE features (n={len(sae_kurt)}, median excess {np.median(sae_kurt):.1f})")
    left.hist(ica_kurt + 3, bins=bins, weights=_share(ica_kurt), alpha=0.6,
              label=f"ICA sources (n={len(ica_kurt)}, median excess {np.median(ica_kurt):.2f})")
    _mark_gaussian(left, se)
    if control_kurt_max is not None:
        left.axvline(GAUSSIAN_KURTOSIS + control_kurt_max, color="red", ls=":", lw=1.5,
                     label=f"ICA on a Gaussian surrogate: max excess {control_kurt_max:.2f}")
    left.set_xscale("log")
    left.set_xlabel("kurtosis over all tokens (log scale; excess = value − 3)")
    left.set_ylabel("fraction of each set")
    left.set_title("Heavy tails")
    left.legend(fontsize=8)
    fbins = np.geomspace(max(min(sae_freq.min(), ica_tail.min(), gauss_tail) * 0.8, 1e-7), 1.0, 40)
    right.hist(sae_freq, bins=fbins, weights=_share(sae_freq), alpha=0.6, label="SAE: firing frequency")
    right.hist(np.maximum(ica_tail, fbins[0]), bins=fbins, weights=_share(ica_tail), alpha=0.6,
               label="ICA: fraction of tokens with |s| > 3σ")
    right.axvline(gauss_tail, color="black", ls="--", lw=1, label=f"Gaussian |s| > 3σ ({gauss_tail:.4f})")
    right.set_xscale("log")
    right.set_xlabel("fraction of tokens (log scale)")
    right.set_ylabel("fraction of each set")
    right.set_title("Sparsity")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig

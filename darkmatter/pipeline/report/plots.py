"""The pipeline's figures (matplotlib, Agg). Each function returns a Figure; the store saves it at 150 DPI."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from darkmatter.analysis.directions import ICA  # noqa: E402


def _share(values: np.ndarray) -> np.ndarray:
    """Histogram weights that make each set's bars sum to 1 (sets of very different sizes)."""
    return np.full(len(values), 1.0 / max(len(values), 1))


#: Linear range of the symlog excess-kurtosis axes: wide enough that a ±2 s.e. band is visible.
LINTHRESH = 0.1


def _symlog_edges(*arrays: np.ndarray, n: int = 40) -> np.ndarray:
    """Histogram edges for excess kurtosis on a symlog axis (negative values included)."""
    lim = max(max(float(np.abs(a).max()) for a in arrays) * 1.2, 1.0)
    pos = np.geomspace(LINTHRESH / 10, lim, n)
    return np.concatenate([-pos[::-1], [0.0], pos])


def _mark_gaussian(ax, se: float, vertical: bool = True) -> None:
    line, span = (ax.axvline, ax.axvspan) if vertical else (ax.axhline, ax.axhspan)
    line(0.0, color="black", ls="--", lw=1, label="Gaussian (0)")
    span(-2 * se, 2 * se, color="tab:green", alpha=0.35,
         label=f"±2 s.e. at the effective sample size ({2 * se:.3f})")


def residual_kurtosis(resid_kurt: np.ndarray, act_kurt: np.ndarray, se: float, title: str,
                      noise_floor: float | None = None) -> Figure:
    """Per-dimension excess kurtosis of the SAE residual and of the activations (symlog axes), with
    the Gaussian band (±2 s.e. at the effective sample size) and, with ``noise_floor`` (the largest
    |excess kurtosis| of a Gaussian surrogate), the surrogate's range."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    edges = _symlog_edges(resid_kurt, act_kurt)
    left.hist(act_kurt, bins=edges, alpha=0.6, label=f"activations (median {np.median(act_kurt):.2f})")
    left.hist(resid_kurt, bins=edges, alpha=0.6, label=f"residual x − x̂ (median {np.median(resid_kurt):.2f})")
    _mark_gaussian(left, se)
    left.set_xscale("symlog", linthresh=LINTHRESH)
    both = np.concatenate([resid_kurt, act_kurt])
    left.set_xlim(min(float(both.min()) * 1.5, -LINTHRESH), max(float(both.max()) * 1.5, 1.0))
    left.set_xlabel("excess kurtosis per d_model dimension (symlog)")
    left.set_ylabel("dimensions")
    left.set_title("Per-dimension excess kurtosis")
    left.legend(fontsize=8)
    for values, label in ((act_kurt, "activations"), (resid_kurt, "residual x − x̂")):
        right.plot(np.sort(values)[::-1], label=label)
    _mark_gaussian(right, se, vertical=False)
    if noise_floor is not None:
        right.axhspan(-noise_floor, noise_floor, color="grey", alpha=0.3,
                      label=f"Gaussian surrogate range (±{noise_floor:.3f})")
    right.set_yscale("symlog", linthresh=LINTHRESH)
    right.set_xlabel("dimension rank")
    right.set_ylabel("excess kurtosis (symlog)")
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


def similarity_vs_null(raw: np.ndarray, projected: np.ndarray, null_raw: np.ndarray, null_projected: np.ndarray,
                       stable: np.ndarray, candidate: np.ndarray, others: dict[str, np.ndarray], title: str,
                       marks: tuple[float, float]) -> Figure:
    """Max |cos| of the ICA components to the SAE decoder rows, raw (left) and projected into the
    whitened subspace (right), stacked by class (candidate / stable / other), over the matched
    null's pooled distribution scaled to k (outline) with its 99th percentile; below, the other
    baselines against the raw rows.

    Args:
        raw, projected: float[k]; null_raw, null_projected: float[k × draws];
        stable, candidate: bool[k]; others: {label: float[k]}.
    """
    k = len(raw)
    rows = 1 + len(others)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.8 + 2.2 * len(others)), squeeze=False,
                             gridspec_kw={"height_ratios": [1.6] + [1] * len(others)})
    bins = np.linspace(0, 1, 41)
    groups = [("candidate", candidate, "tab:red"), ("stable, not candidate", stable & ~candidate, "tab:blue"),
              ("other", ~stable & ~candidate, "lightsteelblue")]
    panels = ((axes[0, 0], raw, null_raw, "raw decoder rows"),
              (axes[0, 1], projected, null_projected, "decoder rows projected into the subspace"))
    for ax, values, null, sense in panels:
        ax.hist([values[m] for _, m, _ in groups], bins=bins, stacked=True, color=[c for *_, c in groups],
                label=[f"ICA {name} ({int(m.sum())})" for name, m, _ in groups])
        ax.hist(null, bins=bins, weights=np.full(len(null), k / max(len(null), 1)), histtype="step", color="black",
                lw=1.5, label="matched null (random rotations), scaled to k")
        p99 = float(np.quantile(null, 0.99))
        ax.axvline(p99, color="black", ls=":", lw=1.2, label=f"null 99th percentile ({p99:.2f})")
        for x in marks:
            ax.axvline(x, color="grey", ls="--", lw=1)
        ax.set_title(f"ICA vs {sense}: above null p99 {(values > p99).mean():.0%}", fontsize=10)
        ax.set_xlabel("max |cos| to any SAE decoder row")
        ax.set_ylabel("components")
        ax.legend(fontsize=7, loc="upper right")
    for row, (label, values) in enumerate(others.items(), start=1):
        ax = axes[row, 0]
        ax.hist(values, bins=bins, color="tab:grey")
        for x in marks:
            ax.axvline(x, color="grey", ls="--", lw=1)
        ax.set_title(f"{label}: mean {values.mean():.3f}", fontsize=9)
        ax.set_xlabel("max |cos| to any SAE decoder row (raw)")
        ax.set_ylabel("directions")
        axes[row, 1].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def kurtosis_vs_sae(ica_kurt: np.ndarray, control_kurt: np.ndarray | None, sae_kurt: np.ndarray,
                    sae_kurt_active: np.ndarray, sae_freq: np.ndarray, floor: float | None, title: str) -> Figure:
    """Left: excess kurtosis of ICA sources, of the matched control's sources and of SAE features
    conditional on activity (like for like: the distribution of values, not of zeros), on a symlog
    axis, with the noise floor marked. Right: SAE features' excess kurtosis over all tokens against
    their firing rate, beside what the zeros alone give ((1 − 6pq)/(pq)): that figure restates firing
    rates, so it is not put on the left axis."""
    from darkmatter.analysis.tails import bernoulli_excess_kurtosis

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    sets = [("ICA sources", ica_kurt, "tab:blue"), ("SAE features, active tokens only", sae_kurt_active, "tab:orange")]
    if control_kurt is not None and len(control_kurt):
        sets.append(("matched control sources", control_kurt, "tab:grey"))
    edges = _symlog_edges(*(v for _, v, _ in sets))
    for label, v, color in sets:
        left.hist(v, bins=edges, weights=_share(v), histtype="stepfilled", alpha=0.45, color=color,
                  label=f"{label} (n={len(v)}, median {np.median(v):.2f})")
    left.axvline(0, color="black", ls="--", lw=1, label="Gaussian (0)")
    if floor is not None:
        left.axvline(floor, color="red", ls=":", lw=1.8, label=f"noise floor: control's largest ({floor:.3f})")
    left.set_xscale("symlog", linthresh=LINTHRESH)
    allv = np.concatenate([v for _, v, _ in sets])
    left.set_xlim(min(float(allv.min()) * 1.5, -LINTHRESH), max(float(allv.max()) * 1.5, 1.0))
    left.set_xlabel("excess kurtosis (symlog)")
    left.set_ylabel("fraction of each set")
    left.set_title("Heavy tails, like for like")
    left.legend(fontsize=7)
    right.scatter(sae_freq, sae_kurt, s=4, alpha=0.4, color="tab:orange", label="SAE features, all tokens")
    p = np.geomspace(max(sae_freq.min(), 1e-6), min(sae_freq.max(), 0.5), 100)
    right.plot(p, bernoulli_excess_kurtosis(p), color="black", lw=1.2, label="zeros alone: (1 − 6pq)/(pq)")
    right.set_xscale("log")
    right.set_yscale("symlog", linthresh=1.0)
    right.set_ylim(bottom=min(0.0, float(sae_kurt.min())))
    right.set_xlabel("SAE feature firing rate p (log)")
    right.set_ylabel("excess kurtosis over all tokens (symlog)")
    right.set_title("SAE kurtosis with zeros mostly restates the firing rate")
    right.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def completeness(cells: list, limits: list, title: str, note: str) -> Figure:
    """Two panels sharing the y axis: the share of injected features *recovered* (a component at
    |cos| ≥ 0.9) and *kept* (that component is a candidate) against their variance share, one colour
    per firing rate (uniform directions, all documents), the arms (few documents, top PCs, tail) as
    markers at their share, the 90% level and each rate's detection limit.

    Args:
        cells: :class:`~darkmatter.analysis.injection.Cell` rows; limits: :class:`~darkmatter.analysis.injection.Limit`.
        note: the detection-limit sentence, printed under the panels.
    """
    import textwrap

    main = ("all documents", "uniform")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharey=True)
    rates = sorted({c.rate for c in cells if (c.spread, c.kind) == main})
    colors = dict(zip(rates, plt.cm.viridis(np.linspace(0.1, 0.85, max(len(rates), 1)))))
    markers = {("few documents", "uniform"): ("s", "few documents"), ("all documents", "top PCs"): ("^", "top PCs"),
               ("all documents", "tail"): ("v", "low-variance tail")}
    for ax, what, label in ((axes[0], "recovered", "recovered: a component at |cos| ≥ 0.9"),
                            (axes[1], "kept", "kept: that component is a candidate")):
        for i, rate in enumerate(rates):
            row = sorted((c for c in cells if c.rate == rate and (c.spread, c.kind) == main), key=lambda c: c.share)
            offset = 0.012 * (i - (len(rates) - 1) / 2)  # lines at 0 or 1 stay visible side by side
            ax.plot([c.share for c in row], [getattr(c, what) / c.trials + offset for c in row], "o-",
                    color=colors[rate], lw=2, label=f"firing on {rate:.1%} of tokens (all documents, uniform)")
        seen: set[str] = set()
        for c in cells:
            if (c.spread, c.kind) in markers:
                m, name = markers[(c.spread, c.kind)]
                # arms share one variance share: spread them apart by kind (x) and by rate (y)
                nudge = (0.8, 1.0, 1.25)[list(markers).index((c.spread, c.kind))]
                lift = 0.012 * (rates.index(c.rate) - (len(rates) - 1) / 2) if c.rate in rates else 0.0
                ax.scatter([c.share * nudge], [getattr(c, what) / c.trials + lift], marker=m, s=60,
                           color=colors.get(c.rate, "black"), edgecolor="black", zorder=3,
                           label=f"{name} (colour: firing rate)" if name not in seen else None)
                seen.add(name)
        ax.axhline(0.9, color="grey", ls=":", lw=1, label="90%")
        if what == "kept":
            for lim in limits:
                if lim.kept is not None:
                    ax.axvline(lim.kept, color=colors.get(lim.rate, "black"), ls="-.", lw=0.8, alpha=0.7)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("variance share of the residual (log)")
        ax.set_title(label, fontsize=10)
    axes[0].set_ylabel("share of injected features")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(note, 170)), fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig

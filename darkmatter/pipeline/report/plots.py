"""The pipeline's figures (matplotlib, Agg). Each function returns a Figure; the store saves it at 150 DPI."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from darkmatter.analysis.causal import CausalTable  # noqa: E402
from darkmatter.analysis.directions import ICA, NULL  # noqa: E402
from darkmatter.pipeline.results import SAEInfo  # noqa: E402
from darkmatter.pipeline.results.document import LayersSummary  # noqa: E402


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


def _fit_limits(ax: Axes, which: str, *arrays: np.ndarray, margin: float = 0.05) -> None:
    """Set ``ax``'s ``which`` ("x" or "y") limits to the finite values of ``arrays`` plus ``margin`` of the
    span on each side, measured on the axis's scale (set the scale first: log, symlog or linear)."""
    v = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return
    axis = ax.xaxis if which == "x" else ax.yaxis
    t = axis.get_transform()
    lo, hi = t.transform(np.array([[v.min()], [v.max()]])).ravel()
    pad = margin * (hi - lo) if hi > lo else max(abs(float(lo)) * margin, 0.5)
    lims = t.inverted().transform(np.array([[lo - pad], [hi + pad]])).ravel()
    (ax.set_xlim if which == "x" else ax.set_ylim)(float(lims[0]), float(lims[1]))


def _mark_gaussian(ax, se: float, vertical: bool = True, noise_floor: float | None = None) -> None:
    """The Gaussian's 0, its ±2 s.e. band (green hatching, no fill) and, with ``noise_floor``, the
    Gaussian surrogate's range (solid purple fill): the two bands stay apart where they overlap."""
    line, span = (ax.axvline, ax.axvspan) if vertical else (ax.axhline, ax.axhspan)
    if noise_floor is not None:
        span(-noise_floor, noise_floor, facecolor="tab:purple", edgecolor="none", alpha=0.4, zorder=0,
             label=f"Gaussian surrogate's range, largest |excess kurtosis| (±{noise_floor:.3f})")
    span(-2 * se, 2 * se, facecolor="none", edgecolor="tab:green", hatch="////", lw=1.0, zorder=0.5,
         label=f"±2 s.e. of a Gaussian's excess kurtosis at the effective sample size (±{2 * se:.3f})")
    line(0.0, color="black", ls="--", lw=1, label="Gaussian (0)")


def residual_kurtosis(resid_kurt: np.ndarray, act_kurt: np.ndarray, se: float, title: str,
                      noise_floor: float | None = None) -> Figure:
    """Per-dimension excess kurtosis of the SAE residual and of the activations (symlog axes), with
    the Gaussian band (±2 s.e. at the effective sample size, green hatching) and, with ``noise_floor``
    (the largest |excess kurtosis| of a Gaussian surrogate), the surrogate's range (purple fill), each
    named in one legend under both panels (it covers no data; both axes' limits hold every value).

    Args:
        resid_kurt, act_kurt: float[d_model] excess kurtosis per dimension; se: its standard error.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
    edges = _symlog_edges(resid_kurt, act_kurt)
    left.hist(act_kurt, bins=edges, alpha=0.6, color="tab:blue",
              label=f"activations (median {np.median(act_kurt):.2f})")
    left.hist(resid_kurt, bins=edges, alpha=0.6, color="tab:orange",
              label=f"residual x − x̂ (median {np.median(resid_kurt):.2f})")
    _mark_gaussian(left, se, noise_floor=noise_floor)
    left.set_xscale("symlog", linthresh=LINTHRESH)
    both = np.concatenate([resid_kurt, act_kurt])
    used = np.flatnonzero(np.histogram(both, bins=edges)[0])  # bins holding a value: shown whole
    bands = np.array([2 * se, noise_floor or 0.0])
    _fit_limits(left, "x", both, edges[[used[0], used[-1] + 1]] if len(used) else both, bands, -bands)
    left.set_xlabel("excess kurtosis per d_model dimension (symlog)")
    left.set_ylabel("dimensions")
    left.set_title("Per-dimension excess kurtosis")
    for values, color in ((act_kurt, "tab:blue"), (resid_kurt, "tab:orange")):
        right.plot(np.sort(values)[::-1], color=color)  # the colours of the histograms
    _mark_gaussian(right, se, vertical=False, noise_floor=noise_floor)
    right.set_yscale("symlog", linthresh=LINTHRESH)
    _fit_limits(right, "y", both, bands, -bands)
    right.set_xlabel("dimension rank")
    right.set_ylabel("excess kurtosis (symlog)")
    right.set_title("Sorted (colours as on the left)")
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(title)
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


def sae_label(sae: SAEInfo) -> str:
    """The SAE in words for a figure's title: its release/id or the folder a user gave, or who made it
    (``SAE trained here (topk): TopKSAE, d_sae 4,608``), never a run folder's truncated path."""
    what = f"{sae.sae_class}, d_sae {sae.d_sae:,}"
    if sae.made_by == "pretrained":
        return f"SAE {sae.source} ({what})"
    if sae.made_by.startswith("none"):
        return f"no SAE ({sae.made_by})"
    return f"SAE {sae.made_by}: {what}"


def _flow(fig: Figure, grid, first_row: int, n: int) -> list[Axes]:
    """``n`` axes flowing two to a row from ``first_row`` of a two-column ``grid``; an odd last one spans
    both columns (no empty cells)."""
    axes = []
    for i in range(n):
        row, col = first_row + i // 2, i % 2
        axes.append(fig.add_subplot(grid[row, :] if i == n - 1 and n % 2 else grid[row, col]))
    return axes


def similarity_vs_null(raw: np.ndarray, projected: np.ndarray, null_raw: np.ndarray, null_projected: np.ndarray,
                       stable: np.ndarray, candidate: np.ndarray, others: dict[str, np.ndarray], title: str,
                       marks: tuple[float, float]) -> Figure:
    """Max |cos| of the ICA components to the SAE decoder rows, raw (left) and projected into the
    whitened subspace (right), stacked by class (candidate / stable / other), over the matched
    null's pooled distribution scaled to k (outline) with its 99th percentile (value in each panel's
    title); one legend for both, in a strip under them (it covers no bars); below, the other baselines
    against the raw rows, two to a row (only panels that exist). Count axes have integer ticks.

    Args:
        raw, projected: float[k]; null_raw, null_projected: float[k × draws];
        stable, candidate: bool[k]; others: {label: float[k]}.
    """
    k = len(raw)
    other_rows = (len(others) + 1) // 2
    fig = plt.figure(figsize=(11, 4.2 + 2.6 * other_rows))
    grid = fig.add_gridspec(2 + other_rows, 2, height_ratios=[1.6, 0.18] + [1.1] * other_rows)
    top = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    key = fig.add_subplot(grid[1, :])
    key.set_axis_off()  # the strip that holds the shared legend
    bins = np.linspace(0, 1, 41).tolist()
    groups = [("candidate", candidate, "tab:red"), ("stable, not candidate", stable & ~candidate, "tab:blue"),
              ("other", ~stable & ~candidate, "lightsteelblue")]
    panels = ((top[0], raw, null_raw, "raw decoder rows"),
              (top[1], projected, null_projected, "decoder rows projected into the subspace"))
    for ax, values, null, sense in panels:
        ax.hist([values[m] for _, m, _ in groups], bins=bins, stacked=True, color=[c for *_, c in groups],
                label=[f"ICA {name} ({int(m.sum())})" for name, m, _ in groups])
        ax.hist(null, bins=bins, weights=np.full(len(null), k / max(len(null), 1)), histtype="step", color="black",
                lw=1.5, label="matched null (random rotations of the whitened subspace), scaled to k")
        p99 = float(np.quantile(null, 0.99))
        ax.axvline(p99, color="black", ls=":", lw=1.2, label="matched null's 99th percentile (value in each title)")
        for x in marks:
            ax.axvline(x, color="grey", ls="--", lw=1, label=f"marks at {marks[0]} and {marks[1]}")
        ax.set_title(f"ICA vs {sense}:\n{(values > p99).mean():.0%} above the null's p99 ({p99:.2f})", fontsize=10)
        ax.set_xlabel("max |cos| to any SAE decoder row")
        ax.set_ylabel("components")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = top[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # the two marks share one entry
    key.legend(list(unique.values()), list(unique.keys()), loc="center", ncol=3, fontsize=7, frameon=False)
    for ax, (label, values) in zip(_flow(fig, grid, 2, len(others)), others.items()):
        ax.hist(values, bins=bins, color="tab:grey")
        for x in marks:
            ax.axvline(x, color="grey", ls="--", lw=1)
        ax.set_title(f"{label}: mean {values.mean():.3f}", fontsize=9)
        ax.set_xlabel("max |cos| to any SAE decoder row (raw)")
        ax.set_ylabel("directions")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def kurtosis_vs_sae(ica_kurt: np.ndarray, control_kurt: np.ndarray | None, sae_kurt: np.ndarray,
                    sae_kurt_active: np.ndarray, sae_freq: np.ndarray, floor: float | None, title: str) -> Figure:
    """Left: excess kurtosis of ICA sources, of the matched control's sources and of SAE features
    conditional on activity (like for like: the distribution of values, not of zeros), on a symlog
    axis, with the noise floor marked. Right: SAE features' excess kurtosis over all tokens against
    their firing rate, beside what the zeros alone give ((1 − 6pq)/(pq)): that figure restates firing
    rates, so it is not put on the left axis. Both panels' limits hold every value, with a margin.

    Args:
        ica_kurt: float[k]; control_kurt: float[k_control] or None; sae_kurt, sae_kurt_active, sae_freq:
            float[n_alive] per SAE feature firing on at least ``ALIVE_FREQUENCY`` of tokens (sae_freq > 0);
        floor: the matched control's largest |excess kurtosis|, or None.
    """
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
    used = np.flatnonzero(np.histogram(allv, bins=edges)[0])  # bins holding a value: shown whole
    _fit_limits(left, "x", allv, edges[[used[0], used[-1] + 1]] if len(used) else allv, np.zeros(1),
                np.array([floor if floor is not None else 0.0]))
    left.set_xlabel("excess kurtosis (symlog)")
    left.set_ylabel("fraction of each set")
    left.set_title("Heavy tails, like for like")
    left.legend(fontsize=7)
    right.scatter(sae_freq, sae_kurt, s=4, alpha=0.4, color="tab:orange",
                  label=f"SAE features, all tokens (n={len(sae_kurt)})")
    p = np.geomspace(max(sae_freq.min(), 1e-6), min(sae_freq.max(), 0.5), 100)
    zeros = bernoulli_excess_kurtosis(p)
    right.plot(p, zeros, color="black", lw=1.2, label="zeros alone: (1 − 6pq)/(pq)")
    right.set_xscale("log")
    positive = bool(np.all(sae_kurt[np.isfinite(sae_kurt)] > 0) and np.all(zeros > 0))
    if positive:  # log: a narrow range still gets labelled (minor) ticks
        right.set_yscale("log")
    else:  # the curve turns negative past p = 0.21, features may too
        right.set_yscale("symlog", linthresh=1.0)
    _fit_limits(right, "x", sae_freq, p)  # every point and the whole curve, with a margin
    _fit_limits(right, "y", sae_kurt, zeros)
    right.set_xlabel("SAE feature firing rate p (log)")
    right.set_ylabel(f"excess kurtosis over all tokens ({right.get_yscale()})")
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


def causal_topm(table: CausalTable, title: str) -> Figure:
    """Step 06's top-m add-back against its baselines at equal variance: the share of the spliced gap
    closed (%) against m for ICA and every baseline in the table (``TopM.baselines``: PCA, the matched
    null, …), each point ± its standard error over the scoring documents; a baseline with several draws
    (the matched null) shows the draws' mean ± its standard error and the 95% range of its draws as a
    band. x is log-scaled with one tick per m (the residual variance the m parts carry beneath it).

    Args:
        table: a :class:`~darkmatter.analysis.causal.CausalTable` with ``top_m`` rows (one per m).
    Raises:
        ValueError: without top-m rows.
    """
    rows = table.top_m
    if not rows:
        raise ValueError("causal_topm needs top-m rows (the causal tests ran none)")
    ms = np.array([r.m for r in rows], dtype=np.float64)
    names = list(rows[0].baselines)
    fig, ax = plt.subplots(figsize=(9, 6.4), layout="constrained")
    step = 1.045  # side by side on the log axis: error bars of one m do not hide each other
    series = [(ICA, [r.ica for r in rows], "tab:blue", "o")]
    palette = iter(["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"])
    for name in names:
        color = "black" if name == NULL else next(palette, "tab:grey")
        series.append((name, [r.baselines[name].gap for r in rows], color, "s" if name == NULL else "^"))
    handles: list = []  # the legend in drawing order: a band right after its mean
    for i, (name, gaps, color, marker) in enumerate(series):
        x = ms * step ** (i - (len(series) - 1) / 2)
        share = np.array([g.share for g in gaps]) * 100
        se = np.array([g.se for g in gaps]) * 100
        n = table.baseline_draws.get(name, len(rows[0].baselines[name].draws)) if name != ICA else 1
        if name == ICA:
            label = "ICA: its first m components (ordered on the other half)"
        elif n > 1:
            label = f"{name}: mean of {n} draws" + (" (random rotations of the whitened subspace)" if name == NULL
                                                    else "")
        else:
            label = f"{name}: its first parts at the same variance"
        handles.append(ax.errorbar(x, share, yerr=se, color=color, marker=marker, ms=6, lw=1.5, capsize=4,
                                   label=label + " ± s.e."))
        if n > 1:
            handles.append(ax.fill_between(x, [r.baselines[name].low * 100 for r in rows],
                                           [r.baselines[name].high * 100 for r in rows], color=color, alpha=0.12,
                                           lw=0, label=f"{name}: 95% range of its {n} draws"))
    ax.axhline(0, color="grey", lw=0.8)
    shares = [g.share for _, gaps, _, _ in series for g in gaps]
    if not np.isfinite(shares).any():  # nothing to draw: say why rather than leave the axes blank
        ax.text(0.5, 0.75, "no share of the gap is defined on the scored documents\n(over all held-out windows: SAE "
                f"spliced loss {table.spliced_loss:.4f}, clean {table.clean_loss:.4f})", transform=ax.transAxes,
                ha="center", va="center", fontsize=10)
    ax.set_xscale("log")
    ax.set_xticks(ms)
    ax.set_xticklabels([f"{r.m}\n({r.variance:.3g})" for r in rows])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlim(ms.min() / 1.3, ms.max() * 1.3)
    ax.set_xlabel("m: ICA components added back\n"
                  "(beneath: the residual variance they carry; each baseline adds the same)")
    ax.set_ylabel("share of the spliced gap closed (%)")
    ax.set_title(f"{table.loss_name}; scored on {table.score_documents} held-out documents, each set ordered on "
                 f"the other {table.fit_documents}", fontsize=9)
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=2)  # under the axes: covers no point
    fig.suptitle(title, fontsize=11)
    return fig


def _legend_below(ax: Axes) -> None:
    """``ax``'s legend under it, outside the data (constrained layout makes room)."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14 if ax.get_xlabel() else -0.04), ncol=2,
              frameon=False)


def layers_summary(summary: LayersSummary, title: str = "Across layers (run_pipeline.py --layers)") -> Figure:
    """Small multiples with the layer on the x axis (one tick per layer): the SAE's FVU and L0, the
    residual's and the ICA sources' median excess kurtosis, the residual's PCA components for 90% of
    its variance, the component counts (k, stable, stable above the noise floor, the matched control's
    stable ones, candidates; integer ticks) and mean max|cos| to the SAE's decoder rows of every
    direction set (ICA solid, the matched null dashed).

    Args:
        summary: one :class:`~darkmatter.pipeline.results.document.LayerRow` per layer.
    """
    rows = sorted(summary.layers, key=lambda r: r.layer)
    layers = [r.layer for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.2), sharex=True, layout="constrained")
    (fvu, l0, kurt), (pca, counts, cos) = axes
    for ax in axes[1]:
        ax.set_xlabel("layer")

    def line(ax: Axes, values: list, label: str | None = None, **kw) -> None:
        y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        ax.plot(layers, y, marker="o", label=label, **kw)

    line(fvu, [r.sae_fvu for r in rows], color="tab:red")
    fvu.set_title("SAE FVU (fraction of variance unexplained)", fontsize=10)
    line(l0, [r.sae_l0 for r in rows], color="tab:brown")
    l0.set_title("SAE L0 (active latents per token)", fontsize=10)
    line(kurt, [r.residual_median_excess_kurtosis for r in rows], "residual x − x̂, per dimension", color="tab:orange")
    line(kurt, [r.ica_median_excess_kurtosis for r in rows], "ICA sources", color="tab:blue")
    kurt.axhline(0, color="black", ls="--", lw=1, label="Gaussian (0)")
    kurt.set_title("median excess kurtosis", fontsize=10)
    _legend_below(kurt)
    line(pca, [r.pca_components_for_90 for r in rows], color="tab:green")
    pca.set_title("residual PCA components for 90% of variance", fontsize=10)
    pca.yaxis.set_major_locator(MaxNLocator(integer=True))
    line(counts, [r.k for r in rows], "k (components)", color="grey", ls=":")
    line(counts, [r.n_stable for r in rows], "stable", color="tab:blue")
    line(counts, [r.n_stable_above_noise_floor for r in rows], "stable, above the noise floor", color="tab:purple")
    line(counts, [r.control_n_stable for r in rows], "matched control: stable", color="black", ls="--")
    line(counts, [r.n_candidate_dark_matter for r in rows], "dark-matter candidates", color="tab:red")
    counts.set_title("ICA components", fontsize=10)
    counts.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts.set_ylim(bottom=-0.04 * max(max(r.k for r in rows), 1))  # a count of 0 stays visible
    _legend_below(counts)
    names = list(dict.fromkeys(n for r in rows for n in r.mean_max_abs_cos_to_sae))
    palette = iter(["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    for name in names:
        style = ({"color": "tab:blue", "lw": 2} if name == ICA else {"color": "black", "ls": "--"} if name == NULL
                 else {"color": next(palette, "grey"), "lw": 1, "alpha": 0.8})
        line(cos, [r.mean_max_abs_cos_to_sae.get(name) for r in rows],
             "matched null (random rotations)" if name == NULL else name, **style)
    cos.set_title("mean max |cos| to the SAE's decoder rows", fontsize=10)
    cos.set_ylim(0, 1)
    _legend_below(cos)
    for ax in axes.ravel():
        ax.set_xticks(layers)
        ax.xaxis.set_minor_locator(plt.NullLocator())
        if len(layers) == 1:
            ax.set_xlim(layers[0] - 1, layers[0] + 1)
    hooks = sorted({re.sub(r"blocks\.\d+\.", "blocks.L.", r.hook_name, count=1) for r in rows})
    fig.suptitle(f"{title}: layers {', '.join(map(str, layers))} at {', '.join(hooks)}", fontsize=11)
    return fig

"""Sweeps over planted dark matter: recovery as the problem gets harder.

:func:`planted_grid` varies one parameter at a time from the planted preset's
defaults (noise, firing probability, withheld features) and runs :func:`recovery`
at each setting; ``scripts/sweep_planted.py`` writes the table and the plot.
Every direction set of :mod:`darkmatter.analysis.directions` is scored.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from darkmatter.analysis import directions as direction_sets
from darkmatter.analysis.groundtruth import FALSE_COS, FOUND_COS, score
from darkmatter.sources import planted

VARIED = {"noise_std": "noise σ per dimension", "p_fire": "firing probability p",
          "n_withheld": "withheld features"}
DEFAULT_GRID = {"noise_std": (0.05, 0.1, 0.2, 0.4), "p_fire": (0.01, 0.02, 0.05, 0.1),
                "n_withheld": (8, 16, 32, 64)}


def recovery(spec: planted.PlantedSpec, n_tokens: int, seed: int = 0, max_components: int = 100,
             max_iter: int = 200, tol: float = 1e-6) -> dict[str, Any]:
    """One withheld-feature experiment in memory: oracle SAE → residual → PCA whitening to the
    default k (:func:`darkmatter.analysis.decompose.default_k`) → one scikit-learn FastICA fit
    (:func:`darkmatter.analysis.decompose.decompose`) → every direction set scored against the
    withheld features (:func:`darkmatter.analysis.groundtruth.score`).

    This is the pipeline's 02-05 path on in-memory arrays, for sweeps over the spec.

    Args:
        spec: planted data; ``spec.n_withheld`` ≥ 1.
        n_tokens: analysed rows.
    Returns:
        {"k", "fvu", "residual_median_excess_kurtosis", "ica_converged", "ica_n_iter",
         "sets": {set name: RecoverySummary as a dict}}.
    Raises:
        ValueError: nothing is withheld.
    """
    import torch

    from darkmatter.analysis import ica, stats
    from darkmatter.analysis.decompose import decompose, default_k

    if spec.n_withheld < 1:
        raise ValueError("recovery needs withheld features (n_withheld ≥ 1)")
    x, _ = planted.sample(spec, "analysis", n_tokens)
    sae = planted.oracle_sae(spec)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        resid = (xt - sae.decode(sae.encode(xt))).numpy()
    m = stats.streaming_moments(resid)
    assert m.cov is not None
    pca = stats.pca_from_cov(m.cov)
    k, _ = default_k(pca, max_components)
    white = ica.pca_whitening(pca, m.mean, k)
    dec = decompose(white.apply(resid), white, [seed], max_iter, tol, backend="sklearn")
    sets = direction_sets.direction_sets(dec.directions, direction_sets.DirectionContext(
        k=k, d_model=spec.d_model, seed=seed, pca_components=pca.components, dewhitener=white.dewhitener))
    truth, dark = spec.directions(), spec.withheld()
    fvu = float((resid.astype(np.float64) ** 2).sum() / (n_tokens * stats.streaming_moments(
        x, with_cov=False).total_variance))
    return {"k": k, "fvu": fvu, "residual_median_excess_kurtosis": float(np.median(m.excess_kurtosis)),
            "ica_converged": dec.fits[0].converged, "ica_n_iter": dec.fits[0].n_iter,
            "sets": {name: dataclasses.asdict(score(d, truth, dark).summary()) for name, d in sets.items()}}


def planted_grid(base: planted.PlantedSpec, grid: dict[str, Sequence[float]], n_tokens: int,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Run :func:`recovery` for each value of each varied field of ``base``.

    Args:
        grid: {PlantedSpec field: values}; the other fields stay at ``base``.
    Returns:
        one record per run: {"varied", "value", "spec", ...recovery()}.
    Raises:
        ValueError: a field is not a PlantedSpec field.
    """
    from tqdm.auto import tqdm

    names = {f.name for f in dataclasses.fields(planted.PlantedSpec)}
    unknown = set(grid) - names
    if unknown:
        raise ValueError(f"unknown PlantedSpec fields {sorted(unknown)}")
    runs = [(name, v) for name, values in grid.items() for v in values]
    records = []
    for name, value in tqdm(runs, desc="planted sweep"):
        spec = dataclasses.replace(base, **{name: type(getattr(base, name))(value)})
        t = time.perf_counter()
        rec = recovery(spec, n_tokens, seed)
        records.append({"varied": name, "value": value, "spec": dataclasses.asdict(spec),
                        "seconds": round(time.perf_counter() - t, 1), **rec})
    return records


def planted_markdown(records: list[dict[str, Any]], base: planted.PlantedSpec, n_tokens: int) -> str:
    """A markdown table per varied parameter: found / mean max |cos| / false discoveries of each set."""
    ica, others = direction_sets.ICA, direction_sets.set_names()[1:]
    out = ["# Planted dark matter: recovery as the problem gets harder", "",
           f"Base: {planted.describe(base, 'withheld')}; {n_tokens:,} tokens; one parameter varied at a "
           f"time. found = withheld features matched at |cos| > {FOUND_COS}; false = directions "
           f"with |cos| < {FALSE_COS} to every true feature; k = PCA components for 90% of the "
           "residual variance.", ""]
    for name, label in VARIED.items():
        rows = [r for r in records if r["varied"] == name]
        if not rows:
            continue
        head = [label, "SAE FVU", "k", f"{ica} found", f"{ica} mean max abs cos", f"{ica} false"]
        head += [h for o in others for h in (f"{o} found", f"{o} mean")]
        out += [f"## {label}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            i = r["sets"][ica]
            cells = [f"{r['value']:g}", f"{r['fvu']:.3f}", str(r["k"]), f"{i['n_found']}/{i['n_dark']}",
                     f"{i['mean_max_abs_cos']:.3f}", str(i["n_false_discoveries"])]
            cells += [c for o in others for c in (str(r["sets"][o]["n_found"]),
                                                  f"{r['sets'][o]['mean_max_abs_cos']:.3f}")]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def planted_figure(records: list[dict[str, Any]]):
    """One panel per varied parameter: share of withheld features found by ICA / PCA / random."""
    import matplotlib.pyplot as plt

    names = [n for n in VARIED if any(r["varied"] == n for r in records)]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in records if r["varied"] == name]
        x = [r["value"] for r in rows]
        for method, style in zip(direction_sets.set_names(), ("o-", "s--", "^:", "d-.", "x--")):
            ax.plot(x, [r["sets"][method]["n_found"] / r["sets"][method]["n_dark"] for r in rows], style,
                    label=f"{method}: found")
        ica = direction_sets.ICA
        ax.plot(x, [r["sets"][ica]["mean_max_abs_cos"] for r in rows], "o-", alpha=0.4, color="tab:blue",
                label=f"{ica}: mean max |cos|")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(VARIED[name])
        ax.set_ylabel(f"share found (|cos| > {FOUND_COS}); mean max |cos|")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Planted dark matter: recovery of withheld features as one parameter varies")
    fig.tight_layout()
    return fig

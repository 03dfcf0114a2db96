"""Sweeps over planted dark matter: recovery as the problem gets harder.

:func:`planted_grid` varies one parameter at a time from the planted preset's
defaults (noise, firing probability, withheld features) and runs
:func:`darkmatter.planted.recovery` at each setting; ``scripts/sweep_planted.py``
writes the table and the plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from typing import Any


from darkmatter import planted
from darkmatter.store import OutputStore

VARIED = {"noise_std": "noise σ per dimension", "p_fire": "firing probability p",
          "n_withheld": "withheld features"}
DEFAULT_GRID = {"noise_std": (0.05, 0.1, 0.2, 0.4), "p_fire": (0.01, 0.02, 0.05, 0.1),
                "n_withheld": (8, 16, 32, 64)}


def planted_grid(base: planted.PlantedSpec, grid: dict[str, Sequence[float]], n_tokens: int,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Run :func:`darkmatter.planted.recovery` for each value of each varied field of ``base``.

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
        rec = planted.recovery(spec, n_tokens, seed)
        records.append({"varied": name, "value": value, "spec": dataclasses.asdict(spec),
                        "seconds": round(time.perf_counter() - t, 1), **rec})
    return records


def planted_markdown(records: list[dict[str, Any]], base: planted.PlantedSpec, n_tokens: int) -> str:
    """A markdown table per varied parameter: found / mean max |cos| / false discoveries."""
    out = ["# Planted dark matter: recovery as the problem gets harder", "",
           f"Base: {planted.describe(base, 'withheld')}; {n_tokens:,} tokens; one parameter varied at a "
           f"time. found = withheld features matched at |cos| > {planted.FOUND_COS}; false = directions "
           f"with |cos| < {planted.FALSE_COS} to every true feature; k = PCA components for 90% of the "
           "residual variance.", ""]
    for name, label in VARIED.items():
        rows = [r for r in records if r["varied"] == name]
        if not rows:
            continue
        out += [f"## {label}", "",
                "| " + " | ".join([label, "SAE FVU", "k", "ICA found", "ICA mean max abs cos", "ICA false",
                                   "PCA found", "PCA mean", "random found", "random mean"]) + " |",
                "|" + "---|" * 10]
        for r in rows:
            i, p, q = r["ICA"], r["PCA"], r["random"]
            out.append(f"| {r['value']:g} | {r['fvu']:.3f} | {r['k']} | {i['n_found']}/{i['n_dark']} | "
                       f"{i['mean_max_abs_cos']:.3f} | {i['n_false_discoveries']} | {p['n_found']} | "
                       f"{p['mean_max_abs_cos']:.3f} | {q['n_found']} | {q['mean_max_abs_cos']:.3f} |")
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
        for method, style in (("ICA", "o-"), ("PCA", "s--"), ("random", "^:")):
            ax.plot(x, [r[method]["n_found"] / r[method]["n_dark"] for r in rows], style, label=f"{method}: found")
        ax.plot(x, [r["ICA"]["mean_max_abs_cos"] for r in rows], "o-", alpha=0.4, color="tab:blue",
                label="ICA: mean max |cos|")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(VARIED[name])
        ax.set_ylabel(f"share found (|cos| > {planted.FOUND_COS}); mean max |cos|")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Planted dark matter: recovery of withheld features as one parameter varies")
    fig.tight_layout()
    return fig


def planted_sweep_main(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """``scripts/sweep_planted.py``: parse flags, run :func:`planted_grid`, write the outputs."""
    parser.add_argument("--n-tokens", type=int, default=50_000, help="tokens per run (default 50000)")
    parser.add_argument("--seed", type=int, default=42, help="data and FastICA seed (default 42)")
    parser.add_argument("--outputs", default="outputs/planted_sweep", help="output folder")
    for name, values in DEFAULT_GRID.items():
        parser.add_argument("--" + name.replace("_", "-"), default=",".join(f"{v:g}" for v in values),
                            help=f"comma-separated values of {VARIED[name]} (default %(default)s)")
    args = parser.parse_args(argv)
    base = planted.PlantedSpec(seed=args.seed)
    grid = {name: [float(v) for v in getattr(args, name).split(",") if v] for name in DEFAULT_GRID}
    t = time.perf_counter()
    records = planted_grid(base, grid, args.n_tokens, args.seed)
    store = OutputStore(args.outputs)
    with store.transaction():
        store.write_json("planted_sweep.json", {"base": dataclasses.asdict(base), "n_tokens": args.n_tokens,
                                                "seconds": round(time.perf_counter() - t, 1),
                                                "runs": records})
        store.write_text("planted_sweep.md", planted_markdown(records, base, args.n_tokens))
        store.save_figure("planted_sweep.png", planted_figure(records))
    print(planted_markdown(records, base, args.n_tokens))
    print(f"wrote {store.path('planted_sweep.md')} in {time.perf_counter() - t:.0f} s")
    return 0




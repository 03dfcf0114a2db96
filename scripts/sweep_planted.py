#!/usr/bin/env python
"""Planted dark matter: how recovery by ICA and every baseline falls as the noise, the firing
probability and the number of withheld features grow (one varied at a time from the planted
preset's defaults). Writes planted_sweep.json, planted_sweep.md and planted_sweep.png to --outputs.
The logic is in darkmatter/experiments/sweeps.py."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from darkmatter.experiments.sweeps import DEFAULT_GRID, VARIED, planted_figure, planted_grid, planted_markdown
from darkmatter.pipeline.storage.store import OutputStore
from darkmatter.sources.planted import PlantedSpec


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-tokens", type=int, default=50_000, help="tokens per run (default 50000)")
    parser.add_argument("--seed", type=int, default=42, help="data and FastICA seed (default 42)")
    parser.add_argument("--outputs", default="outputs/planted_sweep", help="output folder")
    for name, values in DEFAULT_GRID.items():
        parser.add_argument("--" + name.replace("_", "-"), default=",".join(f"{v:g}" for v in values),
                            help=f"comma-separated values of {VARIED[name]} (default %(default)s)")
    args = parser.parse_args(argv)
    base = PlantedSpec(seed=args.seed)
    grid = {name: [float(v) for v in getattr(args, name).split(",") if v] for name in DEFAULT_GRID}
    t = time.perf_counter()
    records = planted_grid(base, grid, args.n_tokens, args.seed)
    store = OutputStore(args.outputs)
    with store.transaction():
        store.write_json("planted_sweep.json", {"base": dataclasses.asdict(base), "n_tokens": args.n_tokens,
                                                "seconds": round(time.perf_counter() - t, 1), "runs": records})
        store.write_text("planted_sweep.md", planted_markdown(records, base, args.n_tokens))
        store.save_figure("planted_sweep.png", planted_figure(records))
    print(planted_markdown(records, base, args.n_tokens))
    print(f"wrote {store.path('planted_sweep.md')} in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

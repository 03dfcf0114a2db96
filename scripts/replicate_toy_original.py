#!/usr/bin/env python
"""Replicate the original 10-5-10 toy-model SAE collapse like for like (darkmatter/experiments/toy_original.py).

Runs the toy-autoencoder setup grid; then, over seeds, the plain SAEs on the setups nearest the original
(at S = 0.9 and over all S) and on the repository's own, and SAELens's SAE on the first and the last;
writes docs/runs/toy_original.json, fills the generated tables of docs/toy_replication.md and prints the
replication tables. About 4 minutes on 2 CPU cores.

    .venv/bin/python scripts/replicate_toy_original.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from darkmatter.experiments import toy_original as to  # noqa: E402


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(p) for p in text.split(",") if p.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = to.RunSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=_ints, default=",".join(map(str, d.seeds)), help="replication seeds")
    p.add_argument("--grid-seeds", type=_ints, default=",".join(map(str, d.grid_seeds)), help="AE-grid seeds")
    p.add_argument("--sparsities", type=_floats, default=",".join(map(str, d.sparsities)), help="S values")
    p.add_argument("--n-train", type=int, default=d.n_train, help="SAE training activations")
    p.add_argument("--n-eval", type=int, default=d.n_eval, help="evaluation samples")
    p.add_argument("--no-saelens", action="store_true", help="skip SAELens's SAE")
    p.add_argument("--json", type=Path, default=Path("docs/runs/toy_original.json"), help="results file")
    p.add_argument("--doc", type=Path, default=Path("docs/toy_replication.md"),
                   help="document whose generated blocks are filled (left alone if missing)")
    args = p.parse_args(argv)
    if any(not 0.0 <= s < 1.0 for s in args.sparsities) or not set(args.sparsities) <= set(to.ORIGINAL_AE):
        p.error(f"sparsities must be among {sorted(to.ORIGINAL_AE)}")
    if 0.9 not in args.sparsities:
        p.error("the sparsities must include 0.9 (the chosen setup is judged there)")
    return args


def machine() -> dict:
    import sae_lens

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
            "torch": torch.__version__, "sae_lens": sae_lens.__version__}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # 5-dimensional activations: threads only add overhead on a shared machine
    settings = to.RunSettings(n_train=args.n_train, n_eval=args.n_eval, sparsities=args.sparsities,
                              seeds=args.seeds, grid_seeds=args.grid_seeds, saelens=not args.no_saelens)
    grid = to.ae_grid()
    cache = to.AECache(grid, settings.n_eval)
    start = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {text}", file=sys.stderr)

    ae_records = to.to_jsonable(to.run_ae_grid(cache, settings.sparsities, settings.grid_seeds, progress))
    at_09, over_s = to.nearest(ae_records, 0.9), to.nearest(ae_records, 0.0)
    setups = list(dict.fromkeys([at_09.variant, over_s.variant, to.REPO_VARIANT]))
    sae_records = to.run_saes(cache, setups, settings, saelens_on=[at_09.variant, to.REPO_VARIANT],
                              progress=progress)
    wall = time.perf_counter() - start
    results = {
        "about": "docs/toy_replication.md; darkmatter/experiments/toy_original.py",
        "meta": {**machine(), "wall_s": round(wall, 1), "command": " ".join(["scripts/replicate_toy_original.py",
                                                                             *(argv or sys.argv[1:])])},
        "seeds": list(settings.seeds), "grid_seeds": list(settings.grid_seeds),
        "settings": {**asdict(settings), "plain_variants": {k: asdict(v) for k, v in to.PLAIN_VARIANTS.items()}},
        "original": {str(s): asdict(o) for s, o in to.ORIGINAL_AE.items()},
        "grid_setups": {k: {**asdict(v), "describe": v.describe()} for k, v in grid.items()},
        "nearest": {"S=0.90": asdict(at_09), "sum": asdict(over_s)},
        "definition": at_09.definition,
        "replicated_setups": setups,
        "ae_grid": ae_records,
        "sae_runs": to.to_jsonable(sae_records),
    }
    results["tables"] = to.tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    wrote = [str(args.json)]
    if args.doc.exists():
        args.doc.write_text(to.fill_generated(args.doc.read_text(), results["tables"]))
        wrote.append(str(args.doc))
    print(f"wrote {' and '.join(wrote)} in {wall:.0f} s")
    for name, table in results["tables"].items():
        if name.startswith("replication-"):
            print(f"\n{name}\n{table}")
    print("\n" + results["tables"]["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

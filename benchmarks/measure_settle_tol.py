# ruff: noqa: E501
"""Does a tighter settle_tol change what FastICA (darkmatter.analysis.ica_engine) settles?

Datasets: (a) an offline-default run's outputs folder, (b) a planted-preset run's outputs folder
(the two arguments); each also as a Gaussian control (ica.whitened_gaussian, same n, k, seeds).
Measured at commit 24ef00f (restarts on random token halves, as ica.fit_seeds then did); the
results are docs/runs/settle_tol.json and docs/settle_tol.md.
For each settle_tol in TOLS and seed in SEEDS (seed 42 on all rows, later seeds on a random half,
as ica.fit_seeds), fastica_torch(z, seed, 200, 1e-6, settle_tol=...) is timed and kept under cache/.
Then: stability across restarts (ica.stability on mixing directions, stable ≥ 0.9), the overlap of
settled sets between settle_tols (Hungarian match of seed-42 directions by |cos|), source excess
kurtosis of the components that differ, and for planted data the ground-truth score.

Usage: python benchmarks/measure_settle_tol.py OFFLINE_OUTPUTS PLANTED_OUTPUTS
(writes report.md and results.json next to this file; re-uses cache/)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kurtosis

from darkmatter.analysis import groundtruth, ica, stats
from darkmatter.analysis.ica_engine import fastica_torch
from darkmatter.sources.planted import PlantedSpec

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
TOLS = [1e-2, 3e-3, 1e-3]
SEEDS = [42, 43, 44]
MAX_ITER, TOL, PATIENCE, STABLE_COS = 200, 1e-6, 5, 0.9
DATASETS = {"offline-default": Path(sys.argv[1] if len(sys.argv) > 1 else "outputs"),
            "planted": Path(sys.argv[2] if len(sys.argv) > 2 else "outputs_planted")}


def load(folder: Path):
    k = json.loads((folder / "ica.json").read_text())["k"]
    pca = stats.PCA(np.load(folder / "pca_eigenvalues.npy"), np.load(folder / "pca_components.npy"))
    white = ica.pca_whitening(pca, np.load(folder / "residual_mean.npy"), k)
    z = ica.whiten_rows(np.load(folder / "residuals.npy", mmap_mode="r"), white)
    return z, white, k


def planted_truth(folder: Path):
    det = json.loads((folder / "setup.json").read_text())["source_details"]
    spec = PlantedSpec(**{f: det[f] for f in PlantedSpec.__dataclass_fields__})
    assert spec.withheld().tolist() == det["withheld"]
    return spec.directions(), spec.withheld()


def rows_for(seed: int, n: int) -> np.ndarray | None:
    if seed == SEEDS[0]:
        return None
    return np.sort(np.random.default_rng([seed, 1012]).choice(n, n // 2, replace=False))


def run_fit(name: str, z: np.ndarray, seed: int, settle_tol: float) -> dict:
    """One fastica_torch run, cached: W, settled, timing, the n_settled trajectory and each row's
    movement over the last `patience` full-phase iterations (1 − |cos|) at the stop."""
    path = CACHE / f"{name}_{settle_tol:g}_{seed}.npz"
    if path.exists():
        d = np.load(path, allow_pickle=True)
        return {"W": d["W"], "settled": d["settled"], **json.loads(str(d["meta"]))}
    rows = rows_for(seed, len(z))
    zz = z if rows is None else z[rows]
    hist: list[np.ndarray] = []
    traj: list[int] = []

    def cb(phase, it, W):
        if phase == "full":
            hist.append(W)
            del hist[:-(PATIENCE + 1)]

    def prog(phase, it, m):
        if phase == "full":
            traj.append(m)

    t0, c0 = time.perf_counter(), time.process_time()
    f = fastica_torch(zz, seed, MAX_ITER, TOL, patience=PATIENCE, settle_tol=settle_tol, callback=cb, progress=prog)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m, k = f.n_settled, len(f.W)
    # cost in full-step equivalents on all n rows of the dataset (a refine step costs m/k of a full one)
    cost = (f.phases["full"] + f.phases.get("refine", 0) * m / k) * len(zz) / len(z)
    move = (1.0 - np.abs((hist[-1] * hist[0]).sum(1))) if len(hist) == PATIENCE + 1 else np.full(len(f.W), np.nan)
    meta = {"n_rows": len(zz), "n_iter": f.n_iter, "phases": f.phases, "n_settled": f.n_settled,
            "stopped_on_stability": f.stopped_on_stability, "converged": f.converged,
            "settled_converged": f.settled_converged, "wall_s": wall, "cpu_s": cpu, "cost_steps": cost,
            "final_change_max": float(np.nanmax(f.final_change)), "traj": traj, "move5": move.tolist()}
    CACHE.mkdir(exist_ok=True)
    np.savez(path, W=f.W, settled=f.settled, meta=json.dumps(meta))
    print(f"  {name} tol={settle_tol:g} seed={seed}: n_iter {f.n_iter} {f.phases} settled {f.n_settled} "
          f"stable-stop {f.stopped_on_stability} {wall:.1f}s wall {cpu:.1f}s cpu", flush=True)
    return {"W": f.W, "settled": f.settled, **meta}


def excess_kurtosis(z: np.ndarray, W: np.ndarray) -> np.ndarray:
    return kurtosis(z[:100_000].astype(np.float64) @ W.T, axis=0)


def analyse(name: str, z: np.ndarray, white, truth=None) -> dict:
    out: dict = {"tols": {}}
    dirs42, settled42, kurt42, stab42 = {}, {}, {}, {}
    for tol in TOLS:
        fits = [run_fit(name, z, s, tol) for s in SEEDS]
        D = [ica.mixing_directions(f["W"], white) for f in fits]
        stab = ica.stability(D[0], D[1:])
        stable = stab >= STABLE_COS
        kurt = excess_kurtosis(z, fits[0]["W"])
        settled = np.asarray(fits[0]["settled"], bool)
        dirs42[tol], settled42[tol], kurt42[tol], stab42[tol] = D[0], settled, kurt, stab
        rec = {"seeds": [{k: v for k, v in f.items() if k not in ("W", "settled", "traj", "move5")}
                         | {"seed": s, "settled_at_iter": first_final(f["traj"]),
                            "move5_q": quantiles(f["move5"])}
                         for s, f in zip(SEEDS, fits)],
               "n_stable": int(stable.sum()), "n_stable_and_settled_all": int((stable & settled).sum()),
               "wall_s_total": sum(f["wall_s"] for f in fits), "cpu_s_total": sum(f["cpu_s"] for f in fits), "cost_total": sum(f["cost_steps"] for f in fits),
               "kurt_max_abs": float(np.abs(kurt).max()), "kurt_median": float(np.median(kurt))}
        if truth is not None:
            tdir, dark = truth
            sc = groundtruth.score(D[0], tdir, dark)
            rec["gt_found"] = sc.summary().n_found
            rec["gt_n_dark"] = len(dark)
            rec["gt_mean_max_cos"] = sc.summary().mean_max_abs_cos
            rec["gt_false_disc"] = sc.summary().n_false_discoveries
            rec["gt_stable_false_disc"] = int((sc.nearest_true_cos[stable] < groundtruth.FALSE_COS).sum())
            # dark features found by a stable component
            rec["gt_found_by_stable"] = int((groundtruth.score(D[0][stable], tdir, dark).max_abs_cos
                                             > groundtruth.FOUND_COS).sum()) if stable.any() else 0
            rec["nearest_true_cos"] = sc.nearest_true_cos.tolist()
        out["tols"][tol] = rec
    # overlap of the seed-42 settled / stable sets between settle_tols, matched by |cos| of directions
    base = TOLS[0]
    out["overlap"] = {}
    for tol in TOLS[1:]:
        perm, cos = ica.match(dirs42[base], dirs42[tol])
        sa, sb = settled42[base], settled42[tol][perm]
        ta, tb = stab42[base] >= STABLE_COS, (stab42[tol] >= STABLE_COS)[perm]
        diff = np.flatnonzero(sa != sb)
        sdiff = np.flatnonzero(ta != tb)
        ov = {"matched_cos_q": quantiles(cos), "matched_cos_stable_q": quantiles(cos[ta | tb]), "n_matched_cos_ge_0.99": int((cos >= 0.99).sum()),
              "settled_both": int((sa & sb).sum()), "settled_base_only": int((sa & ~sb).sum()),
              "settled_tight_only": int((~sa & sb).sum()),
              "stable_both": int((ta & tb).sum()), "stable_base_only": int((ta & ~tb).sum()),
              "stable_tight_only": int((~ta & tb).sum()),
              "differ": [{"comp": int(i), "settled_base": bool(sa[i]), "settled_tight": bool(sb[i]),
                          "match_cos": float(cos[i]), "kurt_base": float(kurt42[base][i]),
                          "kurt_tight": float(kurt42[tol][perm[i]]), "stab_base": float(stab42[base][i]),
                          "stab_tight": float(stab42[tol][perm[i]]),
                          **({"true_cos_base": out["tols"][base]["nearest_true_cos"][i]} if truth else {})}
                         for i in diff],
              "stable_differ": [{"comp": int(i), "stable_base": bool(ta[i]), "match_cos": float(cos[i]),
                                 "kurt_base": float(kurt42[base][i]), "kurt_tight": float(kurt42[tol][perm[i]]),
                                 "stab_base": float(stab42[base][i]), "stab_tight": float(stab42[tol][perm[i]])}
                                for i in sdiff]}
        if diff.size == 0:
            ov["kurt_settled_q"] = quantiles(kurt42[base][sa])
        out["overlap"][tol] = ov
    return out


def control(name: str, n: int, k: int, white) -> dict:
    z = ica.whitened_gaussian(n, k, SEEDS[0])
    res = {}
    loose: list[dict] = []
    for tol in TOLS:
        # The iterates do not depend on settle_tol (it only decides the stop): a run in which no row
        # ever settled at the loosest settle_tol and that did not stop early is the same run at a
        # tighter one (its settled set is a subset at every iteration), so it is not repeated.
        fits = [f if loose and not any(f["traj"]) and not f["stopped_on_stability"]
                else run_fit(f"{name}-gauss", z, s, tol) for s, f in zip(SEEDS, loose or [{}] * len(SEEDS))]
        loose = loose or fits
        D = [ica.mixing_directions(f["W"], white) for f in fits]
        stab = ica.stability(D[0], D[1:])
        kurt = excess_kurtosis(z, fits[0]["W"])
        res[tol] = {"seeds": [{"seed": s, "reused": tol != TOLS[0] and f is loose[i], "n_iter": f["n_iter"], "phases": f["phases"], "n_settled": f["n_settled"],
                               "stopped_on_stability": f["stopped_on_stability"], "wall_s": f["wall_s"], "cpu_s": f["cpu_s"],
                               "cost_steps": f["cost_steps"]}
                              for i, (s, f) in enumerate(zip(SEEDS, fits))],
                    "n_stable": int((stab >= STABLE_COS).sum()), "stability_max": float(stab.max()),
                    "kurt_max_abs": float(np.abs(kurt).max())}
    return res


def first_final(traj: list[int]) -> int | None:
    """First full-phase iteration from which n_settled never changed again."""
    if not traj:
        return None
    i = len(traj) - 1
    while i > 0 and traj[i - 1] == traj[-1]:
        i -= 1
    return i + 1


def quantiles(x) -> list[float]:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return [float(v) for v in np.quantile(x, [0, 0.5, 0.9, 1])] if x.size else []


def report(results: dict) -> str:
    L = ["# settle_tol sweep of fastica_torch (patience 5, wander_tol 0.05, max_iter 200, tol 1e-6)", "",
         f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU. Seed 42 on all rows, 43/44 on a "
         "random half (as ica.fit_seeds). Stable = lowest matched |cos| of mixing directions across seeds ≥ 0.9. "
         "Kurtosis = excess kurtosis of seed-42 sources (first 100k rows). `move5` = 1 − |cos| of each row "
         "over the last 5 full-phase iterations at the stop (quantiles min/median/p90/max).", ""]
    for name, r in results.items():
        L += [f"## {name}", "", "### Per seed", "",
              "| settle_tol | seed | rows | n_iter | phases | n_settled | settled set final from iter | stopped on stability | settled_converged | final change max | cost (full steps on n rows) | wall s | cpu s | move5 min/med/p90/max |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for tol, t in r["tols"].items():
            for s in t["seeds"]:
                L.append(f"| {tol:g} | {s['seed']} | {s['n_rows']} | {s['n_iter']} | {s['phases']} | {s['n_settled']} | "
                         f"{s['settled_at_iter']} | {s['stopped_on_stability']} | {s['settled_converged']} | "
                         f"{s['final_change_max']:.1e} | {s['cost_steps']:.0f} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | "
                         f"{' / '.join(f'{v:.1e}' for v in s['move5_q'])} |")
        L += ["", "### Per settle_tol", ""]
        gt = "gt_found" in next(iter(r["tols"].values()))
        head = "| settle_tol | n_stable (≥0.9) | stable ∧ settled (seed 42) | cost (3 seeds, full steps on n rows) | wall s (3 seeds) | cpu s | kurt median | kurt max |abs| |"
        sep = "|---|---|---|---|---|---|---|---|"
        if gt:
            head += " dark found (seed 42, |cos|>0.9) | dark mean best |cos| | dark found by stable comps | false disc. (all / stable) |"
            sep += "---|---|---|---|"
        L += [head, sep]
        for tol, t in r["tols"].items():
            row = (f"| {tol:g} | {t['n_stable']} | {t['n_stable_and_settled_all']} | {t['cost_total']:.0f} | {t['wall_s_total']:.1f} | {t['cpu_s_total']:.1f} | "
                   f"{t['kurt_median']:.2f} | {t['kurt_max_abs']:.2f} |")
            if gt:
                row += (f" {t['gt_found']}/{t['gt_n_dark']} | {t['gt_mean_max_cos']:.4f} | {t['gt_found_by_stable']}/{t['gt_n_dark']} | "
                        f"{t['gt_false_disc']} / {t['gt_stable_false_disc']} |")
            L.append(row)
        L += ["", "### Seed 42: settle_tol 1e-2 vs tighter (Hungarian match on |cos| of mixing directions)", "",
              "| vs | matched |cos| min/med/p90/max | same, stable components only | matched ≥ 0.99 | settled both / 1e-2 only / tight only | stable both / 1e-2 only / tight only |",
              "|---|---|---|---|---|---|"]
        for tol, o in r["overlap"].items():
            L.append(f"| {tol:g} | {' / '.join(f'{v:.4f}' for v in o['matched_cos_q'])} | {' / '.join(f'{v:.4f}' for v in o['matched_cos_stable_q'])} | {o['n_matched_cos_ge_0.99']} | "
                     f"{o['settled_both']} / {o['settled_base_only']} / {o['settled_tight_only']} | "
                     f"{o['stable_both']} / {o['stable_base_only']} / {o['stable_tight_only']} |")
        for tol, o in r["overlap"].items():
            if o["differ"]:
                L += ["", f"Components whose settled flag differs, 1e-2 vs {tol:g}:", "",
                      "| comp | settled 1e-2 | settled tight | match |cos| | kurt 1e-2 | kurt tight | stab 1e-2 | stab tight |"
                      + (" nearest true |cos| |" if gt else ""), "|---|---|---|---|---|---|---|---|" + ("---|" if gt else "")]
                for d in o["differ"]:
                    L.append(f"| {d['comp']} | {d['settled_base']} | {d['settled_tight']} | {d['match_cos']:.3f} | "
                             f"{d['kurt_base']:.2f} | {d['kurt_tight']:.2f} | {d['stab_base']:.3f} | {d['stab_tight']:.3f} |"
                             + (f" {d['true_cos_base']:.3f} |" if gt else ""))
            if o["stable_differ"]:
                L += ["", f"Components whose stable flag differs, 1e-2 vs {tol:g}:", "",
                      "| comp | stable at 1e-2 | match |cos| | kurt 1e-2 | kurt tight | stab 1e-2 | stab tight |",
                      "|---|---|---|---|---|---|---|"]
                for d in o["stable_differ"]:
                    L.append(f"| {d['comp']} | {d['stable_base']} | {d['match_cos']:.3f} | {d['kurt_base']:.2f} | "
                             f"{d['kurt_tight']:.2f} | {d['stab_base']:.3f} | {d['stab_tight']:.3f} |")
        c = r["control"]
        L += ["", "### Gaussian control (whitened_gaussian, same n, k, seeds; max_iter 200)", "",
              "| settle_tol | seed: n_iter phases n_settled stable-stop cost wall-s cpu-s | n_stable | stability max | kurt max |abs| |",
              "|---|---|---|---|---|"]
        for tol, t in c.items():
            if all(s["reused"] for s in t["seeds"]):
                L.append(f"| {tol:g} | no row ever settled at 1e-2, so the iterates and the stop are identical: same runs as 1e-2 | "
                         f"{t['n_stable']} | {t['stability_max']:.3f} | {t['kurt_max_abs']:.3f} |")
                continue
            seeds = "; ".join(f"{s['seed']}: {s['n_iter']} {s['phases']} {s['n_settled']} {s['stopped_on_stability']} "
                              f"{s['cost_steps']:.0f} {s['wall_s']:.0f} {s['cpu_s']:.0f}" for s in t["seeds"])
            L.append(f"| {tol:g} | {seeds} | {t['n_stable']} | {t['stability_max']:.3f} | {t['kurt_max_abs']:.3f} |")
        L.append("")
    return "\n".join(L)


def main() -> None:
    results = {}
    for name, folder in DATASETS.items():
        print(f"== {name}", flush=True)
        z, white, k = load(folder)
        truth = planted_truth(folder) if name == "planted" else None
        r = analyse(name, z, white, truth)
        r["control"] = control(name, len(z), k, white)
        for t in r["tols"].values():
            t.pop("nearest_true_cos", None)
        results[name] = r
        del z
    (HERE / "results.json").write_text(json.dumps(results, indent=1, default=str))
    notes = HERE / "notes.md"  # hand-written summary of the findings, placed first when present
    (HERE / "report.md").write_text((notes.read_text() + "\n" if notes.exists() else "") + report(results))
    print((HERE / "report.md").read_text())


if __name__ == "__main__":
    main()

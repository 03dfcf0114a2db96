#!/usr/bin/env python
"""ICA side by side: our PyTorch engine, scikit-learn FastICA, python-picard and icalens's
FastICA (the last two when installed), on planted data whose answer is known. Prints a table;
no assertions.

Data (each source column standardised, then mixed by a k × k matrix):
  identifiable   every source Laplace (excess kurtosis 3), random Gaussian mixing;
  residual       30% of sources Bernoulli(0.75)-Gaussian (sparse, excess kurtosis 1), the
                 rest Gaussian, mixed by orthogonal × per-source scale (1 down to 0.3), plus
                 isotropic noise at 10% of the signal variance;
  float32-trap   identifiable sources under an ill-conditioned mixing (condition ~1e4),
                 handed over as float32 (scikit-learn's float32 trap, ../shared/NOTES.md).

Each method gets the raw mixed float data and does its own whitening; "seconds" is the wall
time of whitening + fitting, × is scikit-learn's seconds over the method's. Recovery: for each
non-Gaussian source, the best |cos| of its unmixing direction to any estimated component;
"found" = |cos| ≥ 0.99. Time to recovery: the wall time (from the start, whitening included)
of the first iterate after which every non-Gaussian source stays found. It comes from a
per-iterate trace (the engine's callback, icalens's checkpoint callback, and for scikit-learn a
wrapper around ``_sym_decorrelation``, which ``_ica_par`` calls once per iteration); picard
exposes none, so its time to recovery is its total time when its result recovers. Every run is
its own process, so its peak RAM (VmHWM) is its own.

picard and icalens are optional: ``pip install python-picard==0.8`` and
``pip install --no-deps icalens==0.4.0`` (icalens pins transformers==5.14.1; its FastICA module
needs only torch and tqdm and is loaded by file).

    python benchmarks/bench_ica.py --sizes 100000 --ks 50,100 --data identifiable,residual
    python benchmarks/bench_ica.py --sizes 1000000 --ks 100 --data residual   # the issue-4 target
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import warnings

import numpy as np

METHODS = ("engine", "sklearn", "picard", "icalens")


def make_data(kind: str, n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X: float[n, k] mixed data, A: float64[k, k] mixing, nongauss: int[] ids of non-Gaussian sources)."""
    rng = np.random.default_rng([seed, n, k, 17])
    if kind in ("identifiable", "float32-trap"):
        S = rng.laplace(size=(n, k))
        nongauss = np.arange(k)
    elif kind == "residual":
        m = int(round(0.3 * k))
        S = rng.standard_normal((n, k))
        S[:, :m] *= rng.random((n, m)) < 0.75
        nongauss = np.arange(m)
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    S = (S - S.mean(0)) / S.std(0)
    A = rng.standard_normal((k, k))
    if kind == "residual":
        # orthogonal × per-source scale (1 down to 0.3): isotropic noise then stays an independent
        # per-source term and every non-Gaussian source stays identifiable. Under a general random
        # mixing (condition ~10³) the noise bends the true directions until two of them overlap at
        # 0.9997 in whitened space, and no orthogonal ICA can pass 0.89 (checked from an oracle start).
        q, _ = np.linalg.qr(A)
        A = q * rng.permutation(np.geomspace(1.0, 0.3, k))
    if kind == "float32-trap":
        u, _, vt = np.linalg.svd(A)
        A = u @ np.diag(np.geomspace(1.0, 1e-2, k)) @ vt  # covariance condition number 1e4
    X = S @ A.T
    if kind == "residual":
        X += np.sqrt(0.1 * X.var(0).mean()) * rng.standard_normal((n, k))
    return (X.astype(np.float32) if kind == "float32-trap" else X), A, nongauss


def recovery(unmixing_in_x: np.ndarray, A: np.ndarray, nongauss: np.ndarray) -> np.ndarray:
    """Per non-Gaussian source, the best |cos| between its true and any estimated component.

    Compared as rows of the global system W A (rows ≈ scaled unit vectors when separated)."""
    G = unmixing_in_x @ A  # [k_est, k]: estimated source = G @ true sources
    G = G / np.linalg.norm(G, axis=1, keepdims=True)
    return np.abs(G[:, nongauss]).max(0)


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _eigh_whitener(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, whitener float64[k, k]) from the float64 covariance (eigendecomposition)."""
    mean = X.mean(0, dtype=np.float64)
    C = np.zeros((X.shape[1],) * 2)
    for s in range(0, len(X), 65536):
        c = np.asarray(X[s:s + 65536], dtype=np.float64) - mean
        C += c.T @ c
    vals, vecs = np.linalg.eigh(C / len(X))
    return mean, (vecs / np.sqrt(vals)).T


def _icalens_fastica():
    """icalens's private FastICA module, loaded by file so that icalens's package imports (which
    pin transformers==5.14.1) are not needed."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("icalens")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("icalens is not installed (pip install --no-deps icalens==0.4.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "_fastica.py"
    mod_spec = importlib.util.spec_from_file_location("icalens_fastica", path)
    mod = importlib.util.module_from_spec(mod_spec)
    sys.modules["icalens_fastica"] = mod  # dataclasses look their module up there
    mod_spec.loader.exec_module(mod)
    return mod


def time_to_recovery(trace: list[tuple[float, np.ndarray]], A: np.ndarray, nongauss: np.ndarray
                     ) -> tuple[float | None, int | None]:
    """(seconds, iterate number) of the first iterate whose unmixing finds every non-Gaussian
    source at |cos| ≥ 0.99 and keeps doing so to the end; (None, None) if none does.

    trace: (seconds since the start, unmixing in data space: float[k, k]) per iterate."""
    ok = [bool((recovery(U, A, nongauss) >= 0.99).all()) for _, U in trace]
    first = None
    for i in range(len(ok) - 1, -1, -1):
        if not ok[i]:
            break
        first = i
    return (trace[first][0], first + 1) if first is not None else (None, None)


def run_one(method: str, kind: str, n: int, k: int, max_iter: int, device: str, queue) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    X, A, nongauss = make_data(kind, n, k)
    base = _peak_mb()
    trace: list[tuple[float, np.ndarray]] = []  # (seconds since start, unmixing in data space)
    t = time.perf_counter()
    info: dict = {}
    if method == "engine":
        from darkmatter.analysis.ica_engine import fastica_torch

        mean, Wh = _eigh_whitener(X)
        z = np.empty((n, k), dtype=np.float32)  # whitened in chunks: no n × k float64 temporary
        for s in range(0, n, 65536):
            z[s:s + 65536] = (np.asarray(X[s:s + 65536], dtype=np.float64) - mean) @ Wh.T
        fit = fastica_torch(z, seed=0, max_iter=max_iter, device=device,
                            callback=lambda ph, it, W: trace.append((time.perf_counter() - t, W @ Wh)))
        U = fit.W @ Wh
        info = {"iterations": f"{fit.n_iter} ({', '.join(f'{v} {p}' for p, v in fit.phases.items())})",
                "converged": fit.converged,
                "note": (f"stopped on stability, {fit.n_settled} settled"
                         f"{' and converged' if fit.settled_converged else ''}") if fit.stopped_on_stability else ""}
    elif method == "sklearn":
        import sklearn.decomposition._fastica as skf
        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning

        raw = []
        orig = skf._sym_decorrelation

        def hook(W):  # called once per iteration by _ica_par (and once on w_init)
            out = orig(W)
            raw.append((time.perf_counter() - t, out.copy()))
            return out

        skf._sym_decorrelation = hook
        est = FastICA(n_components=k, algorithm="parallel", fun="logcosh", whiten="unit-variance",
                      whiten_solver="eigh", max_iter=max_iter, tol=1e-6, random_state=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(X.astype(np.float64) if kind != "float32-trap" else X)
        skf._sym_decorrelation = orig
        U = est.components_
        trace = [(s, W @ est.whitening_) for s, W in raw[1:]]
        info = {"iterations": int(est.n_iter_),
                "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught)}
    elif method == "picard":
        from picard import picard

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            K, W, _, n_iter = picard(X.T.astype(np.float64), n_components=k, ortho=True, extended=True,
                                     max_iter=max_iter, tol=1e-6, random_state=0, return_n_iter=True)
        U = W @ K
        info = {"iterations": int(n_iter), "converged": not any("converge" in str(w.message) for w in caught),
                "note": "no per-iterate trace: time to recovery = total if recovered"}
    elif method == "icalens":
        icf = _icalens_fastica()
        Xt = torch.as_tensor(X)

        def checkpoint(it, unmixing, whitening, center):
            if it > 0:
                trace.append((time.perf_counter() - t, (unmixing @ whitening).double().cpu().numpy()))

        res = icf.fit_fastica(Xt, n_components=k, algorithm="parallel", fun="logcosh", max_iter=max_iter,
                              random_state=0, device=device, batch_size=16384, row_normalize=False,
                              objective_every=max_iter, checkpoint_callback=checkpoint)
        U = res.components.double().cpu().numpy()
        info = {"iterations": int(res.n_iter), "converged": False,
                "note": "icalens has no tolerance: always max_iter"}
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t
    r = recovery(np.asarray(U, dtype=np.float64), A, nongauss)
    if method == "picard":
        ttr, it_r = (seconds, info["iterations"]) if (r >= 0.99).all() else (None, None)
    else:
        ttr, it_r = time_to_recovery(trace, A, nongauss)
    queue.put({"method": method, "data": kind, "n": n, "k": k, "seconds": seconds,
               "min_cos": float(r.min()), "found": int((r >= 0.99).sum()), "n_sources": len(nongauss),
               "peak_mb": _peak_mb(), "data_mb": base, "ttr": ttr, "ttr_iter": it_r, "device": device, **info})


def run(method: str, kind: str, n: int, k: int, max_iter: int, device: str, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=run_one, args=(method, kind, n, k, max_iter, device, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.terminate()
        return {"method": method, "data": kind, "n": n, "k": k, "error": f"over {timeout:.0f} s"}
    if p.exitcode != 0 or q.empty():
        return {"method": method, "data": kind, "n": n, "k": k, "error": f"failed (exit {p.exitcode})"}
    return q.get()


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--ks", default="50,100,200")
    ap.add_argument("--data", default="identifiable,residual,float32-trap")
    ap.add_argument("--methods", default="sklearn,engine,picard,icalens",
                    help="sklearn first: the ratios refer to it")
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--device", default="cpu", help="torch device of the engine and icalens (cpu, cuda)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--json", help="also write every row to this JSON file")
    args = ap.parse_args()
    rows = []
    print("| data | N | k | method | seconds | × | time to recovery s (iterate) | × | iterations | converged | "
          "found (cos ≥ 0.99) | min cos | peak RAM MB (data alone) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.data.split(","):
        for n in map(int, args.sizes.split(",")):
            for k in map(int, args.ks.split(",")):
                sk: dict = {}
                for method in args.methods.split(","):
                    r = run(method, kind, n, k, args.max_iter, args.device, args.timeout)
                    rows.append(r)
                    if "error" in r:
                        print(f"| {kind} | {n:,} | {k} | {method} | {r['error']} | | | | | | | | |", flush=True)
                        continue
                    if method == "sklearn":
                        sk = r
                    x_total = (f"{sk['seconds'] / r['seconds']:.1f}" if sk and method != "sklearn" else "")
                    x_ttr = (f"{sk['ttr'] / r['ttr']:.1f}" if sk.get("ttr") and r["ttr"] and method != "sklearn"
                             else "")
                    ttr = "—" if r["ttr"] is None else f"{r['ttr']:.1f} ({r['ttr_iter']})"
                    print(f"| {kind} | {n:,} | {k} | {method} | {r['seconds']:.1f} | {x_total} | {ttr} | {x_ttr} | "
                          f"{r['iterations']} | {r['converged']}{'; ' + r['note'] if r.get('note') else ''} | "
                          f"{r['found']}/{r['n_sources']} | {r['min_cos']:.4f} | "
                          f"{r['peak_mb']:.0f} ({r['data_mb']:.0f}) |",
                          flush=True)
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

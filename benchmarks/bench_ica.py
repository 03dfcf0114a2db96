#!/usr/bin/env python
"""ICA side by side: our PyTorch engine, scikit-learn FastICA and python-picard (and icalens
if it is installed), on planted data whose answer is known. Prints a table; no assertions.

Data (each source column standardised, then mixed by a random k × k matrix):
  identifiable   every source Laplace (excess kurtosis 3);
  residual       30% of sources Bernoulli(0.75)-Gaussian (sparse, excess kurtosis 1), the
                 rest Gaussian, plus isotropic noise at 10% of the signal variance;
  float32-trap   identifiable sources under an ill-conditioned mixing (condition ~1e4),
                 handed over as float32 (scikit-learn's float32 trap, ../shared/NOTES.md).

Each method gets the raw mixed float data and does its own whitening; the time is the wall
time of whitening + fitting. Recovery: for each non-Gaussian source, the best |cos| of its
unmixing direction in whitened space to any estimated component; "found" = |cos| ≥ 0.99.
Every run is its own process, so its peak RAM (VmHWM) is its own.

    python benchmarks/bench_ica.py --sizes 100000 --ks 50,100 --data identifiable,residual
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
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
        c = X[s:s + 65536].astype(np.float64) - mean
        C += c.T @ c
    vals, vecs = np.linalg.eigh(C / len(X))
    return mean, (vecs / np.sqrt(vals)).T


def run_one(method: str, kind: str, n: int, k: int, max_iter: int, queue) -> None:
    import torch

    torch.set_num_threads(2)
    X, A, nongauss = make_data(kind, n, k)
    base = _peak_mb()
    t = time.perf_counter()
    info: dict = {}
    if method == "engine":
        from darkmatter.ica_engine import fastica_torch

        mean, Wh = _eigh_whitener(X)
        z = ((X - mean) @ Wh.T).astype(np.float32)
        fit = fastica_torch(z, seed=0, max_iter=max_iter)
        U = fit.W @ Wh
        info = {"iterations": fit.n_iter, "converged": fit.converged,
                "note": f"stopped on stability ({fit.n_settled} settled)" if fit.stopped_on_stability else ""}
    elif method == "sklearn":
        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning

        est = FastICA(n_components=k, algorithm="parallel", fun="logcosh", whiten="unit-variance",
                      whiten_solver="eigh", max_iter=max_iter, tol=1e-6, random_state=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(X)
        U = est.components_
        info = {"iterations": int(est.n_iter_),
                "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught)}
    elif method == "picard":
        from picard import picard

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            K, W, _, n_iter = picard(X.T.astype(np.float64), n_components=k, ortho=True, extended=True,
                                     max_iter=max_iter, tol=1e-6, random_state=0, return_n_iter=True)
        U = W @ K
        info = {"iterations": int(n_iter), "converged": not any("converge" in str(w.message) for w in caught)}
    elif method == "icalens":
        import icalens  # noqa: F401  (API not checked here: reported as unavailable if it fails)

        raise RuntimeError("icalens FastICA call not wired")
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t
    r = recovery(np.asarray(U, dtype=np.float64), A, nongauss)
    queue.put({"method": method, "data": kind, "n": n, "k": k, "seconds": seconds,
               "min_cos": float(r.min()), "found": int((r >= 0.99).sum()), "n_sources": len(nongauss),
               "peak_mb": _peak_mb(), "data_mb": base, **info})


def run(method: str, kind: str, n: int, k: int, max_iter: int, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=run_one, args=(method, kind, n, k, max_iter, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.terminate()
        return {"method": method, "data": kind, "n": n, "k": k, "error": f"over {timeout:.0f} s"}
    if p.exitcode != 0 or q.empty():
        return {"method": method, "data": kind, "n": n, "k": k, "error": f"failed (exit {p.exitcode})"}
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--ks", default="50,100,200")
    ap.add_argument("--data", default="identifiable,residual,float32-trap")
    ap.add_argument("--methods", default="sklearn,engine,picard", help="sklearn first: the ratios refer to it")
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = ap.parse_args()
    rows = []
    print("| data | N | k | method | seconds | × vs sklearn | iterations | converged | found (cos ≥ 0.99) | "
          "min cos | peak RAM MB (data alone) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.data.split(","):
        for n in map(int, args.sizes.split(",")):
            for k in map(int, args.ks.split(",")):
                sk = None
                for method in args.methods.split(","):
                    r = run(method, kind, n, k, args.max_iter, args.timeout)
                    rows.append(r)
                    if method == "sklearn" and "seconds" in r:
                        sk = r["seconds"]
                    if "error" in r:
                        print(f"| {kind} | {n:,} | {k} | {method} | {r['error']} | | | | | | |", flush=True)
                        continue
                    ratio = f"{sk / r['seconds']:.1f}" if sk and method != "sklearn" else ""
                    print(f"| {kind} | {n:,} | {k} | {method} | {r['seconds']:.1f} | {ratio} | {r['iterations']} | "
                          f"{r['converged']}{' ' + r['note'] if r.get('note') else ''} | "
                          f"{r['found']}/{r['n_sources']} | {r['min_cos']:.4f} | {r['peak_mb']:.0f} ({r['data_mb']:.0f}) |",
                          flush=True)


if __name__ == "__main__":
    main()

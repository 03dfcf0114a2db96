"""The PyTorch FastICA engine: same estimator as scikit-learn's parallel FastICA, plus a
stopping rule for data with a Gaussian subspace."""

import numpy as np
import pytest
import torch

from darkmatter.analysis import ica, ica_engine


def whitened_mixture(n, k, n_laplace, seed=0):
    """z: float64[n, k] whitened mixture; truth: float64[n_laplace, k] unit unmixing rows of the
    Laplace sources in whitened space (the rest of the sources are Gaussian)."""
    rng = np.random.default_rng(seed)
    S = np.concatenate([rng.laplace(size=(n, n_laplace)), rng.standard_normal((n, k - n_laplace))], axis=1)
    A = rng.standard_normal((k, k))
    X = S @ A.T
    X -= X.mean(0)
    vals, vecs = np.linalg.eigh(X.T @ X / n)
    Z = X @ (vecs / np.sqrt(vals))
    M = (vecs / np.sqrt(vals)).T @ A  # z = S @ M.T; column j is source j's direction in z
    truth = (M / np.linalg.norm(M, axis=0)).T[:n_laplace]
    return Z, truth


def recovered(W, truth):
    return np.abs(W @ truth.T).max(0)  # per true source, the best |cos| to any row of W


def test_matches_scikit_learn_on_identifiable_data():
    z, truth = whitened_mixture(40_000, 12, 12)
    fit = ica_engine.fastica_torch(z, seed=0)
    ref = ica.fastica(z, seed=0)
    assert fit.converged and fit.n_settled == 12
    assert recovered(fit.W, truth).min() > 0.99
    _, cos = ica.match(fit.W, ref.W)
    assert cos.min() >= 0.99
    np.testing.assert_allclose(fit.W @ fit.W.T, np.eye(12), atol=1e-8)


def test_stops_once_the_identifiable_components_are_stable():
    z, truth = whitened_mixture(60_000, 24, 8)
    seen = []
    fit = ica_engine.fastica_torch(z, seed=1, max_iter=300, callback=lambda ph, it, W: seen.append(ph))
    assert not fit.converged and fit.stopped_on_stability
    assert fit.phases["full"] < 100 and fit.n_iter < 300
    assert fit.n_settled == 8 and fit.settled.sum() == 8
    assert fit.settled_converged and fit.final_change[fit.settled].max() < 1e-6  # the refine met tol
    assert seen.count("full") == fit.phases["full"] and seen.count("refine") == fit.phases["refine"]
    assert recovered(fit.W, truth).min() > 0.99
    assert recovered(fit.W[fit.settled], truth).min() > 0.99  # the settled rows are the Laplace sources
    np.testing.assert_allclose(fit.W @ fit.W.T, np.eye(24), atol=1e-8)
    ref = ica.fastica(z, seed=1, max_iter=300)
    assert not ref.converged  # scikit-learn runs to its cap on the same data


def test_float32_products_agree_with_float64():
    z, truth = whitened_mixture(30_000, 10, 10, seed=2)
    f32 = ica_engine.fastica_torch(z, seed=3, dtype=torch.float32)
    f64 = ica_engine.fastica_torch(z, seed=3, dtype=torch.float64)
    _, cos = ica.match(f32.W, f64.W)
    assert cos.min() > 0.999
    assert recovered(f32.W, truth).min() > 0.99


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n ≥ k"):
        ica_engine.fastica_torch(np.zeros((3, 5)), seed=0)


def test_float32_ill_conditioned_input_does_not_fail_silently():
    """The float32 trap (../shared/NOTES.md): float32 data under a covariance of condition ~1e4.
    The pipeline's path (float64 streamed covariance → whitening → float32 engine) recovers
    every source; the whitened data may be float32, the covariance may not."""
    from darkmatter.analysis import stats

    rng = np.random.default_rng(7)
    n, k = 200_000, 16
    S = rng.laplace(size=(n, k))
    u, _, vt = np.linalg.svd(rng.standard_normal((k, k)))
    A = u @ np.diag(np.geomspace(1.0, 1e-2, k)) @ vt  # covariance condition number 1e4
    X = (S @ A.T + 5.0).astype(np.float32)  # an offset too, as real residuals have
    m = stats.streaming_moments(X, chunk_size=32768)
    pca = stats.pca_from_cov(m.cov)
    white = ica.pca_whitening(pca, m.mean, k)
    z = ica.whiten_rows(X, white, chunk_size=32768)
    np.testing.assert_allclose(np.cov(z[:50_000].T), np.eye(k), atol=0.05)
    fit = ica_engine.fastica_torch(z, seed=0)
    G = (fit.W @ white.whitener) @ A  # global system: rows ∝ unit vectors when separated
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    assert fit.converged
    assert np.abs(G).max(0).min() > 0.99


def _laplace(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    z = rng.laplace(size=(n, k)) @ q
    return ((z - z.mean(0)) / z.std(0)).astype(np.float32)


def test_a_gathered_shard_takes_the_same_steps():
    """Chunks gathered once (a subset of rows, the first k columns) give bit-identical updates."""
    z = _laplace(40_000, 10, 0)
    rows = np.sort(np.random.default_rng(1).choice(len(z), 17_000, replace=False))
    shard = ica_engine.RowShard(torch.as_tensor(z), n_rows=len(z), chunk=4096).restrict(rows).columns(6)
    gathered = shard.gathered()
    assert gathered.cached is not None and shard.cached is None
    W = ica_engine._sym_decorrelate(torch.as_tensor(np.random.default_rng(2).standard_normal((6, 6))))
    assert torch.equal(ica_engine._update(shard, W), ica_engine._update(gathered, W))
    assert shard.gathered(max_bytes=1000).cached is None  # too big to copy: left streamed


def test_restarts_side_by_side_are_the_sequential_fits(monkeypatch):
    """fit_seeds on two threads (one intra-op thread each) gives the fits one process makes alone."""
    from darkmatter import threads

    z = _laplace(30_000, 8, 3)
    restarts = [np.arange(0, 30_000, 2), np.arange(1, 30_000, 2)]
    torch.set_num_threads(2)
    side = ica.fit_seeds(z, [42, 43, 44], 200, 1e-6, restarts)
    assert torch.get_num_threads() == 2  # restored after the pool
    monkeypatch.setattr(threads, "fit_workers", lambda tasks: 1)
    alone = ica.fit_seeds(z, [42, 43, 44], 200, 1e-6, restarts)
    for a, b in zip(side, alone):
        assert a.n_iter == b.n_iter
        assert np.abs((a.W * b.W).sum(1)).min() > 1 - 1e-6
    assert all(f.converged for f in side)


def test_threads_follow_the_usable_cpus(monkeypatch):
    import os

    from darkmatter import threads

    usable = threads.usable_cpus()
    assert 1 <= usable <= len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * usable))
        assert threads.configure() == 1  # more ranks on this machine than CPUs: one thread each
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert threads.configure() == 3 == torch.get_num_threads()  # the user's (or torchrun's) setting wins
    finally:
        torch.set_num_threads(before)

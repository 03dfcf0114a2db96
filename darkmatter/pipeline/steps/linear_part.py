"""Step 07's linear/nonlinear split (Engels et al. 2024) on the run's arrays.

The map from x to the residual is fitted on one half of the documents and scored on the other
(:mod:`darkmatter.analysis.linear_split`); the nonlinear part r − [x, 1] @ W is decomposed with the
same k (or its rank, if lower), seeds, restarts and optimisation as step 04, through a lazy view
(no n × d_model copy), and
each residual component is placed in the linear part, the nonlinear part, both or neither.
"""

from __future__ import annotations

import numpy as np

from darkmatter.analysis import ica, linear_split, resampling, stats
from darkmatter.analysis.decompose import decompose
from darkmatter.pipeline.context import StepContext
from darkmatter.pipeline.results import ComponentLinearity, ICAResult, LinearSplitResult


class NonlinearView:
    """A lazy float32[n, d_model] view of r − [x, 1] @ W (row slices or sorted index arrays)."""

    def __init__(self, x: np.ndarray, r: np.ndarray, W: np.ndarray):
        self.x, self.r, self.W = x, r, W
        self.shape = r.shape

    def __getitem__(self, rows) -> np.ndarray:
        x = np.asarray(self.x[rows], dtype=np.float64)
        pred = np.hstack([x, np.ones((len(x), 1))]) @ self.W[:, :x.shape[1]]
        return (np.asarray(self.r[rows], dtype=np.float64) - pred).astype(np.float32)


def split(ctx: StepContext, ica_result: ICAResult, x: np.ndarray, r: np.ndarray) -> LinearSplitResult:
    """The split, its per-band figures, the nonlinear part's ICA and each component's place.

    Args:
        x, r: float32[n, d_model] activations and residuals (memmaps).
    """
    store, cfg, i = ctx.store, ctx.cfg, ctx.cfg.ica
    chunk = max(cfg.run.sae_chunk_size, 16384)
    units, unit = ctx.units()
    train, test = resampling.restart_rows(units, 2, 0.5, cfg.source.seed + 7)
    W = linear_split.fit_linear(x, r, train, chunk)
    unmixing = store.load_npy("ica_unmixing.npy", mmap=False)
    result = linear_split.evaluate_linear(x, r, test, W, store.load_npy("pca_components.npy", mmap=False),
                                          len(train), readouts=unmixing, chunk_size=chunk)
    view = NonlinearView(x, r, W)
    m = stats.streaming_moments(view, chunk)  # type: ignore[arg-type]
    assert m.cov is not None
    k = ica_result.k
    pca = stats.pca_from_cov(m.cov)
    # the linear map can remove whole directions: the nonlinear part may have a lower rank than k
    k_nl = min(k, int((pca.eigenvalues > 1e-12 * pca.eigenvalues[0]).sum()))
    white = ica.pca_whitening(pca, m.mean, k_nl)
    z = ica.whiten_rows(view, white, None, chunk)  # type: ignore[arg-type]
    seeds = [f.seed for f in ica_result.seeds]
    restarts = resampling.restart_rows(units, len(seeds) - 1, ica_result.restart_resample, cfg.source.seed)
    dec = decompose(z, white, seeds, i.ica_max_iter, i.ica_tol, restarts, i.ica_backend, ctx.device,
                    stable_cos=i.stable_cos, stable_frequency=i.stable_frequency)
    # each residual component's best |cos| to the nonlinear part's components
    match = np.abs(store.load_npy("ica_directions.npy", mmap=False).astype(np.float64) @ dec.directions.T).max(1)
    places = linear_split.lives_in(np.array(result.readout_variance_predicted), match)
    return LinearSplitResult(
        split=result, unit=unit, n_units=int(len(np.unique(units))), k=k, nonlinear_k=k_nl,
        nonlinear_n_stable=dec.n_stable,
        counts={p: places.count(p) for p in ("linear", "nonlinear", "both", "neither")},
        components=[ComponentLinearity(component=c, linear_share=float(result.readout_variance_predicted[c]),
                                       nonlinear_match=float(match[c]), lives_in=places[c]) for c in range(k)])

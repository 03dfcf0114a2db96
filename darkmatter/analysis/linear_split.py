"""The linear/nonlinear split of an SAE's residual (Engels et al. 2024, "Decomposing the Dark
Matter of Sparse Autoencoders").

A least-squares linear map with bias from the activation x to the residual r = x − SAE(x) is fitted
on one half of the documents and evaluated on the other. What it predicts is the *linear* part of
the dark matter (which a wider or better-trained SAE could in principle learn); r minus its
prediction is the *nonlinear* part. Engels et al. find about half of SAE error linearly predictable.

Everything streams in row chunks: the normal equations are (d_model + 1)² sums, and the test
statistics are per-principal-component sums, so no n × d_model array beyond the inputs exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Principal-component bands of the residual the split is reported in (upper bounds, exclusive).
BANDS = (10, 50, 100, 200, 400)


def _design(x: np.ndarray) -> np.ndarray:
    return np.hstack([np.asarray(x, dtype=np.float64), np.ones((len(x), 1))])


def fit_linear(x: np.ndarray, r: np.ndarray, rows: np.ndarray, chunk_size: int = 16384,
               ridge: float = 1e-8) -> np.ndarray:
    """Least-squares map with bias from x to [r, ‖r‖] on ``rows``.

    Args:
        x: float[n, d_model] activations; r: float[n, d_model] residuals (memmaps are fine).
        rows: int[m] sorted training rows (one half of the documents).
        ridge: relative Tikhonov term (× mean diagonal of XᵀX), for numerical safety only.
    Returns:
        float64[d_model + 1, d_model + 1]: predict [r, ‖r‖] as [x, 1] @ W.
    Raises:
        ValueError: shapes differ or fewer rows than parameters.
    """
    if x.shape != r.shape:
        raise ValueError(f"activations {x.shape} and residuals {r.shape} differ")
    d = x.shape[1]
    if len(rows) <= d + 1:
        raise ValueError(f"{len(rows)} training rows cannot fit {d + 1} parameters per output")
    A = np.zeros((d + 1, d + 1))
    B = np.zeros((d + 1, d + 1))
    for s in range(0, len(rows), chunk_size):
        idx = rows[s:s + chunk_size]
        X = _design(x[idx])
        R = np.asarray(r[idx], dtype=np.float64)
        A += X.T @ X
        B += X.T @ np.hstack([R, np.linalg.norm(R, axis=1, keepdims=True)])
    A += ridge * np.trace(A) / (d + 1) * np.eye(d + 1)
    return np.linalg.solve(A, B)


@dataclass(frozen=True)
class LinearSplit:
    """How much of the residual a linear map from x predicts, on held-out documents.

    Attributes:
        n_train, n_test: rows of the two document halves.
        variance_predicted: 1 − Σ‖r − r̂‖² / Σ‖r − mean(r)‖² on the test half.
        norm_predicted: R² of the ‖r‖ prediction on the test half.
        bands: principal-component bands of the residual, as "first-last" (1-based) labels.
        band_variance_predicted: the variance share predicted within each band.
        band_variance_share: each band's share of the residual's variance (test half).
        readout_variance_predicted: per extra readout direction (e.g. each ICA component's unmixing
            row): the share of its source's variance the map predicts.
    """

    n_train: int
    n_test: int
    variance_predicted: float
    norm_predicted: float
    bands: list[str]
    band_variance_predicted: list[float]
    band_variance_share: list[float]
    readout_variance_predicted: list[float]


def evaluate_linear(x: np.ndarray, r: np.ndarray, rows: np.ndarray, W: np.ndarray, components: np.ndarray,
                    n_train: int, readouts: np.ndarray | None = None, chunk_size: int = 16384,
                    bands: tuple[int, ...] = BANDS) -> LinearSplit:
    """Score :func:`fit_linear`'s map on held-out ``rows``.

    Args:
        x, r: float[n, d_model]; rows: int[m] sorted test rows; W: from :func:`fit_linear`.
        components: float[d_model, d_model] principal components of the residual (rows), for the bands.
        n_train: rows the map was fitted on (recorded).
        readouts: float[k, d_model] extra directions u whose source r·u is scored too.
    Returns:
        LinearSplit.
    """
    d = x.shape[1]
    extra = np.zeros((0, d)) if readouts is None else np.asarray(readouts, dtype=np.float64)
    comps = np.vstack([np.asarray(components, dtype=np.float64)[:d], extra])
    s_rr = np.zeros(len(comps))  # Σ (r·u)² per direction u
    s_r_u = np.zeros(len(comps))
    s_ee = np.zeros(len(comps))  # Σ (e·u)²
    norm_sum = norm_sq = norm_err = 0.0
    m = 0
    for s in range(0, len(rows), chunk_size):
        idx = rows[s:s + chunk_size]
        R = np.asarray(r[idx], dtype=np.float64)
        P = _design(x[idx]) @ W
        E = R - P[:, :d]
        Ru, Eu = R @ comps.T, E @ comps.T
        s_r_u += Ru.sum(0)
        s_rr += (Ru ** 2).sum(0)
        s_ee += (Eu ** 2).sum(0)
        norms = np.linalg.norm(R, axis=1)
        norm_sum += float(norms.sum())
        norm_sq += float((norms ** 2).sum())
        norm_err += float(((norms - P[:, d]) ** 2).sum())
        m += len(idx)
    var_all = s_rr - s_r_u ** 2 / m  # per direction, centred
    err_all = s_ee  # the map has a bias: errors are (nearly) centred on held-out data too
    var_r, err = var_all[:d], err_all[:d]
    edges = [0, *[b for b in bands if b < d], d]
    labels, pred, share = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        labels.append(f"{lo + 1}-{hi}")
        pred.append(float(1 - err[lo:hi].sum() / var_r[lo:hi].sum()))
        share.append(float(var_r[lo:hi].sum() / var_r.sum()))
    return LinearSplit(n_train=int(n_train), n_test=int(m), variance_predicted=float(1 - err.sum() / var_r.sum()),
                       norm_predicted=float(1 - norm_err / (norm_sq - norm_sum ** 2 / m)), bands=labels,
                       band_variance_predicted=pred, band_variance_share=share,
                       readout_variance_predicted=(1 - err_all[d:] / var_all[d:]).tolist())


def nonlinear_rows(x: np.ndarray, r: np.ndarray, W: np.ndarray, out: np.ndarray, chunk_size: int = 16384) -> None:
    """Fill ``out`` (float32[n, d_model], e.g. a memmap) with the nonlinear part r − [x, 1] @ W."""
    d = x.shape[1]
    for s in range(0, x.shape[0], chunk_size):
        out[s:s + chunk_size] = np.asarray(r[s:s + chunk_size], dtype=np.float64) - (_design(x[s:s + chunk_size])
                                                                                      @ W)[:, :d]


def lives_in(linear_share: np.ndarray, nonlinear_match: np.ndarray, match_cos: float = 0.9,
             share: float = 0.5) -> list[str]:
    """Where each residual component lives.

    Args:
        linear_share: float[k] share of its source's variance the linear map predicts (held out).
        nonlinear_match: float[k] its largest |cos| to the ICA components of the nonlinear part.
    Returns:
        per component ``"linear"`` (mostly predicted, gone from the nonlinear part), ``"nonlinear"``
        (reappears in the nonlinear part, mostly unpredicted), ``"both"`` (reappears, yet mostly
        predicted) or ``"neither"`` (neither: typically an unstable component).
    """
    out = []
    for a, b in zip(linear_share, nonlinear_match):
        lin, non = a >= share, b >= match_cos
        out.append("both" if lin and non else "linear" if lin else "nonlinear" if non else "neither")
    return out

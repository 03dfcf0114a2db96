"""Everything step 04 measures at one k: the decomposition, the matched Gaussian control, and each
component's excess kurtosis against the noise floor.

The k sweep (:func:`darkmatter.analysis.decompose.sweep_ks`) calls :func:`fit_k` once per k on the
leading k columns of one whitened array (PCA whitening is nested: the top-k whitened data are the
first k columns of the top-K whitened data), and :func:`darkmatter.analysis.decompose.choose_k`
picks the default from the counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from darkmatter.analysis import ica
from darkmatter.analysis.candidates import ALPHA, FloorTest, noise_floor_test
from darkmatter.analysis.decompose import Decomposition, decompose
from darkmatter.analysis.ica_engine import RowShard
from darkmatter.analysis.resampling import design_effect
from darkmatter.analysis.stats import PCA
from darkmatter.distributed import SINGLE


@dataclass(frozen=True)
class KFit:
    """One k of the sweep.

    Attributes:
        decomposition: the real components (ordered, signed, stability, settled).
        control: FastICA on the matched Gaussian surrogate (None when switched off).
        floor: each component's excess kurtosis against the control's largest.
        design_effect: Kish's design effect of source kurtosis (document-block vs token bootstrap
            variance, median over components); n / design_effect is the effective sample size.
        kurtosis_se: float[k] block-bootstrap standard error of each source's excess kurtosis.
        seconds_fit, seconds_control: wall time of the restarts and of the control.
    """

    decomposition: Decomposition
    control: ica.ControlResult | None
    floor: FloorTest
    design_effect: float
    kurtosis_se: np.ndarray
    seconds_fit: float
    seconds_control: float

    @property
    def k(self) -> int:
        return self.decomposition.k

    def stable(self, stable_cos: float) -> np.ndarray:
        """bool[k]: matched |cos| ≥ ``stable_cos`` in every restart."""
        return self.decomposition.stability >= stable_cos

    def n_reproducible(self, stable_cos: float) -> int:
        """Components that are settled, stable across document halves and above the noise floor: the
        count the sweep maximises."""
        return int((self.stable(stable_cos) & self.floor.above & self.decomposition.settled).sum())


def fit_k(z_top: ica.Rows, pca: PCA, mean: np.ndarray, k: int, seeds: list[int], units: np.ndarray,
          restarts: list[np.ndarray], max_iter: int, tol: float, backend: str = "torch", device: str = "cpu",
          control: bool = True, progress: ica.Progress | None = None,
          control_progress: ica.Progress | None = None, alpha: float = ALPHA,
          scratch: Callable[[tuple[int, int]], np.ndarray] | None = None) -> KFit:
    """Decompose the top-k whitened residual, run the matched control, test each source's kurtosis.

    Args:
        z_top: float[n, K ≥ k] whitened rows at the sweep's largest K (its first k columns are used):
            an array, or a :class:`~darkmatter.analysis.ica_engine.RowShard` (streamed from disk, or
            this rank's rows of a sharded run; the control is then laid out the same way).
        pca, mean: the residual's PCA and mean (float64[d_model]) for the k-whitening.
        units: int[n] document (or window) of each row, for the block bootstrap.
        restarts: row sets of the later seeds (:func:`darkmatter.analysis.resampling.restart_rows`);
            the control uses the same ones.
        control: run the Gaussian control; without it the floor is 0 (a Gaussian's excess kurtosis).
        scratch: where the control's surrogate rows go (see :func:`darkmatter.analysis.ica.gaussian_control`).
    Returns:
        KFit.
    Raises:
        ValueError: k exceeds z_top's width or the residual's rank.
    """
    if k > z_top.shape[1]:
        raise ValueError(f"k = {k} exceeds the {z_top.shape[1]} whitened columns")
    white = ica.pca_whitening(pca, mean, k)
    z: ica.Rows = z_top.columns(k) if isinstance(z_top, RowShard) else np.ascontiguousarray(z_top[:, :k])
    shard = z if isinstance(z, RowShard) else None
    t0 = time.perf_counter()
    dec = decompose(z, white, seeds, max_iter, tol, restarts, backend, device, progress)
    t1 = time.perf_counter()
    ctrl = (ica.gaussian_control(ica.n_rows(z), k, seeds, max_iter, tol, white, restarts, backend, device,
                                 control_progress, like=shard, scratch=scratch) if control else None)
    t2 = time.perf_counter()
    deff, se = design_effect(ica.Projected(z, dec.W), units, seeds[0],  # type: ignore[arg-type]
                             lo=shard.lo if shard else 0, comm=shard.comm if shard else SINGLE)
    floor = float(np.abs(ctrl.source_excess_kurtosis).max()) if ctrl is not None else 0.0
    return KFit(decomposition=dec, control=ctrl, floor=noise_floor_test(dec.source_excess_kurtosis, se, floor, alpha),
                design_effect=deff, kurtosis_se=se, seconds_fit=t1 - t0, seconds_control=t2 - t1)

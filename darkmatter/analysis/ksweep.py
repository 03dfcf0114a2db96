"""Everything step 04 measures at one k, and the k sweep: the decomposition, the matched control,
each component's excess kurtosis against the noise floor, and the effective-n rule that bounds k.

The sweep (:func:`sweep`) calls :func:`fit_k` once per k on the leading k columns of one whitened
array (PCA whitening is nested: the top-k whitened data are the first k columns of the top-K
whitened data), in ascending k, and stops before a k that the effective sample size measured at
the previous k cannot support; :func:`darkmatter.analysis.decompose.choose_k` picks the default.
The completeness step reruns exactly this on residuals with injected features.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from darkmatter.analysis import ica
from darkmatter.analysis.candidates import ALPHA, FloorTest, noise_floor_test
from darkmatter.analysis.decompose import (
    SAMPLES_PER_PARAMETER,
    STABLE_FREQUENCY,
    Decomposition,
    decompose,
    effective_k_bound,
)
from darkmatter.analysis.ica_engine import RowShard
from darkmatter.analysis.resampling import design_effect, unit_power_sums
from darkmatter.analysis.stats import PCA
from darkmatter.distributed import SINGLE

#: Scratch arrays: ``scratch(shape)`` returns a float32 array (e.g. a memmap) for a surrogate's rows.
Scratch = Callable[[tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class FitOptions:
    """How every k is fitted (ICA section of the config, as one object).

    Attributes:
        seed: the all-rows fit's FastICA seed; restart i uses ``seed + i``.
        splits: random splits of the documents; each split's two halves are refitted (``2·splits``
            restarts; with ``resample`` ≠ 0.5 each restart fits a fresh random share instead).
        resample: share of the documents a restart fits (0.5: complementary halves; 1: all rows).
        max_iter, tol, backend, device: FastICA (:func:`darkmatter.analysis.ica.fit`).
        control: run the matched control (else the floor is 0, a Gaussian's excess kurtosis).
        stable_cos, stable_frequency: a component reappears in a restart at matched |cos| ≥
            ``stable_cos`` and is stable when it reappears in ≥ ``stable_frequency`` of the restarts
            that can tell (:func:`darkmatter.analysis.decompose.reappearance`).
        alpha: family-wise error of the floor test; samples_per_parameter: the k rule's constant.
    """

    seed: int = 42
    splits: int = 5
    resample: float = 0.5
    max_iter: int = 200
    tol: float = 1e-6
    backend: str = "torch"
    device: str = "cpu"
    control: bool = True
    stable_cos: float = 0.9
    stable_frequency: float = STABLE_FREQUENCY
    alpha: float = ALPHA
    samples_per_parameter: float = SAMPLES_PER_PARAMETER

    @property
    def n_restarts(self) -> int:
        return 2 * self.splits

    @property
    def seeds(self) -> list[int]:
        """The all-rows fit's seed, then one per restart."""
        return [self.seed + i for i in range(1 + self.n_restarts)]

    @property
    def fraction(self) -> float:
        """Share of the rows the fits stability rests on see (all rows without restarts)."""
        return self.resample if self.n_restarts else 1.0


@dataclass(frozen=True)
class SweepData:
    """What every k of a sweep fits: the whitened rows at the largest K, the PCA and mean they came from
    and the resampling design (the same at every k).

    Attributes:
        z_top: float[n, K] whitened rows at the sweep's largest K (the fit at k uses the first k
            columns): an array, or a :class:`~darkmatter.analysis.ica_engine.RowShard` (streamed from
            disk, or this rank's rows of a sharded run; the control is then laid out the same way).
        pca: the residual's PCA (:func:`darkmatter.analysis.stats.pca_from_cov`), for the k-whitening.
        mean: float64[d_model] the residual's mean, in the residual's units.
        units: int[n] document (or window) of each row, for the block bootstrap.
        restarts: row sets of the restarts (:func:`darkmatter.analysis.resampling.restart_rows`,
            ``FitOptions.n_restarts`` of them); the control uses the same ones.
    """

    z_top: ica.Rows
    pca: PCA
    mean: np.ndarray
    units: np.ndarray
    restarts: list[np.ndarray]


@dataclass(frozen=True)
class KFit:
    """One k of the sweep.

    Attributes:
        decomposition: the real components (ordered, signed, reappearance, settled).
        control: FastICA on the matched null (None when switched off; its surrogate rows dropped).
        floor: each component's excess kurtosis against the control's largest.
        design_effect: Kish's design effect of source kurtosis (document-block vs token bootstrap
            variance, median over components); n / design_effect is the effective sample size.
        effective_tokens: n / design_effect.
        k_bound: the largest k the effective-n rule allows, measured at this k
            (:func:`darkmatter.analysis.decompose.effective_k_bound`); admissible: k ≤ k_bound.
        seconds_fit, seconds_control: wall time of the restarts and of the control.
    """

    decomposition: Decomposition
    control: ica.ControlResult | None
    floor: FloorTest
    design_effect: float
    effective_tokens: float
    k_bound: int
    seconds_fit: float
    seconds_control: float

    @property
    def k(self) -> int:
        return self.decomposition.k

    @property
    def admissible(self) -> bool:
        return self.k <= self.k_bound

    @property
    def kurtosis_se(self) -> np.ndarray:
        """float[k] block-bootstrap standard error of each source's excess kurtosis."""
        return self.floor.se

    @property
    def reproducible(self) -> np.ndarray:
        """bool[k]: settled, stable across document splits and above the noise floor."""
        return self.decomposition.stable & self.floor.above & self.decomposition.settled

    @property
    def n_reproducible(self) -> int:
        """The count the sweep maximises."""
        return int(self.reproducible.sum())


def fit_k(data: SweepData, k: int, opts: FitOptions, *, progress: ica.Progress | None = None,
          control_progress: ica.Progress | None = None, scratch: Scratch | None = None) -> KFit:
    """Decompose the top-k whitened residual, run the matched control, test each source's kurtosis
    against the floor, and measure the design effect and the effective-n bound at this k.

    Args:
        data: the whitened rows (k ≤ their width K), PCA, mean, units and restart row sets.
        k: components to fit (the first k whitened columns).
        opts: the fit options (seeds, FastICA budget, control, stability and floor-test settings).
        progress, control_progress: per-seed FastICA progress of the real fits and of the control.
        scratch: where the control's surrogate rows go (see :func:`darkmatter.analysis.ica.norm_matched_surrogate`).
    Returns:
        KFit.
    Raises:
        ValueError: k exceeds z_top's width or the residual's rank.
    """
    z_top, units, restarts = data.z_top, data.units, data.restarts
    if k > z_top.shape[1]:
        raise ValueError(f"k = {k} exceeds the {z_top.shape[1]} whitened columns")
    white = ica.pca_whitening(data.pca, data.mean, k)
    z: ica.Rows = z_top.columns(k) if isinstance(z_top, RowShard) else np.ascontiguousarray(z_top[:, :k])
    shard = z if isinstance(z, RowShard) else None
    lo, comm = (shard.lo, shard.comm) if shard else (0, SINGLE)
    seeds = opts.seeds
    t0 = time.perf_counter()
    dec = decompose(z, white, seeds, max_iter=opts.max_iter, tol=opts.tol, restarts=restarts, backend=opts.backend,
                    device=opts.device, progress=progress, stable_cos=opts.stable_cos,
                    stable_frequency=opts.stable_frequency)
    t1 = time.perf_counter()
    ctrl = (ica.matched_control(z, seeds, max_iter=opts.max_iter, tol=opts.tol, whitening=white, restarts=restarts,
                                backend=opts.backend, device=opts.device, progress=control_progress,
                                scratch=scratch, stable_cos=opts.stable_cos, stable_frequency=opts.stable_frequency)
            if opts.control else None)
    t2 = time.perf_counter()
    real = unit_power_sums(ica.Projected(z, dec.W), units, lo=lo, comm=comm)  # type: ignore[arg-type]
    null = (unit_power_sums(ica.Projected(ctrl.z, ctrl.fits[0].W), units, lo=lo, comm=comm)  # type: ignore[arg-type]
            if ctrl is not None else None)
    deff, _ = design_effect(ica.Projected(z, dec.W), units, seeds[0], lo=lo, comm=comm, block=real)  # type: ignore[arg-type]
    floor = noise_floor_test(real, null, seeds[0], opts.alpha)
    n = ica.n_rows(z)
    bound = effective_k_bound(n, deff, opts.fraction, opts.samples_per_parameter)
    return KFit(decomposition=dec, control=replace(ctrl, z=None) if ctrl is not None else None, floor=floor,
                design_effect=deff, effective_tokens=n / max(deff, 1e-12), k_bound=bound,
                seconds_fit=t1 - t0, seconds_control=t2 - t1)


Bars = Callable[[int], tuple[ica.Progress | None, ica.Progress | None, Callable[[], None]]]
"""``bars(k)`` → (progress of the real fits, of the control, close) for one k (e.g. tqdm bars);
``close`` is called when the k's fits end, also when they raise."""


def sweep(data: SweepData, ks: list[int], opts: FitOptions, *, bars: Bars | None = None,
          scratch: Scratch | None = None,
          report: Callable[[KFit], None] | None = None) -> tuple[dict[int, KFit], list[int]]:
    """:func:`fit_k` at each k of ``ks`` in ascending order, stopping before a k the effective
    sample size measured at the previous k cannot support (its design effect predicts
    k > :func:`~darkmatter.analysis.decompose.effective_k_bound`); the first k is always fitted.
    Where the sweep stopped early (a k skipped, or the last k fitted above its own bound) and no
    admissible k comes within 80% of the last bound, the bound itself (the largest k the effective
    sample size supports) is fitted too, as :func:`~darkmatter.analysis.decompose.sweep_ks` adds
    the largest k the raw count supports.

    Args:
        data: the whitened rows at K ≥ max(ks) and the rest every k shares (:class:`SweepData`).
        ks: ascending k (:func:`darkmatter.analysis.decompose.sweep_ks`).
        opts, scratch: as :func:`fit_k`.
        bars: progress bars per k; report: called with each KFit as it is made.
    Returns:
        ({k: KFit} for the fitted k, the k of ``ks`` skipped by the rule).
    """
    fits: dict[int, KFit] = {}
    n = ica.n_rows(data.z_top)

    def fit(k: int) -> KFit:
        real_bar, ctrl_bar, close = bars(k) if bars is not None else (None, None, lambda: None)
        try:
            fits[k] = fit_k(data, k, opts, progress=real_bar, control_progress=ctrl_bar, scratch=scratch)
        finally:
            close()
        if report is not None:
            report(fits[k])
        return fits[k]

    skipped: list[int] = []
    for i, k in enumerate(ks):
        if fits and k > effective_k_bound(n, fits[ks[i - 1]].design_effect, opts.fraction, opts.samples_per_parameter):
            skipped = ks[i:]
            break
        fit(k)
    last = fits[max(fits)]
    best = max((f.k for f in fits.values() if f.admissible), default=1)
    if (skipped or not last.admissible) and best < 0.8 * last.k_bound and last.k_bound not in fits:
        fit(last.k_bound)
    return fits, skipped

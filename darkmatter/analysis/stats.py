"""Streaming moments, excess kurtosis, PCA and a Gaussianity test.

Everything here reads a (memory-mapped) ``[n_tokens, d]`` array in row chunks,
so RAM holds a few chunks plus ``d × d`` matrices whatever ``n_tokens`` is.
Sums are kept in float64 around a pilot shift (the first chunk's mean) to
avoid cancellation in the raw-moment formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from darkmatter.distributed import SINGLE, Comm, chunk_range

GAUSSIAN_TEST_ALPHA = 0.01
GAUSS_TAIL_3SD = 0.0026997960632601866  # P(|N(0,1)| > 3)


@dataclass(frozen=True)
class Summary:
    """Mean, median, min and max of a set of values (e.g. per-dimension excess kurtosis)."""

    mean: float
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Summary:
        """Summarise float[m] values (m ≥ 1). Raises ValueError on an empty input."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError("cannot summarise an empty set of values")
        return cls(mean=float(v.mean()), median=float(np.median(v)), min=float(v.min()), max=float(v.max()))


@dataclass(frozen=True)
class Moments:
    """Moments of an ``[n, d]`` array.

    Attributes:
        n: rows.
        mean: float64[d].
        cov: float64[d, d] covariance (divided by n), or None if not requested.
        var: float64[d].
        skew: float64[d] (Fisher, biased).
        excess_kurtosis: float64[d] (Fisher: 0 for a Gaussian; biased estimator).
        sum_sq: Σ‖x‖² over rows (uncentred), for FVU.
    """

    n: int
    mean: np.ndarray
    cov: np.ndarray | None
    var: np.ndarray
    skew: np.ndarray
    excess_kurtosis: np.ndarray
    sum_sq: float

    @property
    def total_variance(self) -> float:
        """Σ_j var_j = E‖x - mean‖²."""
        return float(self.var.sum())


def central_from_raw(n: float, s1: np.ndarray, s2: np.ndarray, s3: np.ndarray,
                     s4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance, skew and excess kurtosis from power sums Σx, Σx², Σx³, Σx⁴ over n rows.

    Zero-variance entries get skew 0 and excess kurtosis 0 (a constant has no tails).
    """
    m = s1 / n
    e2, e3, e4 = s2 / n, s3 / n, s4 / n
    mu2 = np.maximum(e2 - m ** 2, 0.0)
    mu3 = e3 - 3 * m * e2 + 2 * m ** 3
    mu4 = e4 - 4 * m * e3 + 6 * m ** 2 * e2 - 3 * m ** 4
    ok = mu2 > 1e-30 * np.maximum(e2, 1e-300)
    safe = np.where(ok, mu2, 1.0)
    skew = np.where(ok, mu3 / safe ** 1.5, 0.0)
    kurt = np.where(ok, mu4 / safe ** 2 - 3.0, 0.0)
    return m, mu2, skew, kurt


def streaming_moments(array: np.ndarray, chunk_size: int = 65536, with_cov: bool = True,
                      desc: str | None = None, comm: Comm = SINGLE) -> Moments:
    """One pass over ``array`` (float32[n, d], usually a memmap) for mean, covariance,
    per-column skew and excess kurtosis.

    Sharded (``comm`` of several ranks): each rank reads its block of whole chunks
    (:func:`darkmatter.distributed.chunk_range`), and the float64 power sums and the d × d Gram
    matrix are all-reduced; every rank returns the same moments.

    Raises:
        ValueError: NaN or inf in the array (the message gives the first bad chunk), on every rank.
    """
    from tqdm.auto import tqdm

    n, d = array.shape
    shift = np.asarray(array[: min(n, chunk_size)], dtype=np.float64).mean(0)
    s1, s2, s3, s4 = (np.zeros(d) for _ in range(4))
    gram = np.zeros((d, d)) if with_cov else None
    sum_sq = 0.0
    lo, hi = chunk_range(n, chunk_size, comm)
    bad = -1
    for start in tqdm(range(lo, hi, chunk_size), desc=desc, disable=desc is None or not comm.is_main,
                      mininterval=2.0):
        raw = np.asarray(array[start:min(start + chunk_size, hi)], dtype=np.float64)
        if not np.isfinite(raw).all():
            bad = start
            break
        sum_sq += float(np.einsum("ij,ij->", raw, raw))
        c = raw - shift
        c2 = c * c
        s1 += c.sum(0)
        s2 += c2.sum(0)
        s3 += (c2 * c).sum(0)
        s4 += (c2 * c2).sum(0)
        if gram is not None:
            gram += c.T @ c
    bads = comm.gather_ints([bad])[:, 0]
    if (bads >= 0).any():
        first = int(bads[bads >= 0].min())
        raise ValueError(f"NaN or inf in rows {first}..{min(first + chunk_size, n)}")
    if comm.sharded:
        s1, s2, s3, s4 = comm.sum_np(np.stack([s1, s2, s3, s4]))
        sum_sq = float(comm.sum_np(sum_sq))
        gram = comm.sum_np(gram) if gram is not None else None
    m, var, skew, kurt = central_from_raw(n, s1, s2, s3, s4)
    cov = None
    if gram is not None:
        cov = gram / n - np.outer(m, m)
        cov = (cov + cov.T) / 2
    return Moments(n=n, mean=m + shift, cov=cov, var=var, skew=skew, excess_kurtosis=kurt,
                   sum_sq=sum_sq)


class RowRange:
    """Rows ``[lo, hi)`` of a 2-D array (optionally only the columns ``cols``) as an array of their own,
    row slices only: a rank's share of a sharded pass."""

    def __init__(self, array: np.ndarray, lo: int, hi: int, cols: np.ndarray | None = None):
        self.array, self.lo, self.hi, self.cols = array, lo, hi, cols
        self.shape = (hi - lo, array.shape[1] if cols is None else len(cols))

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        out = np.asarray(self.array[self.lo + start:self.lo + stop])
        return out if self.cols is None else out[:, self.cols]


@dataclass(frozen=True)
class PCA:
    """Principal components of a covariance.

    Attributes:
        eigenvalues: float64[d], descending (variance along each component).
        components: float64[d, d]; row i is the unit direction of component i.
    """

    eigenvalues: np.ndarray
    components: np.ndarray

    @property
    def explained_ratio(self) -> np.ndarray:
        """float64[d]: cumulative fraction of variance of the top 1..d components."""
        return np.cumsum(self.eigenvalues) / self.eigenvalues.sum()

    def n_for(self, fraction: float) -> int:
        """Fewest components whose variance reaches ``fraction`` of the total."""
        return int(np.searchsorted(self.explained_ratio, fraction - 1e-12) + 1)


def pca_from_cov(cov: np.ndarray) -> PCA:
    """Eigendecomposition (``numpy.linalg.eigh``) of a float64[d, d] covariance, descending.

    Tiny negative eigenvalues from round-off are clipped to 0.
    """
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    return PCA(eigenvalues=np.clip(vals[order], 0.0, None), components=vecs[:, order].T.copy())


@dataclass(frozen=True)
class GaussianityTest:
    """Result of :func:`gaussianity_test`.

    Attributes:
        test: the test's name.
        n_sample: rows tested.
        alpha: family-wise level (Bonferroni over columns).
        fraction_rejected: share of columns rejected as Gaussian.
        median_statistic: median K² statistic over columns.
    """

    test: str
    n_sample: int
    alpha: float
    fraction_rejected: float
    median_statistic: float


def gaussianity_test(sample: np.ndarray, alpha: float = GAUSSIAN_TEST_ALPHA) -> GaussianityTest:
    """D'Agostino-Pearson K² test (``scipy.stats.normaltest``) on every column of ``sample``.

    Args:
        sample: float[m, d] rows (a random subsample; m ≥ 20).
        alpha: family-wise level; each column is tested at ``alpha / d`` (Bonferroni).
    """
    stat, p = sps.normaltest(sample, axis=0)
    d = sample.shape[1]
    return GaussianityTest(test="D'Agostino-Pearson K2 per dimension, Bonferroni",
                           n_sample=int(sample.shape[0]), alpha=alpha,
                           fraction_rejected=float((p < alpha / d).mean()),
                           median_statistic=float(np.median(stat)))


def tail_fraction(array: np.ndarray, mean: np.ndarray, sd: np.ndarray, n_sd: float = 3.0,
                  chunk_size: int = 65536) -> np.ndarray:
    """float64[d]: share of rows of ``array`` (float[n, d], streamed in chunks) with
    |x − mean| > n_sd · sd, per column (a Gaussian gives :data:`GAUSS_TAIL_3SD` at 3 sd)."""
    n = array.shape[0]
    count = np.zeros(array.shape[1])
    for s in range(0, n, chunk_size):
        count += (np.abs(np.asarray(array[s:s + chunk_size], dtype=np.float64) - mean) > n_sd * sd).sum(0)
    return count / n


def max_offdiag_correlation(cov: np.ndarray, sd: np.ndarray | None = None) -> float:
    """Largest |correlation| between two different columns, from a float64[d, d] covariance
    (``sd``: float64[d] standard deviations; default the square root of its diagonal)."""
    sd = np.sqrt(np.diag(cov)) if sd is None else sd
    corr = cov / np.outer(sd, sd)
    return float(np.abs(corr - np.diag(np.diag(corr))).max()) if len(cov) > 1 else 0.0


def kurtosis_standard_error(n: int) -> float:
    """Standard error of the sample excess kurtosis of n Gaussian draws, √(24/n)."""
    return float(np.sqrt(24.0 / n))


def random_rows(n: int, m: int, seed: int) -> np.ndarray:
    """Sorted indices of min(n, m) rows drawn without replacement (sorted for memmap reads)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, m), replace=False))


class GaussianSurrogate:
    """A lazy, read-only float32[n, d] array of rows drawn from N(mean, cov).

    Rows are generated on demand in seeded blocks, so slicing it like a memmap in
    :func:`streaming_moments` gives the same numbers every time while never holding
    more than the requested rows. It is the Gaussian surrogate of a residual: the same
    mean, covariance and sample size, and no structure beyond second order, so any
    kurtosis measured on it is the sampling noise floor at this ``n``.

    Args:
        mean: float64[d]; cov: float64[d, d] (positive semi-definite); n: rows; seed.
    """

    BLOCK = 16384

    def __init__(self, mean: np.ndarray, cov: np.ndarray, n: int, seed: int):
        vals, vecs = np.linalg.eigh(cov)
        self._root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # cov = root @ root.T
        self._mean = np.asarray(mean, dtype=np.float64)
        self._seed = seed
        self.shape = (n, len(mean))

    def _block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self._seed, b, 1007])  # non-zero last tag: SeedSequence drops trailing 0s
        m = min(self.BLOCK, self.shape[0] - b * self.BLOCK)
        return (self._mean + rng.standard_normal((m, self.shape[1])) @ self._root.T).astype(np.float32)

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("GaussianSurrogate supports contiguous row slices only")
        start, stop, _ = rows.indices(self.shape[0])
        if stop <= start:
            return np.zeros((0, self.shape[1]), dtype=np.float32)
        blocks = range(start // self.BLOCK, (stop - 1) // self.BLOCK + 1)
        out = np.concatenate([self._block(b) for b in blocks])
        offset = blocks[0] * self.BLOCK
        return out[start - offset:stop - offset]

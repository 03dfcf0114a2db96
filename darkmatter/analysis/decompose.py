"""One decomposition: whitened data → FastICA over seeds → matched, ordered, signed components.

Step 04, the planted sweep and the toy-model sweep all call :func:`decompose`. The k rules live
here too: the k sweep (:func:`sweep_ks`, bounded by the samples-per-parameter rule of
:func:`max_supported_k`), the sweep's choice (:func:`choose_k`) and the old capped rule
(:func:`default_k`).

Conventions (see :mod:`darkmatter.analysis.ica`), for k components of a d_model-wide residual r:
    sources    s = (r − mean) @ unmixing.T,   unmixing = W @ whitener: [k, d_model]
    r − mean ≈ s @ mixing.T,                  mixing = dewhitener.T @ W.T: [d_model, k]
Components are ordered by descending excess kurtosis of their source (most heavy-tailed
first) and signed so that each source has non-negative skew.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from darkmatter.analysis import ica
from darkmatter.analysis.stats import PCA

#: Share of residual variance of the 90% point of the k sweep.
DEFAULT_VARIANCE_FRACTION = 0.9
#: Rows per estimated parameter FastICA needs: n ≥ c·k² (k² entries of the unmixing matrix).
#: 20 follows the rule of thumb for ICA of EEG (Onton & Makeig 2006, "Information-based modeling
#: of event-related brain dynamics"; 20–30 × channels²); below it FastICA overlearns, producing
#: spiky, sample-specific sources (Särelä & Vigário 2003, "Overlearning in marginal
#: distribution-based ICA").
SAMPLES_PER_PARAMETER = 20.0
#: Round values of k tried by the sweep, beside the 90% count and the full rank.
SWEEP_KS = (25, 50, 100, 200, 400, 800)


def default_k(pca: PCA, max_components: int, fraction: float = DEFAULT_VARIANCE_FRACTION) -> tuple[int, str]:
    """The old default k, before the sweep: the fewest principal components holding ``fraction``
    of the residual variance, capped at ``max_components``. The in-memory sweeps
    (:mod:`darkmatter.experiments.sweeps`) use it, and the planted tests use it to show what a
    cap misses; step 04 chooses k with :func:`sweep_ks` and :func:`choose_k`.

    Returns:
        (k, rule name).
    Raises:
        ValueError: ``max_components`` < 1.
    """
    if max_components < 1:
        raise ValueError(f"max_components must be ≥ 1, got {max_components}")
    return (min(pca.n_for(fraction), max_components),
            f"PCA {fraction:.0%} rule, capped at {max_components}")


def max_supported_k(n_rows: int, samples_per_parameter: float = SAMPLES_PER_PARAMETER) -> int:
    """The largest k with ``n_rows ≥ samples_per_parameter · k²``.

    Raises:
        ValueError: samples_per_parameter ≤ 0.
    """
    if samples_per_parameter <= 0:
        raise ValueError(f"samples per parameter must be > 0, got {samples_per_parameter}")
    return int(np.floor(np.sqrt(n_rows / samples_per_parameter)))


def sweep_ks(pca: PCA, n_rows: int, samples_per_parameter: float = SAMPLES_PER_PARAMETER,
             fraction: float = DEFAULT_VARIANCE_FRACTION) -> tuple[list[int], int]:
    """The k values step 04 sweeps: the round values of :data:`SWEEP_KS`, the ``fraction``-variance
    count and the full rank (non-degenerate principal components), as far as the token count
    supports them (:func:`max_supported_k`), plus that largest supported k itself.

    Returns:
        (ascending list of k, the largest supported k).
    """
    rank = int((pca.eigenvalues > 1e-12 * pca.eigenvalues[0]).sum())
    top = min(rank, max_supported_k(n_rows, samples_per_parameter))
    if top < 2:
        raise ValueError(f"{n_rows:,} rows support no ICA (n ≥ {samples_per_parameter:g}·k² needs k ≥ 2): "
                         "collect more tokens or pass `samples_per_parameter`")
    ks = {k for k in (*SWEEP_KS, pca.n_for(fraction), rank) if 2 <= k <= top} | {top}
    return sorted(ks), top


def effective_k_bound(n_rows: int, design_effect: float, fraction: float = 0.5,
                      samples_per_parameter: float = SAMPLES_PER_PARAMETER) -> int:
    """The largest k the samples-per-parameter rule allows at the *effective* sample size of the fits
    stability rests on: ``fraction · n / design_effect ≥ samples_per_parameter · k²``.

    Tokens of one document are dependent, so n rows carry the information of n / design_effect
    independent ones (Kish 1965); each stability restart fits ``fraction`` of the documents.

    Args:
        n_rows: rows of the all-rows fit; design_effect: Kish's design effect (≥ 1 in practice; values
            below 1 are taken as 1); fraction: share of the documents each restart fits (1: all rows).
    Raises:
        ValueError: samples_per_parameter ≤ 0 or fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return max_supported_k(int(fraction * n_rows / max(design_effect, 1.0)), samples_per_parameter)


def k_rule_text(samples_per_parameter: float, fraction: float) -> str:
    """The k rule in words (ica.json ``k_rule``)."""
    fits = "each restart's share of the" if fraction < 1 else "all"
    return (f"k sweep: most components settled, stable across document splits and above the noise floor (ties to "
            f"the smaller k), among k with n_eff ≥ {samples_per_parameter:g}·k² for the fits stability rests on "
            f"(n_eff = {fits} tokens / the design effect of source kurtosis at that k)")


def choose_k(ks: list[int], n_candidates: list[int], admissible: list[bool] | None = None,
             rule: str | None = None) -> tuple[int, str]:
    """The sweep's default: among the admissible k (the effective-n rule, :func:`effective_k_bound`),
    the k with the most components that are settled, stable and above the noise floor; ties go to
    the smaller k (fewer parameters, more rows each). With no admissible k, the smallest swept k.

    Args:
        ks: swept k, ascending; n_candidates: the count at each; admissible: per k (None: all).
        rule: the rule's words (default: :func:`k_rule_text` at the defaults).
    Returns:
        (k, the rule's name for ica.json).
    Raises:
        ValueError: empty or mismatched lists.
    """
    if not ks or len(ks) != len(n_candidates) or (admissible is not None and len(admissible) != len(ks)):
        raise ValueError("choose_k needs one count per swept k")
    rule = rule or k_rule_text(SAMPLES_PER_PARAMETER, 0.5)
    ok = [True] * len(ks) if admissible is None else list(admissible)
    if not any(ok):
        return ks[0], rule + f"; no swept k met it, so the smallest ({ks[0]})"
    counts = [c if a else -1 for c, a in zip(n_candidates, ok)]
    best = int(np.argmax(counts))  # first maximum: the smallest k among ties
    return ks[best], rule


#: A component is stable when it reappears in at least this share of the restarts that can tell.
STABLE_FREQUENCY = 0.9
#: ... and at least this share of the restarts can tell (else its stability is undetermined).
MIN_DETERMINED = 0.5


@dataclass(frozen=True)
class Reappearance:
    """How often each component of the all-rows fit comes back in the restarts (ICASSO's question,
    Himberg et al. 2004, asked of fits to different documents).

    A component *reappears* in a restart when its Hungarian match there has |cos| ≥ the threshold.
    A restart *tells* (is determined) for a component when the component reappears there or its
    match there is a settled row: a miss against a row the engine never settled is no evidence of
    absence (that restart had not finished), so it counts neither way.

    Attributes:
        matched_cos: float64[k, R] |cos| of each component's match in each of R restarts.
        determined: bool[k, R] whether restart r tells for component c.
        frequency: float64[k] reappearances / determined restarts (NaN where none tells): the
            component's *stability*.
        n_determined: int64[k] restarts that tell.
        undetermined: bool[k] fewer than :data:`MIN_DETERMINED` of the restarts tell (all, with R = 0).
        stable: bool[k] not undetermined and frequency ≥ the stable frequency.
    """

    matched_cos: np.ndarray
    determined: np.ndarray
    frequency: np.ndarray
    n_determined: np.ndarray
    undetermined: np.ndarray
    stable: np.ndarray

    def status(self) -> list[str]:
        """Per component: ``"stable"``, ``"unstable"`` or ``"undetermined"``."""
        return ["undetermined" if u else "stable" if s else "unstable" for s, u in zip(self.stable, self.undetermined)]

    def take(self, order: np.ndarray) -> Reappearance:
        """The same, components reordered (``order``: int[k])."""
        return Reappearance(self.matched_cos[order], self.determined[order], self.frequency[order],
                            self.n_determined[order], self.undetermined[order], self.stable[order])


def reappearance(reference: np.ndarray, restarts: list[np.ndarray], restart_settled: list[np.ndarray | None],
                 stable_cos: float = 0.9, stable_frequency: float = STABLE_FREQUENCY,
                 min_determined: float = MIN_DETERMINED) -> Reappearance:
    """Reappearance of each reference component across restarts (see :class:`Reappearance`).

    Args:
        reference: float[k, d] unit mixing directions of the all-rows fit.
        restarts: one float[k, d] array of unit directions per restart (each fit on a document half).
        restart_settled: per restart, bool[k] its settled rows (None: all settled, e.g. scikit-learn).
        stable_cos: matched |cos| at which a component counts as reappearing.
        stable_frequency: share of determined restarts it must reappear in to be stable.
        min_determined: share of the restarts that must tell, else the component is undetermined.
    Returns:
        Reappearance, in the reference's component order.
    Raises:
        ValueError: one settled mask per restart is needed.
    """
    if len(restarts) != len(restart_settled):
        raise ValueError(f"{len(restart_settled)} settled masks for {len(restarts)} restarts")
    k, R = len(reference), len(restarts)
    cos = np.zeros((k, R))
    determined = np.zeros((k, R), dtype=bool)
    for r, (dirs, settled) in enumerate(zip(restarts, restart_settled)):
        perm, cos[:, r] = ica.match(reference, dirs)
        told = np.ones(k, dtype=bool) if settled is None else np.asarray(settled, dtype=bool)[perm]
        determined[:, r] = (cos[:, r] >= stable_cos) | told
    hits = ((cos >= stable_cos) & determined).sum(1)
    n_det = determined.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(n_det > 0, hits / np.maximum(n_det, 1), np.nan)
    undetermined = (n_det < max(1, int(np.ceil(min_determined * R)))) if R else np.ones(k, dtype=bool)
    stable = ~undetermined & (np.nan_to_num(freq) >= stable_frequency)
    return Reappearance(matched_cos=cos, determined=determined, frequency=freq, n_determined=n_det,
                        undetermined=undetermined, stable=stable)


@dataclass(frozen=True)
class Decomposition:
    """ICA components of whitened data, matched across restarts.

    Attributes:
        W: float64[k, k] orthogonal unmixing in whitened space of the first (all-rows) fit,
            rows ordered and signed (s = z @ W.T).
        whitening: the PCA whitening the data went through.
        fits: one :class:`~darkmatter.analysis.ica.ICAFit` per seed, in seed order.
        reappearance: how often each component comes back in the restarts (on document halves),
            in component order; ``reappearance.frequency`` is its *stability*.
        order: int64[k], the first fit's row index of each component.
        signs: float64[k] of ±1 applied to the first fit's rows, in component order.
        source_excess_kurtosis: float64[k] of the sources over every fitted row.
        settled: bool[k], the engine called the component's row settled in the first fit (all
            True for scikit-learn, which reports convergence only for all rows together).
    """

    W: np.ndarray
    whitening: ica.Whitening
    fits: list[ica.ICAFit]
    reappearance: Reappearance
    order: np.ndarray
    signs: np.ndarray
    source_excess_kurtosis: np.ndarray
    settled: np.ndarray

    @property
    def stability(self) -> np.ndarray:
        """float64[k] reappearance frequency across the restarts (NaN where undetermined by every one)."""
        return self.reappearance.frequency

    @property
    def stable(self) -> np.ndarray:
        """bool[k] stable across the restarts (see :class:`Reappearance`)."""
        return self.reappearance.stable

    @property
    def k(self) -> int:
        return self.W.shape[0]

    @property
    def unmixing(self) -> np.ndarray:
        """float64[k, d_model]: s = (r − mean) @ unmixing.T."""
        return self.W @ self.whitening.whitener

    @property
    def mixing(self) -> np.ndarray:
        """float64[d_model, k]: r − mean ≈ s @ mixing.T."""
        return self.whitening.dewhitener.T @ self.W.T

    @property
    def directions(self) -> np.ndarray:
        """float64[k, d_model] unit mixing directions (row i is what source i writes)."""
        return ica.mixing_directions(self.W, self.whitening)

    @property
    def n_stable(self) -> int:
        """Components stable across the restarts."""
        return int(self.stable.sum())


def decompose(z: ica.Rows, whitening: ica.Whitening, seeds: list[int], max_iter: int = 200,
              tol: float = 1e-6, restarts: list[np.ndarray] | None = None, backend: str = "torch",
              device: str = "cpu", progress: ica.Progress | None = None, stable_cos: float = 0.9,
              stable_frequency: float = STABLE_FREQUENCY) -> Decomposition:
    """FastICA restarts on whitened data (:func:`darkmatter.analysis.ica.fit_seeds`), stability as the
    reappearance of each component in the restarts (Hungarian matching of mixing directions,
    :func:`reappearance`), sources signed to positive skew and ordered by descending excess
    kurtosis, both measured over every row of z.

    Args:
        z: float[n, k] whitened data (``whitening.k`` columns), or a RowShard of them.
        whitening: the whitening that produced z (maps W to d_model directions).
        seeds: FastICA seeds; the first fits all rows, later ones their row set in ``restarts``.
        restarts: one row-index array per later seed
            (:func:`darkmatter.analysis.resampling.restart_rows`); None: all rows.
        max_iter, tol, backend, device, progress: see :func:`darkmatter.analysis.ica.fit`.
        stable_cos, stable_frequency: see :func:`reappearance`.
    Returns:
        Decomposition.
    Raises:
        ValueError: z's width differs from the whitening's k; no seeds; restarts mismatched.
    """
    if z.shape[1] != whitening.k:
        raise ValueError(f"z has {z.shape[1]} columns but the whitening keeps {whitening.k}")
    fits = ica.fit_seeds(z, seeds, max_iter, tol, restarts, backend, device, progress)
    dirs = [ica.mixing_directions(f.W, whitening) for f in fits]  # seed order, for matching
    again = reappearance(dirs[0], dirs[1:], [f.settled for f in fits[1:]], stable_cos, stable_frequency)
    skew, kurt = ica.source_moments(z, fits[0].W)
    signs = np.where(skew < 0, -1.0, 1.0)
    order = np.argsort(-kurt, kind="stable")  # most heavy-tailed first
    settled = fits[0].settled if fits[0].settled is not None else np.ones(len(order), dtype=bool)
    return Decomposition(W=(signs[:, None] * fits[0].W)[order], whitening=whitening, fits=fits,
                         reappearance=again.take(order), order=order, signs=signs[order],
                         source_excess_kurtosis=kurt[order], settled=settled[order])


def write_sources(residual: np.ndarray, decomposition: Decomposition, out: np.ndarray,
                  chunk_size: int = 16384, progress: Callable[[int], object] | None = None) -> float:
    """Fill ``out`` (float32[n, k], e.g. a memmap) with the sources of every residual row and
    return the share of residual variance the k-component reconstruction explains.

    Args:
        residual: float[n, d_model], streamed in chunks (float64 arithmetic).
        progress: called with the rows of each chunk once it is written (e.g. a tqdm's update), or None.
    Returns:
        1 − Σ‖r − s @ mixing.T‖² / Σ‖r‖² over centred rows; equals the whitening's
        ``explained`` when the unmixing is consistent (see :func:`check_reconstruction`).
    """
    unmixing, mixing, mean = decomposition.unmixing, decomposition.mixing, decomposition.whitening.mean
    err = total = 0.0
    for s in range(0, residual.shape[0], chunk_size):
        r = np.asarray(residual[s:s + chunk_size], dtype=np.float64) - mean
        src = r @ unmixing.T
        out[s:s + chunk_size] = src
        err += float(((r - src @ mixing.T) ** 2).sum())
        total += float((r ** 2).sum())
        if progress is not None:
            progress(len(r))
    return 1.0 - err / total


def check_reconstruction(explained: float, whitening: ica.Whitening, atol: float = 1e-3) -> bool:
    """True when the reconstruction explains what the PCA subspace holds (to ``atol``).

    Raises:
        RuntimeError: it does not: the unmixing is inconsistent (a bug, not a user error).
    """
    if abs(explained - whitening.explained) >= atol:
        raise RuntimeError(f"ICA reconstruction explains {explained:.5f} of residual variance but the "
                           f"PCA subspace holds {whitening.explained:.5f}: the unmixing is inconsistent")
    return True

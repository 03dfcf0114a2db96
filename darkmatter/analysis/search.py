"""The search: from residual rows to the candidate rule's verdicts, in one call.

Steps 03–05 run this procedure with their I/O in between (step 03's PCA, step 04's k sweep,
sources and artifact flags, step 05's comparison with the SAE and the candidate rule); the
completeness step runs it whole on residuals with injected features, and on a structureless
surrogate for its false-candidate count. Both go through the same functions —
:func:`darkmatter.analysis.ksweep.sweep`, :func:`choose`, :func:`darkmatter.analysis.artifacts.flag`,
:func:`novelty` and :func:`darkmatter.analysis.candidates.classify` — so "the unchanged procedure"
is one code path (``tests/analysis/test_search.py`` checks that it reproduces steps 04–05).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from darkmatter.analysis import artifacts, ica, resampling, stats
from darkmatter.analysis import directions as direction_sets
from darkmatter.analysis.candidates import classify, novelty_cut
from darkmatter.analysis.compare import LOW, decoder_match, project_rows
from darkmatter.analysis.decompose import choose_k, k_rule_text, sweep_ks, write_sources
from darkmatter.analysis.ica_engine import RowShard, default_chunk
from darkmatter.analysis.ksweep import FitOptions, KFit, Scratch, SweepData, sweep


@dataclass(frozen=True)
class SearchOptions:
    """Everything the search needs besides the rows.

    Attributes:
        fit: how every k is fitted.
        n_components: a fixed k (None: the sweep's choice); max_components: the largest k swept.
        null_draws: matched null rotations for the novelty cuts; keep_artifacts: positional
            artifacts may be candidates.
        chunk: rows per streamed chunk; memory_bytes: whitened rows larger than this are streamed
            from a scratch file.
    """

    fit: FitOptions
    n_components: int | None = None
    max_components: int | None = None
    null_draws: int = 20
    keep_artifacts: bool = False
    chunk: int = 16384
    memory_bytes: float = 2 * 2**30


def sweep_plan(pca: stats.PCA, n: int, opts: SearchOptions) -> tuple[list[int], int]:
    """The k to sweep (:func:`~darkmatter.analysis.decompose.sweep_ks`, or the fixed k) and the
    largest k the raw count supports.

    Raises:
        ValueError: the rows support no ICA.
    """
    ks, top = sweep_ks(pca, n, opts.fit.samples_per_parameter)
    if opts.n_components:
        return [opts.n_components], top
    if opts.max_components:
        ks = [k for k in ks if k <= opts.max_components] or [min(opts.max_components, top)]
    return ks, top


def choose(fits: dict[int, KFit], opts: SearchOptions) -> tuple[int, str]:
    """The k of the result: the fixed one, or the sweep's choice among the admissible k."""
    if opts.n_components:
        return opts.n_components, "fixed: `n_components`"
    ks = sorted(fits)
    return choose_k(ks, [fits[k].n_reproducible for k in ks], [fits[k].admissible for k in ks],
                    k_rule_text(opts.fit.samples_per_parameter, opts.fit.fraction))


@dataclass(frozen=True)
class Novelty:
    """Each component's nearest SAE decoder rows against the matched null.

    Attributes:
        max_cos, max_cos_projected: float[k] max |cos| to the raw decoder rows and to the rows
            projected into the whitened k-subspace.
        null_raw, null_projected: the matched null's max |cos| over its draws (pooled).
        cuts: (raw, projected) novelty cuts (:func:`~darkmatter.analysis.candidates.novelty_cut`).
    """

    max_cos: np.ndarray
    max_cos_projected: np.ndarray
    null_raw: np.ndarray
    null_projected: np.ndarray
    cuts: tuple[float, float]


def null_cuts(W_dec: np.ndarray, W_proj: np.ndarray, context: direction_sets.DirectionContext,
              null_draws: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The matched null's max |cos| to the raw and the projected decoder rows over ``null_draws``
    draws, and the novelty cuts they give (their 99th percentiles, at least :data:`LOW`)."""
    raw, proj = [], []
    for draw in direction_sets.baseline_draws(direction_sets.NULL, context, null_draws):
        raw.append(decoder_match(draw, W_dec, n_top=1).max_abs_cos)
        proj.append(decoder_match(draw, W_proj, n_top=1).max_abs_cos)
    r, p = np.concatenate(raw), np.concatenate(proj)
    return r, p, (novelty_cut(LOW, float(np.percentile(r, 99))), novelty_cut(LOW, float(np.percentile(p, 99))))


def novelty(directions: np.ndarray, W_dec: np.ndarray, pca: stats.PCA, seed: int, null_draws: int) -> Novelty:
    """Max |cos| of k unit directions to the decoder rows, raw and projected into the residual's
    whitened k-subspace, and the matched null's cuts (as step 05 measures them).

    Args:
        directions: float[k, d_model] unit mixing directions; W_dec: float[d_sae, d_model].
        pca: the residual's PCA (its first k components span the subspace).
    """
    k, d = directions.shape
    pcs, eig = pca.components, pca.eigenvalues
    basis = np.asarray(pcs[:k], dtype=np.float64)
    context = direction_sets.DirectionContext(k=k, d_model=d, seed=seed, pca_components=pcs,
                                              dewhitener=basis * np.sqrt(eig[:k])[:, None])
    W_proj = project_rows(W_dec, basis)
    raw, proj, cuts = null_cuts(W_dec, W_proj, context, null_draws)
    return Novelty(max_cos=decoder_match(directions, W_dec, n_top=1).max_abs_cos,
                   max_cos_projected=decoder_match(directions, W_proj, n_top=1).max_abs_cos,
                   null_raw=raw, null_projected=proj, cuts=cuts)


def verdicts(fit: KFit, flags: list[artifacts.ArtifactFlag], nov: Novelty, keep_artifacts: bool) -> list[list[str]]:
    """The candidate rule on the components of ``fit`` (:func:`~darkmatter.analysis.candidates.classify`)."""
    dec = fit.decomposition
    return classify(dec.settled, dec.stable, fit.floor.above, nov.max_cos, nov.max_cos_projected,
                    np.array([f.positional and not keep_artifacts for f in flags]), *nov.cuts,
                    undetermined=dec.reappearance.undetermined)


@dataclass(frozen=True)
class Outcome:
    """The search's result.

    Attributes:
        pca: the residual's PCA; k, k_rule: the chosen k and why; fits: every fitted k; skipped: swept
            k the effective sample size did not support.
        flags: artifact flags at k; novelty: decoder comparison at k; verdicts: the rule's reasons per
            component (empty: a candidate).
        explained: the share of residual variance the k-component reconstruction explains.
    """

    pca: stats.PCA
    k: int
    k_rule: str
    fits: dict[int, KFit]
    skipped: list[int]
    flags: list[artifacts.ArtifactFlag]
    novelty: Novelty
    verdicts: list[list[str]]
    explained: float

    @property
    def fit(self) -> KFit:
        return self.fits[self.k]

    @property
    def directions(self) -> np.ndarray:
        """float64[k, d_model] unit mixing directions at the chosen k."""
        return self.fit.decomposition.directions

    @property
    def candidates(self) -> list[int]:
        return [c for c, why in enumerate(self.verdicts) if not why]


def search(residual: np.ndarray, units: np.ndarray, positions: np.ndarray | None, token_ids: np.ndarray | None,
           W_dec: np.ndarray, opts: SearchOptions, scratch: Callable[[str, tuple[int, int]], np.ndarray] | None = None,
           device: str = "cpu", progress: Callable[[str], None] | None = None) -> Outcome:
    """The whole search on residual rows (see the module docstring).

    Args:
        residual: float[n, d_model] residual rows (a memmap is streamed).
        units: int[n] the document of every row; positions, token_ids: int[n] or None (artifact flags).
        W_dec: float[d_sae, d_model] the SAE's decoder rows.
        scratch: ``scratch(name, shape)`` makes a float32 array on disk (memmap) for rows larger than
            ``opts.memory_bytes``; None: memory.
        progress: called with a line after each fitted k.
    Returns:
        Outcome.
    Raises:
        ValueError: the rows support no ICA, or k exceeds the residual's rank.
    """
    n = residual.shape[0]
    m = stats.streaming_moments(residual, opts.chunk)
    assert m.cov is not None
    pca = stats.pca_from_cov(m.cov)
    ks, _ = sweep_plan(pca, n, opts)
    white_top = ica.pca_whitening(pca, m.mean, max(ks))

    def array(name: str, shape: tuple[int, int]) -> np.ndarray:
        big = shape[0] * shape[1] * 4 > opts.memory_bytes and scratch is not None
        return scratch(name, shape) if big and scratch is not None else np.empty(shape, dtype=np.float32)

    z = ica.whiten_rows(residual, white_top, None, opts.chunk, out=array("whitened", (n, white_top.k)))
    data = z if isinstance(z, np.memmap) else torch.as_tensor(z, device=device)
    z_top = RowShard(data, n_rows=n, chunk=max(opts.chunk, default_chunk(device)), device=device)
    restarts = resampling.restart_rows(units, opts.fit.n_restarts, opts.fit.resample, opts.fit.seed)
    ctrl_scratch: Scratch | None = (None if not isinstance(z, np.memmap) or scratch is None
                                    else (lambda shape: scratch("control", shape)))
    report = (lambda f: progress(f"k={f.k}: {f.n_reproducible} reproducible")) if progress else None
    fits, skipped = sweep(SweepData(z_top, pca, m.mean, units, restarts), ks, opts.fit, scratch=ctrl_scratch,
                          report=report)
    del z_top, data, z
    k, rule = choose(fits, opts)
    dec = fits[k].decomposition
    sources = array("sources", (n, k))
    explained = write_sources(residual, dec, sources, opts.chunk)
    flags = artifacts.flag(artifacts.top_rows(sources), artifacts.tail_rows(sources), units, positions, token_ids,
                           seed=opts.fit.seed)
    del sources
    nov = novelty(dec.directions, W_dec, pca, opts.fit.seed, opts.null_draws)
    return Outcome(pca=pca, k=k, k_rule=rule, fits=fits, skipped=skipped, flags=flags, novelty=nov,
                   verdicts=verdicts(fits[k], flags, nov, opts.keep_artifacts), explained=explained)

"""Planted dark matter: activations with a known answer.

Activations are built as ``x = Σ_i f_i d_i + ε`` (the linear-representation
picture of Elhage et al. 2022, "Toy Models of Superposition"):

- ``d_i``: ``n_features`` random unit directions in ``d_model`` dimensions,
  more features than dimensions allowed (superposition);
- ``f_i``: sparse non-negative magnitudes, each feature firing independently
  with probability ``p_fire``, with log-normal (heavy-tailed) sizes;
- ``ε``: dense isotropic Gaussian noise of standard deviation ``noise_std``
  per dimension (RMS), optionally a Gaussian scale mixture (below).

Rows are iid by default. With ``doc_length`` > 0 they come in **documents**, as tokens of text
do, and four kinds of document structure can be switched on (each off by default):

- document lengths are log-normal (σ :data:`DOC_LENGTH_SIGMA`) with mean ``doc_length`` rows;
  a row's position counts rows within its document from 1, as if BOS sat at 0;
- a **heavy-tailed background**: the noise (and the dense part) of a row is multiplied by a
  log-normal scale per document (σ ``doc_scale_sigma``) times one per row (σ
  ``token_scale_sigma``), normalised to E[s²] = 1, so the background is a Gaussian scale
  mixture (Andrews & Mallows 1974; Wainwright & Simoncelli 2000) of excess kurtosis
  3·E[s⁴]/E[s²]² − 3 = 3·exp(4(σ_doc² + σ_token²)) − 3 per coordinate;
- **topics**: each feature fires only in a random share ``topic_share`` of the documents, at
  rate ``p_fire / topic_share`` there, so its overall rate stays ``p_fire`` but its firings
  cluster in documents;
- **positional features**: ``positional_features`` extra features (ids ``n_features ..``) that
  fire only at positions 1–2 of a document, each with probability :data:`POSITIONAL_P` there,
  like the first-token-after-BOS artifacts of real residual streams. The oracle SAE does not know
  them, so they land in the residual, but they are artifacts, not dark features:
  :attr:`~darkmatter.sources.base.GroundTruth.positional` lists them apart from ``dark``.

Within-document dependence (shared scale, shared topics) is what makes tokens of one document
dependent in real text (a design effect of excess kurtosis ≫ 1, see
:func:`darkmatter.analysis.resampling.design_effect`).

Dark matter is made in one of two ways:

- **withheld** (:func:`oracle_sae`): an SAE that knows only the directions of
  the *known* features. It is a SAELens ``JumpReLUSAE`` whose decoder rows are
  exactly those directions and whose encoder reads each one off with a
  threshold, so the withheld features land in the residual ``x - SAE(x)``
  (together with the encoder's interference errors, as in a real SAE);
- **capacity**: an SAE trained through SAELens with too few latents or too
  high a sparsity penalty (see :mod:`darkmatter.experiments.training`); the features it
  misses form the dark matter.

Rows are generated in fixed blocks of :data:`BLOCK` rows, each from its own
seeded stream, so any row can be regenerated later (step 06 shows the
ground-truth feature ids of top-activating rows instead of text contexts). Documents are laid
out independently of the row blocks, in fixed blocks of :data:`DOC_BLOCK` documents, each
with its own seeded streams (lengths, scales, topics), so a row's document, position and content
never depend on block or chunk sizes, sharding or resume.
:class:`PlantedSource` serves them to the pipeline like any other source of activations;
:mod:`darkmatter.analysis.groundtruth` scores direction sets against the known answer.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from darkmatter.analysis.causal import ReadoutDownstream
from darkmatter.analysis.groundtruth import FOUND_COS, missed_by_decoder
from darkmatter.distributed import SINGLE, Comm
from darkmatter.sources.base import GroundTruth, HookInfo, Part, Resume, RowBatch, RowContext, RowLog

BLOCK = 8192  # rows per generated block; fixed so a row's content never depends on chunk sizes
# Streams are seeded with [seed, ..., tag] and a non-zero last tag: numpy's SeedSequence ignores
# trailing zeros, so [42, 0] would repeat the stream of 42 used elsewhere (e.g. random baselines).
PARTS = {"train": 1, "analysis": 2}  # disjoint random streams for SAE training and analysis
MODES = ("withheld", "capacity")
DOC_BLOCK = 1024  # documents per generated block of document lengths and traits
DOC_LENGTH_SIGMA = 1.0  # σ of the log-normal document lengths (in rows), a spread like that of web text
POSITIONAL_P = 0.5  # a positional feature fires at each of positions 1 and 2 with this probability
POSITIONS = (1, 2)  # the positions (rows after the document's BOS at 0) positional features fire at
# stream tags (the part's number is added): rows 1010, dense part 1020, document lengths 1030,
# document scales 1040, topics 1050, row scales 1060, positional firings 1070


@dataclass(frozen=True)
class PlantedSpec:
    """Parameters of planted activations (see the module docstring).

    Attributes:
        d_model: width of the activations.
        n_features: true feature directions (may exceed d_model: superposition).
        n_withheld: features the oracle SAE does not know (withheld mode).
        p_fire: probability that a feature is active on a row.
        magnitude_sigma: σ of the log-normal magnitudes (median 1; larger = heavier tail).
        noise_std: standard deviation of the Gaussian noise per dimension.
        seed: seeds the directions, the withheld set and every row block.
        oracle_threshold: JumpReLU threshold of :func:`oracle_sae`, in units of feature
            magnitude (median 1); it trades missed firings against false ones caused by
            interference between superposed directions.
        dense_dims, dense_std: a dense Gaussian part of standard deviation ``dense_std`` in a random
            ``dense_dims``-dimensional subspace, which no SAE latent explains: it fills the top
            principal components of the residual, as the flat spectrum of a real residual does.
        faint_withheld: put the withheld features' directions in the orthogonal complement of the
            dense subspace, i.e. in the residual's low-variance directions, outside its top
            ``dense_dims`` principal components.
        doc_length: mean document length in rows (log-normal lengths, σ :data:`DOC_LENGTH_SIGMA`);
            0 = iid rows, no documents. Otherwise at least 2.
        doc_scale_sigma: σ of the log-normal noise scale shared by a document's rows (needs documents).
        token_scale_sigma: σ of the log-normal noise scale of each row. Both scales are normalised
            to E[s²] = 1, so ``noise_std`` stays the RMS noise; 0 = Gaussian noise.
        topic_share: share of the documents each feature may fire in (1 = all; below 1 needs
            documents and ``p_fire ≤ topic_share``).
        positional_features: extra features, withheld from the oracle SAE, that fire only at
            positions 1–2 of a document (needs documents).
    Raises:
        ValueError: a value out of range or an option that needs documents without them.
    """

    d_model: int = 64
    n_features: int = 128
    n_withheld: int = 16
    p_fire: float = 0.01
    magnitude_sigma: float = 0.3
    noise_std: float = 0.05
    seed: int = 42
    oracle_threshold: float = 0.6
    dense_dims: int = 0
    dense_std: float = 0.0
    faint_withheld: bool = False
    doc_length: int = 0
    doc_scale_sigma: float = 0.0
    token_scale_sigma: float = 0.0
    topic_share: float = 1.0
    positional_features: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.dense_dims < self.d_model or self.dense_std < 0:
            problems.append("dense_dims must lie in 0..d_model-1 and dense_std be ≥ 0")
        if self.d_model < 2 or self.n_features < 1:
            problems.append("d_model must be ≥ 2 and n_features ≥ 1")
        if not 0 <= self.n_withheld <= self.n_features:
            problems.append(f"n_withheld must lie in 0..n_features ({self.n_features})")
        if not 0 < self.p_fire <= 1:
            problems.append("p_fire must lie in (0, 1]")
        if self.noise_std < 0 or self.magnitude_sigma < 0 or self.oracle_threshold < 0:
            problems.append("noise_std, magnitude_sigma and oracle_threshold must be ≥ 0")
        if self.doc_length < 0 or self.doc_length == 1:
            problems.append("doc_length must be 0 (iid rows) or at least 2")
        if self.doc_scale_sigma < 0 or self.token_scale_sigma < 0 or self.positional_features < 0:
            problems.append("doc_scale_sigma, token_scale_sigma and positional_features must be ≥ 0")
        if not 0 < self.topic_share <= 1:
            problems.append("topic_share must lie in (0, 1]")
        elif self.p_fire > self.topic_share:
            problems.append(f"p_fire ({self.p_fire}) must not exceed topic_share ({self.topic_share}): "
                            "a feature fires at rate p_fire / topic_share inside its documents")
        if not self.doc_length and (self.doc_scale_sigma or self.topic_share < 1 or self.positional_features):
            problems.append("doc_scale_sigma, topic_share < 1 and positional_features need documents: "
                            "set doc_length")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def n_total(self) -> int:
        """Every planted feature: the ``n_features`` ones plus the ``positional_features``."""
        return self.n_features + self.positional_features

    @property
    def scaled(self) -> bool:
        """Whether the background is a scale mixture (some scale σ > 0)."""
        return bool(self.doc_scale_sigma or self.token_scale_sigma)

    def dense_basis(self) -> np.ndarray:
        """float64[dense_dims, d_model] orthonormal rows spanning the dense Gaussian part."""
        rng = np.random.default_rng([self.seed, 1004])
        q, _ = np.linalg.qr(rng.standard_normal((self.d_model, self.d_model)))
        return q[:, :self.dense_dims].T

    def directions(self) -> np.ndarray:
        """float64[n_total, d_model] unit rows, seeded by ``seed``: the ``n_features`` features, then the
        positional ones (withheld and positional ones outside the dense subspace with ``faint_withheld``)."""
        rng = np.random.default_rng([self.seed, 1001])
        d = rng.standard_normal((self.n_features, self.d_model))
        if self.positional_features:
            d = np.concatenate([d, np.random.default_rng([self.seed, 1005]).standard_normal(
                (self.positional_features, self.d_model))])
        if self.faint_withheld and self.dense_dims:
            B = self.dense_basis()
            w = np.concatenate([self.withheld(), self.positional()])
            d[w] -= (d[w] @ B.T) @ B
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def positional(self) -> np.ndarray:
        """int64[positional_features]: ids of the positional features (``n_features ..``); the oracle SAE
        does not know them either, but they are artifacts, not dark features."""
        return np.arange(self.n_features, self.n_total)

    def withheld(self) -> np.ndarray:
        """int64[n_withheld]: sorted ids of the (dark) features the oracle SAE does not know, positional
        ones aside."""
        rng = np.random.default_rng([self.seed, 1003])
        return np.sort(rng.choice(self.n_features, self.n_withheld, replace=False))

    def known(self) -> np.ndarray:
        """int64[n_features - n_withheld]: sorted ids of the features the oracle SAE knows."""
        return np.setdiff1d(np.arange(self.n_features), self.withheld())


def _scale(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    """float64[n] log-normal scales exp(σZ − σ²), normalised to E[s²] = 1."""
    return np.exp(sigma * rng.standard_normal(n) - sigma ** 2)


@functools.lru_cache(maxsize=4096)
def _lengths(spec: PlantedSpec, part: str, j: int) -> np.ndarray:
    """int64[DOC_BLOCK] lengths (rows ≥ 1) of documents ``j*DOC_BLOCK ..`` of ``part``: 1 + a rounded
    log-normal of mean ``doc_length − 1`` and σ :data:`DOC_LENGTH_SIGMA`, so the mean is ``doc_length``."""
    mu = np.log(spec.doc_length - 1) - DOC_LENGTH_SIGMA ** 2 / 2
    rng = np.random.default_rng([spec.seed, j, 1030 + PARTS[part]])
    return 1 + np.rint(rng.lognormal(mu, DOC_LENGTH_SIGMA, DOC_BLOCK)).astype(np.int64)


class _Layout:
    """First rows of the blocks of :data:`DOC_BLOCK` documents of one part, extended on demand."""

    def __init__(self, spec: PlantedSpec, part: str):
        self.spec, self.part, self.starts = spec, part, [0]

    def block_starts(self, last_row: int) -> np.ndarray:
        """int64[J + 1]: first row of document blocks 0..J, where block J - 1 holds ``last_row``."""
        while self.starts[-1] <= last_row:
            j = len(self.starts) - 1
            self.starts.append(self.starts[-1] + int(_lengths(self.spec, self.part, j).sum()))
        return np.asarray(self.starts, dtype=np.int64)


@functools.lru_cache(maxsize=16)
def _layout(spec: PlantedSpec, part: str) -> _Layout:
    return _Layout(spec, part)


def documents(spec: PlantedSpec, part: str, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The document of each row and its position in it, a function of ``spec`` and ``part`` only.

    Args:
        row_ids: int[m] rows of ``part`` (any order, any range).
    Returns:
        (doc: int64[m] document ids, from 0 in stream order; position: int64[m] from 1 at a
        document's first row, as if BOS sat at 0). Without documents (``doc_length`` 0): (the row ids,
        zeros).
    Raises:
        KeyError: unknown part.
    """
    rows_ = np.asarray(row_ids, dtype=np.int64)
    if part not in PARTS:
        raise KeyError(part)
    if not spec.doc_length or not len(rows_):
        return rows_.copy(), np.zeros(len(rows_), dtype=np.int64)
    starts = _layout(spec, part).block_starts(int(rows_.max()))
    j = np.searchsorted(starts, rows_, side="right") - 1
    doc, pos = np.empty_like(rows_), np.empty_like(rows_)
    for jj in np.unique(j):
        sel = j == jj
        first = starts[jj] + np.concatenate([[0], np.cumsum(_lengths(spec, part, int(jj)))[:-1]])
        local = np.searchsorted(first, rows_[sel], side="right") - 1
        doc[sel] = jj * DOC_BLOCK + local
        pos[sel] = rows_[sel] - first[local] + 1
    return doc, pos


@functools.lru_cache(maxsize=8)
def _traits(spec: PlantedSpec, part: str, j: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Documents ``j*DOC_BLOCK ..``: (noise scale float64[DOC_BLOCK] or None, topic membership
    bool[DOC_BLOCK, n_features] or None), each from its own stream."""
    tag = PARTS[part]
    scale = (_scale(np.random.default_rng([spec.seed, j, 1040 + tag]), spec.doc_scale_sigma, DOC_BLOCK)
             if spec.doc_scale_sigma else None)
    topics = (np.random.default_rng([spec.seed, j, 1050 + tag]).random((DOC_BLOCK, spec.n_features))
              < spec.topic_share if spec.topic_share < 1 else None)
    return scale, topics


def document_traits(spec: PlantedSpec, part: str, docs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The noise scale and topics of given documents.

    Args:
        docs: int[m] document ids (see :func:`documents`).
    Returns:
        (scale: float64[m] log-normal document scale (None when ``doc_scale_sigma`` is 0); topics:
        bool[m, n_features] which features may fire in each document (None when ``topic_share`` is 1)).
    """
    docs = np.asarray(docs, dtype=np.int64)
    scale = np.ones(len(docs)) if spec.doc_scale_sigma else None
    topics = np.zeros((len(docs), spec.n_features), dtype=bool) if spec.topic_share < 1 else None
    for j in np.unique(docs // DOC_BLOCK):
        sel = np.flatnonzero(docs // DOC_BLOCK == j)
        s, t = _traits(spec, part, int(j))
        if scale is not None and s is not None:
            scale[sel] = s[docs[sel] - j * DOC_BLOCK]
        if topics is not None and t is not None:
            topics[sel] = t[docs[sel] - j * DOC_BLOCK]
    return scale, topics


def block(spec: PlantedSpec, part: str, index: int,
          directions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One block of :data:`BLOCK` rows.

    Each stream is seeded by ``[seed, index, tag + part]``, so a block never depends on any other;
    documents come from :func:`documents` and :func:`document_traits`, which do not depend on blocks.

    Args:
        part: ``"train"`` or ``"analysis"`` (independent streams).
        index: block number (rows ``index*BLOCK ..``).
        directions: ``spec.directions()``, passed in to avoid recomputing it.
    Returns:
        (x: float32[BLOCK, d_model], f: float32[BLOCK, n_total] feature magnitudes, 0 = off; the
        positional features are the last ``positional_features`` columns).
    Raises:
        KeyError: unknown part.
    """
    dirs = spec.directions() if directions is None else directions
    tag = PARTS[part]
    rng = np.random.default_rng([spec.seed, index, 1010 + tag])
    doc, pos = documents(spec, part, index * BLOCK + np.arange(BLOCK))
    doc_scale, topics = document_traits(spec, part, doc) if spec.doc_length else (None, None)
    u = rng.random((BLOCK, spec.n_features))
    on = u < spec.p_fire if topics is None else u < np.where(topics, spec.p_fire / spec.topic_share, 0.0)
    f = np.zeros((BLOCK, spec.n_total))
    f[:, :spec.n_features][on] = rng.lognormal(0.0, spec.magnitude_sigma, size=int(on.sum()))
    if spec.positional_features:
        prng = np.random.default_rng([spec.seed, index, 1070 + tag])
        fire = np.isin(pos, POSITIONS)[:, None] & (prng.random((BLOCK, spec.positional_features)) < POSITIONAL_P)
        f[:, spec.n_features:][fire] = prng.lognormal(0.0, spec.magnitude_sigma, size=int(fire.sum()))
    noise = rng.standard_normal((BLOCK, spec.d_model))
    scale = None
    if spec.scaled:
        scale = np.ones(BLOCK) if doc_scale is None else doc_scale
        if spec.token_scale_sigma:
            scale = scale * _scale(np.random.default_rng([spec.seed, index, 1060 + tag]), spec.token_scale_sigma,
                                   BLOCK)
        noise *= scale[:, None]
    x = f @ dirs + spec.noise_std * noise
    if spec.dense_dims:
        g = np.random.default_rng([spec.seed, index, 1020 + tag]).standard_normal((BLOCK, spec.dense_dims))
        x += spec.dense_std * (g if scale is None else g * scale[:, None]) @ spec.dense_basis()
    return x.astype(np.float32), f.astype(np.float32)


def rows(spec: PlantedSpec, part: str, n: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows ``start .. start+n`` of ``part``, block by block.

    Yields:
        (x: float32[m, d_model], f: float32[m, n_features]) with m ≤ BLOCK.
    """
    dirs = spec.directions()
    stop = start + n
    b = start // BLOCK
    while b * BLOCK < stop:
        x, f = block(spec, part, b, dirs)
        lo, hi = max(start - b * BLOCK, 0), min(stop - b * BLOCK, BLOCK)
        yield x[lo:hi], f[lo:hi]
        b += 1


def sample(spec: PlantedSpec, part: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n rows of ``part`` in memory: (x: float32[n, d_model], f: float32[n, n_features])."""
    xs, fs = zip(*rows(spec, part, n))
    return np.concatenate(xs), np.concatenate(fs)


def features_at(spec: PlantedSpec, part: str, row_ids: np.ndarray) -> np.ndarray:
    """Regenerate the feature magnitudes of given rows: float32[len(row_ids), n_total]."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    out = np.zeros((len(row_ids), spec.n_total), dtype=np.float32)
    dirs = spec.directions()
    for b in np.unique(row_ids // BLOCK):
        sel = np.flatnonzero(row_ids // BLOCK == b)
        _, f = block(spec, part, int(b), dirs)
        out[sel] = f[row_ids[sel] - b * BLOCK]
    return out


def oracle_sae(spec: PlantedSpec, device: str = "cpu"):
    """A SAELens ``JumpReLUSAE`` that knows only the non-withheld features.

    Decoder rows are the known directions (``W_dec: [n_known, d_model]``), the
    encoder reads each off with ``W_enc = W_decᵀ`` and a JumpReLU threshold, and
    both biases are zero. Interference between superposed features makes its
    encoding imperfect, as in a real SAE; the withheld features are never encoded
    and stay in the residual.

    Raises:
        ValueError: every feature is withheld (an SAE needs at least one latent).
    """
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    known = spec.known()
    if len(known) == 0:
        raise ValueError("every feature is withheld: the oracle SAE would have no latents")
    W = torch.tensor(spec.directions()[known], dtype=torch.float32)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=spec.d_model, d_sae=len(known), device=device))
    with torch.no_grad():
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.fill_(spec.oracle_threshold)
    return sae


def tensor_rows(spec: PlantedSpec, part: str, n: int, device: str = "cpu", comm: Comm = SINGLE,
                resume: Resume | None = None) -> Iterator[RowBatch]:
    """Rows of ``part`` as :class:`~darkmatter.sources.base.RowBatch`-es, one block of :data:`BLOCK`
    rows per batch (:func:`darkmatter.sources.collect.window_rows`: a sharded run generates only
    its own blocks).

    Yields:
        RowBatch with x: float32[m, d_model] on ``device`` and index: int32[m, 2] of (document, position
        from 1) with documents (:func:`documents`), else of (row, 0).
    """
    from darkmatter.sources.collect import Pending, window_rows

    dirs = spec.directions()

    def rows_of(b: int) -> torch.Tensor:
        return torch.as_tensor(block(spec, part, b, dirs)[0][:, None, :], device=device)

    def blocks() -> Iterator[Pending]:
        for b in itertools.count():
            yield BLOCK, None, functools.partial(rows_of, b)

    batches = window_rows(blocks(), n, desc="planted rows", comm=comm, resume=resume)
    return _in_documents(spec, part, batches) if spec.doc_length else batches


def _in_documents(spec: PlantedSpec, part: str, batches: Iterator[RowBatch]) -> Iterator[RowBatch]:
    """The batches with their (row, 0) index replaced by (document, position): planted rows are never
    dropped, so the index's first column is the generated row number."""
    for b in batches:
        doc, pos = documents(spec, part, b.index[:, 0])
        yield dataclasses.replace(b, index=np.stack([doc, pos], axis=1).astype(np.int32))


def describe(spec: PlantedSpec, mode: str) -> str:
    """One line naming the planted data and how its dark matter is made."""
    how = (f"{spec.n_withheld} withheld from an oracle SAE" if mode == "withheld"
           else "an SAE with limited capacity")
    docs = ""
    if spec.doc_length:
        docs = (f"; documents of {spec.doc_length} rows on average, noise scale σ {spec.doc_scale_sigma} per document "
                f"and {spec.token_scale_sigma} per row, topics {spec.topic_share}, "
                f"{spec.positional_features} positional features at positions 1-2")
    elif spec.token_scale_sigma:
        docs = f"; noise scale σ {spec.token_scale_sigma} per row"
    return (f"planted x = Σ f_i d_i + ε: {spec.n_features} features in {spec.d_model} dims, "
            f"p_fire {spec.p_fire}, log-normal σ {spec.magnitude_sigma}, noise {spec.noise_std}{docs}; "
            f"dark matter: {how}")


class PlantedSource:
    """Planted activations with a known answer, as an :class:`~darkmatter.sources.base.ActivationSource`.

    Args:
        spec: the generator's parameters.
        mode: ``"withheld"`` (the source brings an oracle SAE that misses ``spec.n_withheld``
            features) or ``"capacity"`` (an SAE is trained elsewhere; the dark features are the
            ones its decoder misses).
    Raises:
        ValueError: unknown mode.
    """

    kind = "planted"
    hook_name = "planted"

    def __init__(self, spec: PlantedSpec, mode: str = "withheld"):
        if mode not in MODES:
            raise ValueError(f"unknown planted mode {mode!r}: one of {', '.join(MODES)}")
        self.spec, self.mode = spec, mode
        self.description = describe(spec, mode)

    def hook(self) -> HookInfo:
        return HookInfo(hook_name=self.hook_name, d_model=self.spec.d_model, text="none: planted activations",
                        split="planted: SAE training and analysis rows come from disjoint random streams")

    def details(self) -> dict[str, Any]:
        """The spec, the mode, the withheld ids and the positional ones, for setup.json."""
        return {**dataclasses.asdict(self.spec), "mode": self.mode, "withheld": self.spec.withheld().tolist(),
                "positional": self.spec.positional().tolist()}

    def rows(self, part: Part, n_tokens: int, batch_size: int, device: str, log: RowLog | None = None,
             desc: str = "planted rows", clock: Any = None, comm: Comm | None = None,
             resume: Resume | None = None) -> Iterator[RowBatch]:
        return tensor_rows(self.spec, part, n_tokens, device, comm or SINGLE, resume)

    def builtin_sae(self, device: str) -> Any | None:
        return oracle_sae(self.spec, device) if self.mode == "withheld" else None

    def ground_truth(self, W_dec: np.ndarray) -> GroundTruth:
        """Every planted direction; dark: the withheld features (withheld mode) or the ones no decoder row
        matches (capacity mode), positional features aside (they are listed as ``positional``)."""
        truth, positional = self.spec.directions(), self.spec.positional()
        if self.mode == "withheld":
            return GroundTruth(truth, self.spec.withheld(), "the features withheld from the oracle SAE",
                               positional)
        return GroundTruth(truth, np.setdiff1d(missed_by_decoder(W_dec, truth), positional),
                           f"true features that no SAE decoder row matches at |cos| > {FOUND_COS}", positional)

    def units(self, index: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, str]:
        """The resampling unit of every analysed row: its document (``index[:, 0]`` of
        :func:`tensor_rows`) with documents, else the row itself.

        Args:
            index: int[n, 2] token_index.npy; tokens: ignored (planted rows have none).
        Returns:
            (int64[n] unit ids, ``"document"`` or ``"row"``).
        """
        if self.spec.doc_length:
            return np.asarray(index[:, 0], dtype=np.int64), "document"
        return np.arange(len(index), dtype=np.int64), "row"

    def unembed(self) -> None:
        return None

    def decode(self, token_id: int) -> str:
        return str(token_id)

    def row_contexts(self, rows: np.ndarray, index: np.ndarray, tokens: np.ndarray | None, width: int,
                     dark: set[int]) -> Callable[[int], RowContext]:
        """Each row's "context" lists its active true features, largest first (``f17*:1.52`` =
        feature 17 at magnitude 1.52, ``*`` = a dark feature, ``@`` = a positional one), then its
        document and position where there are documents; the token is the largest feature.

        Planted rows are never dropped, so an analysed row's number is its generated row number.
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        active = dict(zip(rows.tolist(), features_at(self.spec, "analysis", rows)))
        positional = set(self.spec.positional().tolist())

        def name(j: int) -> str:
            return f"f{j}{'*' if j in dark else '@' if j in positional else ''}"

        def read(row: int) -> RowContext:
            f = active[int(row)]
            on = np.flatnonzero(f)[np.argsort(-f[np.flatnonzero(f)])]
            label = " ".join(f"{name(j)}:{f[j]:.2f}" for j in on) or "(no feature fired)"
            if self.spec.doc_length:
                label += f" (document {int(index[row, 0])}, position {int(index[row, 1])})"
            return RowContext(token=name(int(on[0])) if len(on) else "none", row=int(row), context=label)

        return read

    def note(self) -> str:
        return ("planted activations: no text and no unembedding, so contexts list each row's active "
                "ground-truth features and there is no logit lens; the causal tests read a planted linear "
                "readout of every other dark feature")

    def downstream(self, truth: GroundTruth | None, n_sequences: int, skip: int, device: str) -> ReadoutDownstream:
        """A linear readout of every other dark feature (:func:`readout`) on ``n_sequences`` sequences of
        128 held-out rows after the ``skip`` analysed rows of the analysis stream. With documents each
        sequence starts at a document start, at most two per document (a long document's first two), the
        next at the next document start after it, and its document is its cluster for the standard errors
        (as :func:`darkmatter.sources.text.held_out_windows` builds text windows); without documents they
        are consecutive blocks, each its own cluster.

        Raises:
            ValueError: ``truth`` is None.
        """
        if truth is None:
            raise ValueError("the planted readout needs the ground truth")
        B, read = readout(truth)
        per = READOUT_ROWS
        if not self.spec.doc_length:
            n = n_sequences * per
            x = np.concatenate([xb for xb, _ in rows(self.spec, "analysis", n, start=skip)])
            return ReadoutDownstream(x, B, per, device, f"{n:,} planted rows after the {skip:,} analysed "
                                     f"({n_sequences} blocks of {per}), through a linear readout of dark "
                                     f"features {', '.join(map(str, read))}")
        starts, units = held_out_starts(self.spec, skip, n_sequences, per)
        x = np.concatenate([np.concatenate([xb for xb, _ in rows(self.spec, "analysis", per, start=int(a))])
                            for a in starts])
        return ReadoutDownstream(x, B, per, device, f"{n_sequences} sequences of {per} planted rows from "
                                 f"{len(np.unique(units))} documents after the {skip:,} analysed rows, each starting "
                                 f"at a document start, through a linear readout of dark features "
                                 f"{', '.join(map(str, read))}", units=units)


def held_out_starts(spec: PlantedSpec, skip: int, n_sequences: int, per: int) -> tuple[np.ndarray, np.ndarray]:
    """First rows and documents of held-out sequences of ``per`` rows after row ``skip`` (see
    :meth:`PlantedSource.downstream`): int64[n_sequences] each."""
    length = 4 * per * (n_sequences + 1)
    while True:
        span = np.arange(skip, skip + length)
        doc, pos = documents(spec, "analysis", span)
        firsts = span[pos == 1]
        starts: list[int] = []
        units: list[int] = []
        i = 0
        while i < len(firsts) and len(starts) < n_sequences:
            a, end = int(firsts[i]), int(firsts[i]) + per
            if end > span[-1]:
                break
            d = int(doc[a - skip])
            starts.append(a)
            units.append(d)
            if len(starts) < n_sequences and end + per <= span[-1] and int(doc[end - skip]) == d:
                starts.append(end)  # a long document's second sequence
                units.append(d)
                end += per
            i = int(np.searchsorted(firsts, end))
        if len(starts) == n_sequences:
            return np.asarray(starts, dtype=np.int64), np.asarray(units, dtype=np.int64)
        length *= 2


#: Rows per sequence of the planted readout (sequences are the units of its standard errors).
READOUT_ROWS = 128


def readout(truth: GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    """A linear readout that depends on exactly every other dark feature: the known answer of the
    add-back test.

    The readout vectors are the dual basis of the dark and positional directions D (the columns of
    its pseudo-inverse, D @ pinv(D) = I) for the features ``truth.dark[::2]``: each reads its own
    feature's magnitude and is blind to every other dark feature's direction and to the positional
    features' (which are in the residual too). Adding back an ICA component that recovers one of
    these features closes part of the readout's error; one that recovers another dark feature or a
    positional one closes none.

    Returns:
        (B: float64[d_model, n_read], read: int64[n_read] the feature ids it reads).
    """
    D = truth.directions[np.concatenate([truth.dark, truth.positional]).astype(np.int64)]
    dual = np.linalg.pinv(D)
    pick = np.arange(0, len(truth.dark), 2)
    return dual[:, pick], np.asarray(truth.dark)[pick]

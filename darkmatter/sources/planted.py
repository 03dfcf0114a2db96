"""Planted dark matter: activations with a known answer.

Activations are built as ``x = Σ_i f_i d_i + ε`` (the linear-representation
picture of Elhage et al. 2022, "Toy Models of Superposition"):

- ``d_i``: ``n_features`` random unit directions in ``d_model`` dimensions,
  more features than dimensions allowed (superposition);
- ``f_i``: sparse non-negative magnitudes, each feature firing independently
  with probability ``p_fire``, with log-normal (heavy-tailed) sizes;
- ``ε``: dense isotropic Gaussian noise of standard deviation ``noise_std``
  per dimension.

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
ground-truth feature ids of top-activating rows instead of text contexts).
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
        if problems:
            raise ValueError("; ".join(problems))

    def dense_basis(self) -> np.ndarray:
        """float64[dense_dims, d_model] orthonormal rows spanning the dense Gaussian part."""
        rng = np.random.default_rng([self.seed, 1004])
        q, _ = np.linalg.qr(rng.standard_normal((self.d_model, self.d_model)))
        return q[:, :self.dense_dims].T

    def directions(self) -> np.ndarray:
        """float64[n_features, d_model] unit rows, seeded by ``seed`` (withheld ones outside the dense
        subspace with ``faint_withheld``)."""
        rng = np.random.default_rng([self.seed, 1001])
        d = rng.standard_normal((self.n_features, self.d_model))
        if self.faint_withheld and self.dense_dims:
            B = self.dense_basis()
            w = self.withheld()
            d[w] -= (d[w] @ B.T) @ B
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def withheld(self) -> np.ndarray:
        """int64[n_withheld]: sorted ids of the features the oracle SAE does not know."""
        rng = np.random.default_rng([self.seed, 1003])
        return np.sort(rng.choice(self.n_features, self.n_withheld, replace=False))

    def known(self) -> np.ndarray:
        """int64[n_features - n_withheld]: sorted ids of the features the oracle SAE knows."""
        return np.setdiff1d(np.arange(self.n_features), self.withheld())


def block(spec: PlantedSpec, part: str, index: int,
          directions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One block of :data:`BLOCK` rows.

    Args:
        part: ``"train"`` or ``"analysis"`` (independent streams).
        index: block number (rows ``index*BLOCK ..``).
        directions: ``spec.directions()``, passed in to avoid recomputing it.
    Returns:
        (x: float32[BLOCK, d_model], f: float32[BLOCK, n_features] feature magnitudes, 0 = off).
    Raises:
        KeyError: unknown part.
    """
    dirs = spec.directions() if directions is None else directions
    rng = np.random.default_rng([spec.seed, index, 1010 + PARTS[part]])
    on = rng.random((BLOCK, spec.n_features)) < spec.p_fire
    f = np.zeros((BLOCK, spec.n_features))
    f[on] = rng.lognormal(0.0, spec.magnitude_sigma, size=int(on.sum()))
    x = f @ dirs + spec.noise_std * rng.standard_normal((BLOCK, spec.d_model))
    if spec.dense_dims:
        x += spec.dense_std * np.random.default_rng([spec.seed, index, 1020 + PARTS[part]]).standard_normal(
            (BLOCK, spec.dense_dims)) @ spec.dense_basis()
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
    """Regenerate the feature magnitudes of given rows: float32[len(row_ids), n_features]."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    out = np.zeros((len(row_ids), spec.n_features), dtype=np.float32)
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
        RowBatch with x: float32[m, d_model] on ``device`` and index: int32[m, 2] of (row, 0).
    """
    from darkmatter.sources.collect import Pending, window_rows

    dirs = spec.directions()

    def rows_of(b: int) -> torch.Tensor:
        return torch.as_tensor(block(spec, part, b, dirs)[0][:, None, :], device=device)

    def blocks() -> Iterator[Pending]:
        for b in itertools.count():
            yield BLOCK, None, functools.partial(rows_of, b)

    return window_rows(blocks(), n, desc="planted rows", comm=comm, resume=resume)


def describe(spec: PlantedSpec, mode: str) -> str:
    """One line naming the planted data and how its dark matter is made."""
    how = (f"{spec.n_withheld} withheld from an oracle SAE" if mode == "withheld"
           else "an SAE with limited capacity")
    return (f"planted x = Σ f_i d_i + ε: {spec.n_features} features in {spec.d_model} dims, "
            f"p_fire {spec.p_fire}, log-normal σ {spec.magnitude_sigma}, noise {spec.noise_std}; "
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
        """The spec, the mode and the withheld ids, for setup.json."""
        return {**dataclasses.asdict(self.spec), "mode": self.mode, "withheld": self.spec.withheld().tolist()}

    def rows(self, part: Part, n_tokens: int, batch_size: int, device: str, log: RowLog | None = None,
             desc: str = "planted rows", clock: Any = None, comm: Comm | None = None,
             resume: Resume | None = None) -> Iterator[RowBatch]:
        return tensor_rows(self.spec, part, n_tokens, device, comm or SINGLE, resume)

    def builtin_sae(self, device: str) -> Any | None:
        return oracle_sae(self.spec, device) if self.mode == "withheld" else None

    def ground_truth(self, W_dec: np.ndarray) -> GroundTruth:
        truth = self.spec.directions()
        if self.mode == "withheld":
            return GroundTruth(truth, self.spec.withheld(), "the features withheld from the oracle SAE")
        return GroundTruth(truth, missed_by_decoder(W_dec, truth),
                           f"true features that no SAE decoder row matches at |cos| > {FOUND_COS}")

    def unembed(self) -> None:
        return None

    def decode(self, token_id: int) -> str:
        return str(token_id)

    def row_contexts(self, rows: np.ndarray, index: np.ndarray, tokens: np.ndarray | None, width: int,
                     dark: set[int]) -> Callable[[int], RowContext]:
        """Each row's "context" lists its active true features, largest first (``f17*:1.52`` =
        feature 17 at magnitude 1.52, ``*`` = a dark feature); the token is the largest one."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        active = dict(zip(rows.tolist(), features_at(self.spec, "analysis", index[rows, 0])))

        def read(row: int) -> RowContext:
            f = active[int(row)]
            on = np.flatnonzero(f)[np.argsort(-f[np.flatnonzero(f)])]
            label = " ".join(f"f{j}{'*' if j in dark else ''}:{f[j]:.2f}" for j in on) or "(no feature fired)"
            return RowContext(token=f"f{on[0]}{'*' if on[0] in dark else ''}" if len(on) else "none",
                              row=int(index[row, 0]), context=label)

        return read

    def units(self, index: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, str]:
        """Each planted row is its own unit (rows are iid)."""
        return np.asarray(index, dtype=np.int64)[:, 0], "row"

    def note(self) -> str:
        return ("planted activations: no text and no unembedding, so contexts list each row's active "
                "ground-truth features and there is no logit lens; the causal tests read a planted linear "
                "readout of every other dark feature")

    def downstream(self, truth: GroundTruth | None, n_sequences: int, skip: int, device: str) -> ReadoutDownstream:
        """A linear readout of every other dark feature (:func:`readout`) on ``n_sequences`` blocks of
        128 held-out rows (those after the ``skip`` analysed rows of the analysis stream).

        Raises:
            ValueError: ``truth`` is None.
        """
        if truth is None:
            raise ValueError("the planted readout needs the ground truth")
        B, read = readout(truth)
        n = n_sequences * READOUT_ROWS
        x = np.concatenate([xb for xb, _ in rows(self.spec, "analysis", n, start=skip)])
        return ReadoutDownstream(x, B, READOUT_ROWS, device, f"{n:,} planted rows after the {skip:,} analysed "
                                 f"({n_sequences} blocks of {READOUT_ROWS}), through a linear readout of dark "
                                 f"features {', '.join(map(str, read))}")


#: Rows per sequence of the planted readout (sequences are the units of its standard errors).
READOUT_ROWS = 128


def readout(truth: GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    """A linear readout that depends on exactly every other dark feature: the known answer of the
    add-back test.

    The readout vectors are the dual basis of the dark directions D (the columns of its
    pseudo-inverse, D @ pinv(D) = I) for the features ``truth.dark[::2]``: each reads its own
    feature's magnitude and is blind to every other dark feature's direction. Adding back an ICA
    component that recovers one of these features closes part of the readout's error; one that
    recovers another dark feature closes none.

    Returns:
        (B: float64[d_model, n_read], read: int64[n_read] the feature ids it reads).
    """
    D = truth.directions[truth.dark]
    dual = np.linalg.pinv(D)
    pick = np.arange(0, len(truth.dark), 2)
    return dual[:, pick], np.asarray(truth.dark)[pick]

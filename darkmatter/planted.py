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
  high a sparsity penalty (see :mod:`darkmatter.training`); the features it
  misses form the dark matter.

Rows are generated in fixed blocks of :data:`BLOCK` rows, each from its own
seeded stream, so any row can be regenerated later (step 06 shows the
ground-truth feature ids of top-activating rows instead of text contexts).
:func:`score` measures how well a set of directions (ICA, PCA, random)
recovers the dark features and counts false discoveries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 8192  # rows per generated block; fixed so a row's content never depends on chunk sizes
# Streams are seeded with [seed, ..., tag] and a non-zero last tag: numpy's SeedSequence ignores
# trailing zeros, so [42, 0] would repeat the stream of 42 used elsewhere (e.g. random baselines).
FOUND_COS = 0.9  # a dark feature counts as found by a direction with |cos| above this
FALSE_COS = 0.3  # a direction with |cos| below this to every true feature is a false discovery
PARTS = {"train": 1, "analysis": 2}  # disjoint random streams for SAE training and analysis


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
    """

    d_model: int = 64
    n_features: int = 128
    n_withheld: int = 16
    p_fire: float = 0.01
    magnitude_sigma: float = 0.3
    noise_std: float = 0.05
    seed: int = 42
    oracle_threshold: float = 0.6

    def __post_init__(self) -> None:
        problems = []
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

    def directions(self) -> np.ndarray:
        """float64[n_features, d_model] unit rows, seeded by ``seed``."""
        rng = np.random.default_rng([self.seed, 1001])
        d = rng.standard_normal((self.n_features, self.d_model))
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


@dataclass(frozen=True)
class Recovery:
    """How well k unit directions recover a set of dark features.

    Attributes:
        max_abs_cos: float64[n_dark]: for each dark feature, its best |cos| to any direction.
        best_direction: int64[n_dark]: the direction giving it.
        nearest_true_cos: float64[k]: for each direction, its best |cos| to any true feature.
        nearest_true: int64[k]: that feature's id.
    """

    max_abs_cos: np.ndarray
    best_direction: np.ndarray
    nearest_true_cos: np.ndarray
    nearest_true: np.ndarray

    def summary(self) -> dict[str, float | int]:
        """Mean max |cos| over dark features, how many are found (|cos| > 0.9), and false
        discoveries (directions with |cos| < 0.3 to every true feature)."""
        return {
            "mean_max_abs_cos": float(self.max_abs_cos.mean()) if len(self.max_abs_cos) else float("nan"),
            "min_max_abs_cos": float(self.max_abs_cos.min()) if len(self.max_abs_cos) else float("nan"),
            "n_found": int((self.max_abs_cos > FOUND_COS).sum()),
            "n_dark": int(len(self.max_abs_cos)),
            "n_false_discoveries": int((self.nearest_true_cos < FALSE_COS).sum()),
            "n_directions": int(len(self.nearest_true_cos)),
        }


def score(directions: np.ndarray, true_directions: np.ndarray, dark: np.ndarray) -> Recovery:
    """Score directions against the planted truth.

    Args:
        directions: float[k, d_model] (rows need not be unit: they are normalised).
        true_directions: float[n_features, d_model] unit rows.
        dark: int[n_dark] ids of the features that should be found in the residual.
    Raises:
        ValueError: widths differ.
    """
    if directions.shape[1] != true_directions.shape[1]:
        raise ValueError(f"directions are {directions.shape[1]} wide, true features "
                         f"{true_directions.shape[1]}")
    u = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    sim = np.abs(u @ true_directions.T)  # [k, n_features]
    dark_sim = sim[:, dark]
    return Recovery(max_abs_cos=dark_sim.max(0) if len(u) else np.zeros(len(dark)),
                    best_direction=dark_sim.argmax(0) if len(u) else np.zeros(len(dark), dtype=int),
                    nearest_true_cos=sim.max(1), nearest_true=sim.argmax(1))


def missed_by_decoder(W_dec: np.ndarray, true_directions: np.ndarray, cos: float = FOUND_COS) -> np.ndarray:
    """int64[n]: ids of true features no SAE decoder row matches at |cos| > ``cos``.

    Args:
        W_dec: float[d_sae, d_model] decoder rows.
    """
    u = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    return np.flatnonzero(np.abs(true_directions @ u.T).max(1) <= cos)


def tensor_rows(spec: PlantedSpec, part: str, n: int,
                device: str = "cpu") -> Iterator[tuple[torch.Tensor, np.ndarray, int]]:
    """Rows of ``part`` in the form :func:`darkmatter.collect.hook_rows` yields.

    Yields:
        (x: float32[m, d_model] on ``device``, index: int32[m, 2] of (row, 0), 0 tokens excluded).
    """
    start = 0
    for x, _ in rows(spec, part, n):
        index = np.stack([np.arange(start, start + len(x)), np.zeros(len(x), dtype=np.int64)], axis=1)
        yield torch.as_tensor(x, device=device), index.astype(np.int32), 0
        start += len(x)


def describe(spec: PlantedSpec, mode: str) -> str:
    """One line naming the planted data and how its dark matter is made."""
    how = (f"{spec.n_withheld} withheld from an oracle SAE" if mode == "withheld"
           else "an SAE with limited capacity")
    return (f"planted x = Σ f_i d_i + ε: {spec.n_features} features in {spec.d_model} dims, "
            f"p_fire {spec.p_fire}, log-normal σ {spec.magnitude_sigma}, noise {spec.noise_std}; "
            f"dark matter: {how}")


def recovery(spec: PlantedSpec, n_tokens: int, seed: int = 0, max_components: int = 100,
             max_iter: int = 200, tol: float = 1e-6) -> dict[str, object]:
    """One withheld-feature experiment in memory: oracle SAE → residual → PCA whitening to the
    components holding 90% of its variance (capped) → FastICA → scores of ICA, PCA and random
    directions against the withheld features (:func:`score`).

    This is the pipeline's 02-05 path on in-memory arrays, for sweeps over the spec.

    Args:
        spec: planted data; ``spec.n_withheld`` ≥ 1.
        n_tokens: analysed rows.
    Returns:
        {"k", "fvu", "residual_median_excess_kurtosis", "ica_converged", "ica_n_iter",
         "ICA" | "PCA" | "random": :meth:`Recovery.summary`}.
    Raises:
        ValueError: nothing is withheld.
    """
    from darkmatter import compare, ica, stats

    if spec.n_withheld < 1:
        raise ValueError("recovery needs withheld features (n_withheld ≥ 1)")
    x, _ = sample(spec, "analysis", n_tokens)
    sae = oracle_sae(spec)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        resid = (xt - sae.decode(sae.encode(xt))).numpy()
    m = stats.streaming_moments(resid)
    pca = stats.pca_from_cov(m.cov)
    k = min(pca.n_for(0.9), max_components)
    white = ica.pca_whitening(pca, m.mean, k)
    fit = ica.fastica(white.apply(resid), seed, max_iter, tol)
    truth, dark = spec.directions(), spec.withheld()
    sets = {"ICA": ica.mixing_directions(fit.W, white), "PCA": pca.components[:k],
            "random": compare.random_directions(k, spec.d_model, seed)}
    return {"k": k, "fvu": float((resid.astype(np.float64) ** 2).sum() / (n_tokens * stats.streaming_moments(
                x, with_cov=False).total_variance)),
            "residual_median_excess_kurtosis": float(np.median(m.excess_kurtosis)),
            "ica_converged": fit.converged, "ica_n_iter": fit.n_iter,
            **{name: score(d, truth, dark).summary() for name, d in sets.items()}}

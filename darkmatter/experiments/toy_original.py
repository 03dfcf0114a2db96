"""The 10-5-10 toy-model SAE collapse, replicated like for like.

An earlier, pure-NumPy implementation (seed 123; an SAE with d_sae = 10 on the d_model = 5
hidden layer, L1 0.01, lr 1e-3, 20 epochs) reported for the 10-5-10 toy model of Elhage et al.
2022 ("Toy Models of Superposition") the figures in :data:`ORIGINAL_AE` and an SAE with every
latent dead at S = 0.9. The toy autoencoders of :mod:`darkmatter.experiments.toy` (Adam,
10,000 fresh batches, mean loss) store every feature as an antipodal pair (cond(W) ≈ 1.00),
a different representation. This module

1. trains the toy autoencoder under each of the choices an implementation has to make
   (:class:`AESetup`: loss summed or averaged over features, importance I_i = decay^i, output
   bias, SGD or Adam, lr, batch size, a fixed training set and epochs or fresh batches,
   initial scale) and measures the figures the original reported, under several definitions
   (:data:`DIAGONAL_DOMINANCE`), in a grid around :data:`BASE_SETUP` (:func:`ae_grid`), and
   finds the setup and definition that land nearest (:func:`figure_distance`, :func:`nearest`);
2. trains an SAE on that autoencoder's hidden activations twice: a plain NumPy SAE of the
   original kind (:func:`train_plain_sae`: untied encoder/decoder, ReLU, no decoder-norm
   constraint, L1 on the latent activations) and SAELens's ``StandardTrainingSAE`` through
   :func:`darkmatter.experiments.toy.train_toy_sae` (the project's ``train_sae``);
3. repeats both over seeds and over the repository's own autoencoder (:data:`REPO_SETUP`), so
   a collapse can be put down to the representation or to the SAE implementation.

The toy model (Elhage et al. 2022): x: float[batch, n_features], each feature independently 0
with probability S (the sparsity), else Uniform[0, 1]; h = x Wᵀ with W: float[n_hidden,
n_features] (the hidden layer, d_model = n_hidden); x' = ReLU(h W + b), b: float[n_features].

Definitions (all on a held-out evaluation set of ``n_eval`` fresh samples):

* AE loss: the setup's own training objective, the batch mean of Σ_i I_i (x_i - x'_i)²
  (``loss="sum"``) or of that sum divided by n_features (``loss="mean"``), with I_i = 1 when
  there is no importance. ``mse_per_feature`` is the plain mean of (x - x')² for comparison.
* cond(W): σ_max / σ_min of W: float[n_hidden, n_features] (its n_hidden singular values);
  cond(W Wᵀ) is its square.
* diagonal dominance, one number per definition in :data:`DIAGONAL_DOMINANCE`.
* L0: mean over evaluation samples of the number of latents with activation > 0.
* dead latent: 0 on every evaluation sample; active latents = d_sae - dead (a count of
  latents; L0 is a per-sample average). Collapsed: every latent dead or L0 == 0.
* FVU: Σ‖h - ĥ‖² / Σ‖h - mean(h)‖² on the evaluation hidden activations.
* Procrustes similarity of the decoder to the true feature directions: the unit columns of W
  (n_features directions in d_model dimensions) against the unit decoder rows of the alive
  latents, matched one to one by the Hungarian algorithm on |cos|, then 1 -
  ``scipy.spatial.procrustes`` disparity (centred, scaled, best rotation), as in
  :func:`darkmatter.experiments.toy.procrustes_similarity`; nan with fewer than 2 alive latents.
  ``matched_abs_cos`` is the mean |cos| of the matched pairs, with no rotation allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

N_FEATURES = 10
N_HIDDEN = 5
SPARSITIES = (0.85, 0.9, 0.95)
SEEDS = (123, 124, 125, 126, 127)

# Streams of one seed (non-zero tags: numpy's SeedSequence ignores trailing zeros).
_AE_INIT, _AE_DATA, _SAE_TRAIN_DATA, _EVAL_DATA, _SAE_INIT, _SAELENS_SEED = range(1, 7)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint32)[0])


# --------------------------------------------------------------------------- the original report


@dataclass(frozen=True)
class OriginalAE:
    """The original report's figures for one sparsity (10-5-10, seed 123).

    Attributes:
        ae_loss: its AE loss (its normalisation unknown).
        cond_W: its cond(W).
        diagonal_dominance: its "diagonal dominance" (its definition unknown).
        sae: its SAE result, as reported (text).
    """

    ae_loss: float
    cond_W: float
    diagonal_dominance: float
    sae: str


#: The original report's table, keyed by S.
ORIGINAL_AE: dict[float, OriginalAE] = {
    0.85: OriginalAE(0.0708, 1.8, 0.543, "~6 active, 2–4/10 dead, L0 ~0.4–0.6, Procrustes ~0.95"),
    0.9: OriginalAE(0.0280, 1.6, 0.734, "0 active, 10/10 dead, L0 0"),
    0.95: OriginalAE(0.0371, 63.6, 0.375, "~3–4 active, 3–5/10 dead, L0 ~0.2–0.3, Procrustes ~0.92"),
}


# --------------------------------------------------------------------------- data


def sample_features(n_samples: int, n_features: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """x: float64[n_samples, n_features], each entry independently 0 with probability
    ``sparsity`` (S), else Uniform[0, 1] (Elhage et al. 2022).

    Raises:
        ValueError: sparsity outside [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    values = rng.random((n_samples, n_features))
    present = rng.random((n_samples, n_features)) >= sparsity
    return values * present


# --------------------------------------------------------------------------- the toy autoencoder


@dataclass(frozen=True)
class AESetup:
    """The choices a toy-autoencoder implementation makes.

    Attributes:
        loss: "sum" over features of I_i (x_i - x'_i)², or its "mean" (the sum / n_features);
            averaged over the batch either way.
        importance_decay: I_i = decay^i (Elhage et al. use 0.9 in places); None: I_i = 1.
        bias: train the output bias b (else b = 0).
        optimizer: "sgd" (plain, no momentum) or "adam" (β = 0.9, 0.999, ε = 1e-8, torch's defaults).
        lr: learning rate (constant).
        batch_size: samples per step.
        n_train: size of a fixed training set, reshuffled each epoch (the last partial batch
            dropped); None: a fresh batch every step.
        epochs: passes over ``n_train`` (used when n_train is set).
        steps: steps (used when n_train is None).
        init_std: W starts N(0, init_std²); None: Xavier normal, std sqrt(2 / (n + m)). b starts 0.
    """

    loss: Literal["sum", "mean"] = "sum"
    importance_decay: float | None = 0.9
    bias: bool = True
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    batch_size: int = 32
    n_train: int | None = 10_000
    epochs: int = 20
    steps: int = 10_000
    init_std: float | None = 0.1

    def __post_init__(self) -> None:
        if self.loss not in ("sum", "mean") or self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"loss must be sum|mean and optimizer sgd|adam, got {self.loss}, {self.optimizer}")
        if self.lr <= 0 or min(self.batch_size, self.epochs, self.steps) < 1:
            raise ValueError("lr must be > 0 and batch_size, epochs, steps ≥ 1")
        if self.n_train is not None and self.n_train < self.batch_size:
            raise ValueError(f"n_train {self.n_train} is smaller than batch_size {self.batch_size}")

    @property
    def n_steps(self) -> int:
        """Optimiser steps in all."""
        if self.n_train is None:
            return self.steps
        return self.epochs * (self.n_train // self.batch_size)

    def describe(self) -> str:
        """One line: the setup in words."""
        imp = f"I_i = {self.importance_decay}^i" if self.importance_decay is not None else "no importance"
        data = (f"{self.n_train:,} samples × {self.epochs} epochs" if self.n_train is not None
                else f"{self.steps:,} fresh batches")
        init = f"N(0, {self.init_std}²)" if self.init_std is not None else "Xavier normal"
        return (f"loss {self.loss} over features, {imp}, {'bias' if self.bias else 'no bias'}, "
                f"{self.optimizer} lr {self.lr:g}, batch {self.batch_size}, {data} ({self.n_steps:,} steps), "
                f"W init {init}")


#: The centre of the grid: the family that landed nearest in a wider exploration (see
#: ``docs/toy_replication.md``); :func:`ae_grid` varies it one choice at a time.
BASE_SETUP = AESetup()

#: The repository's toy autoencoder (:func:`darkmatter.experiments.toy.train_toy_model`), re-implemented here.
REPO_VARIANT = "repo (toy.py)"
REPO_SETUP = AESetup(loss="mean", importance_decay=None, bias=True, optimizer="adam", lr=1e-3, batch_size=1024,
                     n_train=None, steps=10_000, init_std=None)


def ae_grid(base: AESetup = BASE_SETUP) -> dict[str, AESetup]:
    """The explored setups: ``base``, ``base`` with one choice changed, and :data:`REPO_SETUP`.

    Returns:
        {variant name: setup}, ``"base"`` first and :data:`REPO_VARIANT` last.
    """
    return {
        "base": base,
        "loss mean over features": replace(base, loss="mean"),
        "no importance": replace(base, importance_decay=None),
        "no bias": replace(base, bias=False),
        "adam lr 1e-3": replace(base, optimizer="adam", lr=1e-3),
        "lr ×0.3": replace(base, lr=base.lr * 0.3),
        "lr ×3": replace(base, lr=base.lr * 3),
        "batch ×4": replace(base, batch_size=base.batch_size * 4),
        "epochs ×5": replace(base, epochs=base.epochs * 5),
        "init std 0.01": replace(base, init_std=0.01),
        "init Xavier": replace(base, init_std=None),
        REPO_VARIANT: REPO_SETUP,
    }


@dataclass(frozen=True)
class ToyAE:
    """A trained toy autoencoder x' = ReLU(WᵀW x + b).

    Attributes:
        W: float64[n_hidden, n_features]; column i is feature i's direction in hidden space.
        b: float64[n_features] output bias (zeros when the setup has none).
        setup: how it was trained.
    """

    W: np.ndarray
    b: np.ndarray
    setup: AESetup

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """h = x Wᵀ: float64[n, n_hidden] from x: float[n, n_features]."""
        return x @ self.W.T

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """x' = ReLU(h W + b): float64[n, n_features]."""
        return np.maximum(self.hidden(x) @ self.W + self.b, 0.0)


def importance(setup: AESetup, n_features: int) -> np.ndarray:
    """I: float64[n_features], decay^i or ones."""
    if setup.importance_decay is None:
        return np.ones(n_features)
    return setup.importance_decay ** np.arange(n_features, dtype=np.float64)


def ae_loss_and_grads(W: np.ndarray, b: np.ndarray, x: np.ndarray,
                      setup: AESetup) -> tuple[float, np.ndarray, np.ndarray]:
    """The setup's loss on one batch and its gradients (hand-derived; tested against autograd).

    Args:
        W: float64[m, n]; b: float64[n]; x: float64[batch, n].
    Returns:
        (loss, dL/dW: float64[m, n], dL/db: float64[n]).
    """
    n = x.shape[1]
    weight = importance(setup, n) / (n if setup.loss == "mean" else 1)
    h = x @ W.T
    pre = h @ W + b
    err = np.maximum(pre, 0.0) - x
    loss = float((weight * err ** 2).sum(axis=1).mean())
    d_pre = 2.0 * weight * err * (pre > 0) / len(x)
    d_h = d_pre @ W.T
    return loss, h.T @ d_pre + d_h.T @ x, d_pre.sum(axis=0)


class _Optimizer:
    """Plain SGD or Adam (torch's defaults) over a list of float64 arrays, updated in place."""

    def __init__(self, params: list[np.ndarray], kind: str, lr: float) -> None:
        self.params, self.kind, self.lr, self.t = params, kind, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            if self.kind == "sgd":
                p -= self.lr * g
                continue
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            m_hat = self.m[i] / (1 - 0.9 ** self.t)
            v_hat = self.v[i] / (1 - 0.999 ** self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def _batches(n_samples: int, batch_size: int, epochs: int, rng: np.random.Generator):
    """Index arrays: ``epochs`` seeded permutations cut into full batches."""
    for _ in range(epochs):
        order = rng.permutation(n_samples)
        for k in range(n_samples // batch_size):
            yield order[k * batch_size:(k + 1) * batch_size]


def train_toy_ae(setup: AESetup, sparsity: float, seed: int, n_features: int = N_FEATURES,
                 n_hidden: int = N_HIDDEN) -> ToyAE:
    """Train x' = ReLU(WᵀW x + b) under ``setup`` (NumPy, float64, deterministic per seed).

    Args:
        sparsity: S, the probability that a feature is 0.
        seed: seeds W's initialisation, the training data and the batch order.
    Returns:
        :class:`ToyAE` with W: float64[n_hidden, n_features].
    Raises:
        ValueError: sparsity outside [0, 1).
    """
    init_rng, data_rng = _rng(seed, _AE_INIT), _rng(seed, _AE_DATA)
    std = setup.init_std if setup.init_std is not None else math.sqrt(2.0 / (n_features + n_hidden))
    W = init_rng.normal(0.0, std, (n_hidden, n_features))
    b = np.zeros(n_features)
    opt = _Optimizer([W, b], setup.optimizer, setup.lr)
    if setup.n_train is None:
        for _ in range(setup.steps):
            x = sample_features(setup.batch_size, n_features, sparsity, data_rng)
            _, gW, gb = ae_loss_and_grads(W, b, x, setup)
            opt.step([gW, gb if setup.bias else None])
    else:
        data = sample_features(setup.n_train, n_features, sparsity, data_rng)
        for idx in _batches(setup.n_train, setup.batch_size, setup.epochs, data_rng):
            _, gW, gb = ae_loss_and_grads(W, b, data[idx], setup)
            opt.step([gW, gb if setup.bias else None])
    return ToyAE(W=W.copy(), b=b.copy(), setup=setup)


# --------------------------------------------------------------------------- figures of W


def _share(G: np.ndarray) -> float:
    A = np.abs(G)
    rows = A.sum(axis=1)
    return float(np.mean(np.divide(np.diag(A), rows, out=np.zeros(len(A)), where=rows > 0)))


def _global(G: np.ndarray) -> float:
    A = np.abs(G)
    total = A.sum()
    return float(np.trace(A) / total) if total > 0 else 0.0


def _row_norm(G: np.ndarray) -> float:
    norms = np.linalg.norm(G, axis=1)
    return float(np.mean(np.divide(np.abs(np.diag(G)), norms, out=np.zeros(len(G)), where=norms > 0)))


#: Definitions of "diagonal dominance" of W: float[m, n] (G = WᵀW: float[n, n], the feature
#: Gram matrix; WWᵀ: float[m, m]). Each is 1 for a diagonal matrix; an all-zero row counts 0.
#: ``feature_share`` is :func:`darkmatter.experiments.toy.diagonal_dominance`'s ``mean_share``.
#: WWᵀ depends on the hidden basis (which a toy model does not privilege): ``hidden_share``
#: measures how far W's rows are from orthogonal in the basis the training started in.
DIAGONAL_DOMINANCE: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
    "feature_share": ("mean_i |G_ii| / Σ_j |G_ij|, G = WᵀW", lambda W: _share(W.T @ W)),
    "feature_global": ("Σ_i |G_ii| / Σ_ij |G_ij|, G = WᵀW", lambda W: _global(W.T @ W)),
    "feature_row_norm": ("mean_i |G_ii| / ‖G_i‖₂, G = WᵀW", lambda W: _row_norm(W.T @ W)),
    "hidden_share": ("mean_k |H_kk| / Σ_l |H_kl|, H = WWᵀ", lambda W: _share(W @ W.T)),
}


def cond_W(W: np.ndarray) -> float:
    """σ_max / σ_min of W: float[n_hidden, n_features]."""
    return float(np.linalg.cond(np.asarray(W, dtype=np.float64)))


def diagonal_dominance(W: np.ndarray) -> dict[str, float]:
    """Every definition of :data:`DIAGONAL_DOMINANCE` for W: float[n_hidden, n_features]."""
    W = np.asarray(W, dtype=np.float64)
    return {name: fn(W) for name, (_, fn) in DIAGONAL_DOMINANCE.items()}


@dataclass(frozen=True)
class AEFigures:
    """The original report's three figures and a plain MSE, for one trained autoencoder.

    Attributes:
        ae_loss: the setup's loss on the evaluation set (see the module docstring).
        mse_per_feature: mean of (x - x')² (uniform importance, per feature).
        cond_W: σ_max / σ_min of W.
        diag: {definition: value} for every definition of :data:`DIAGONAL_DOMINANCE`.
    """

    ae_loss: float
    mse_per_feature: float
    cond_W: float
    diag: dict[str, float]


def ae_figures(ae: ToyAE, x_eval: np.ndarray) -> AEFigures:
    """Figures of ``ae`` on x_eval: float[n_eval, n_features]."""
    loss, _, _ = ae_loss_and_grads(ae.W, ae.b, x_eval, ae.setup)
    mse = float(((x_eval - ae.reconstruct(x_eval)) ** 2).mean())
    return AEFigures(ae_loss=loss, mse_per_feature=mse, cond_W=cond_W(ae.W), diag=diagonal_dominance(ae.W))


def figure_distance(ae_loss: float, cond: float, diag: float, target: OriginalAE) -> float:
    """How far (loss, cond(W), diagonal dominance) lands from one row of the original report:
    |ln(loss / loss*)| + |ln(cond / cond*)| + |diag - diag*| / 0.1 (a factor e in loss or cond
    weighs as much as 0.1 of diagonal dominance)."""
    return (abs(math.log(ae_loss / target.ae_loss)) + abs(math.log(cond / target.cond_W))
            + abs(diag - target.diagonal_dominance) / 0.1)


# --------------------------------------------------------------------------- the plain SAE


@dataclass(frozen=True)
class PlainSAESettings:
    """A plain SAE of the original kind: untied W_enc / W_dec, ReLU, no decoder-norm constraint.

    loss = batch mean of Σ_d (h - ĥ)² (``mse="sum"``; ``"mean"`` divides it by d_model)
           + l1 · batch mean of Σ_i f_i       (f ≥ 0, so this is the L1 norm of the latents)

    Attributes:
        d_sae: latents.
        l1: L1 coefficient on the latent activations.
        lr: learning rate (constant).
        epochs: passes over the training activations (reshuffled each epoch, last partial batch dropped).
        batch_size: samples per step.
        optimizer: "adam" (torch's defaults) or "sgd" (plain).
        mse: "sum" or "mean" over d_model.
        init_std: W_enc, W_dec start N(0, init_std²); b_enc, b_dec start 0.
    """

    d_sae: int = 10
    l1: float = 0.01
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "adam"
    mse: Literal["sum", "mean"] = "sum"
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if min(self.d_sae, self.epochs, self.batch_size) < 1 or self.lr <= 0 or self.l1 < 0:
            raise ValueError("d_sae, epochs, batch_size must be ≥ 1, lr > 0 and l1 ≥ 0")
        if self.optimizer not in ("sgd", "adam") or self.mse not in ("sum", "mean"):
            raise ValueError(f"optimizer must be sgd|adam and mse sum|mean, got {self.optimizer}, {self.mse}")


#: The main plain SAE ("plain") and variants in the choices the original's description leaves open
#: (optimiser, MSE normalisation) and in the strength of the L1 penalty.
PLAIN_VARIANTS: dict[str, PlainSAESettings] = {
    "plain": PlainSAESettings(),
    "plain, mse mean over d_model": PlainSAESettings(mse="mean"),
    "plain, sgd": PlainSAESettings(optimizer="sgd"),
    "plain, sgd, mse mean over d_model": PlainSAESettings(optimizer="sgd", mse="mean"),
    "plain, l1 0.1": PlainSAESettings(l1=0.1),
    "plain, l1 0.3": PlainSAESettings(l1=0.3),
}


@dataclass(frozen=True)
class PlainSAE:
    """f = ReLU(h W_enc + b_enc), ĥ = f W_dec + b_dec.

    Attributes:
        W_enc: float64[d_model, d_sae]; b_enc: float64[d_sae];
        W_dec: float64[d_sae, d_model]; b_dec: float64[d_model].
    """

    W_enc: np.ndarray
    b_enc: np.ndarray
    W_dec: np.ndarray
    b_dec: np.ndarray

    def encode(self, h: np.ndarray) -> np.ndarray:
        """Latents f: float64[n, d_sae] from h: float[n, d_model]."""
        return np.maximum(h @ self.W_enc + self.b_enc, 0.0)

    def decode(self, f: np.ndarray) -> np.ndarray:
        """ĥ: float64[n, d_model] from f: float[n, d_sae]."""
        return f @ self.W_dec + self.b_dec


def plain_sae_loss_and_grads(sae: PlainSAE, h: np.ndarray,
                             settings: PlainSAESettings) -> tuple[float, list[np.ndarray]]:
    """The plain SAE's loss on one batch h: float64[batch, d_model] and its gradients
    [dW_enc, db_enc, dW_dec, db_dec] (hand-derived; tested against autograd)."""
    scale = 1.0 / (h.shape[1] if settings.mse == "mean" else 1)
    pre = h @ sae.W_enc + sae.b_enc
    f = np.maximum(pre, 0.0)
    err = sae.decode(f) - h
    loss = float(scale * (err ** 2).sum(axis=1).mean() + settings.l1 * f.sum(axis=1).mean())
    d_err = 2.0 * scale * err / len(h)
    d_f = d_err @ sae.W_dec.T + settings.l1 / len(h)
    d_pre = d_f * (pre > 0)
    return loss, [h.T @ d_pre, d_pre.sum(axis=0), f.T @ d_err, d_err.sum(axis=0)]


def train_plain_sae(h: np.ndarray, settings: PlainSAESettings, seed: int) -> PlainSAE:
    """Train the plain SAE on h: float[n_train, d_model] (deterministic per seed).

    Args:
        seed: seeds the initialisation and the batch order.
    Raises:
        ValueError: fewer activations than one batch.
    """
    h = np.asarray(h, dtype=np.float64)
    if len(h) < settings.batch_size:
        raise ValueError(f"{len(h)} activations are fewer than one batch of {settings.batch_size}")
    rng = _rng(seed, _SAE_INIT)
    d_model = h.shape[1]
    sae = PlainSAE(W_enc=rng.normal(0.0, settings.init_std, (d_model, settings.d_sae)), b_enc=np.zeros(settings.d_sae),
                   W_dec=rng.normal(0.0, settings.init_std, (settings.d_sae, d_model)), b_dec=np.zeros(d_model))
    opt = _Optimizer([sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec], settings.optimizer, settings.lr)
    for idx in _batches(len(h), settings.batch_size, settings.epochs, rng):
        _, grads = plain_sae_loss_and_grads(sae, h[idx], settings)
        opt.step(grads)
    return sae


# --------------------------------------------------------------------------- SAE figures


@dataclass(frozen=True)
class LatentStats:
    """Attributes:
        l0: mean over samples of the latents with activation > 0.
        dead: latents that are 0 on every sample; active: d_sae - dead.
        collapsed: every latent dead or L0 == 0.
        alive: bool[d_sae].
    """

    l0: float
    dead: int
    active: int
    collapsed: bool
    alive: np.ndarray


def latent_stats(f: np.ndarray) -> LatentStats:
    """L0, dead and active latents of f: float[n_samples, d_sae] (latent activations)."""
    fires = np.asarray(f) > 0
    alive = np.asarray(fires.any(axis=0), dtype=bool)
    l0 = float(fires.sum(axis=1).mean())
    dead = int((~alive).sum())
    return LatentStats(l0=l0, dead=dead, active=int(alive.sum()), collapsed=bool(dead == len(alive) or l0 == 0.0),
                       alive=alive)


@dataclass(frozen=True)
class SAEFigures:
    """One SAE on one toy model's evaluation hidden activations (see the module docstring).

    Attributes:
        l0, dead, active, collapsed: as :class:`LatentStats`.
        fvu: fraction of variance unexplained.
        procrustes: Procrustes similarity of the alive decoder rows to the columns of W (nan if < 2 alive).
        matched_abs_cos: mean |cos| of the Hungarian-matched pairs (nan if < 2 alive).
    """

    l0: float
    dead: int
    active: int
    collapsed: bool
    fvu: float
    procrustes: float
    matched_abs_cos: float


def decoder_alignment(W: np.ndarray, W_dec: np.ndarray, alive: np.ndarray) -> tuple[float, float]:
    """(Procrustes similarity, matched |cos|) of the alive rows of W_dec: float[d_sae, d_model] to
    the feature directions, the columns of W: float[d_model, n_features]; (nan, nan) with fewer than
    2 alive latents or a zero row."""
    from darkmatter.experiments.toy import procrustes_similarity

    rows = np.asarray(W_dec, dtype=np.float64)[np.asarray(alive, dtype=bool)]
    if len(rows) < 2 or (np.linalg.norm(rows, axis=1) == 0).any():
        return float("nan"), float("nan")
    pm = procrustes_similarity(np.asarray(W, dtype=np.float64).T, rows)
    return pm.similarity, pm.mean_abs_cos


def _fvu(h: np.ndarray, h_hat: np.ndarray) -> float:
    total = float(((h - h.mean(axis=0)) ** 2).sum())
    return float(((h - h_hat) ** 2).sum()) / total if total > 0 else float("nan")


def plain_sae_figures(sae: PlainSAE, h_eval: np.ndarray, W: np.ndarray) -> SAEFigures:
    """Figures of a plain SAE on h_eval: float[n_eval, d_model]; W: float[d_model, n_features]."""
    f = sae.encode(h_eval)
    stats = latent_stats(f)
    procrustes, cos = decoder_alignment(W, sae.W_dec, stats.alive)
    return SAEFigures(l0=stats.l0, dead=stats.dead, active=stats.active, collapsed=stats.collapsed,
                      fvu=_fvu(h_eval, sae.decode(f)), procrustes=procrustes, matched_abs_cos=cos)


def saelens_sae_figures(h_train: np.ndarray, h_eval: np.ndarray, W: np.ndarray, settings: PlainSAESettings,
                        seed: int) -> SAEFigures:
    """Train SAELens's ``StandardTrainingSAE`` with the plain SAE's d_sae, L1, lr, epochs and batch
    size through :func:`darkmatter.experiments.toy.train_toy_sae` (the project's ``train_sae``: fixed
    ``l1_coefficient``, raw activations, ``b_dec`` 0, decoder init norm 0.1, L1 weighted by decoder
    norms, MSE summed over d_model, gradient clipping at 1) and give its figures.

    Args:
        h_train: float[n_train, d_model]; h_eval: float[n_eval, d_model]; W: float[d_model, n_features].
        seed: seeds SAELens's initialisation and batch order.
    """
    import torch

    from darkmatter.experiments.toy import train_toy_sae

    ev = train_toy_sae(torch.from_numpy(np.asarray(h_train, dtype=np.float32)),
                       torch.from_numpy(np.asarray(h_eval, dtype=np.float32)), d_sae=settings.d_sae, l1=settings.l1,
                       lr=settings.lr, epochs=settings.epochs, batch_size=settings.batch_size, seed=seed)
    procrustes, cos = decoder_alignment(W, ev.W_dec, ev.alive)
    return SAEFigures(l0=ev.l0, dead=ev.dead, active=ev.active_latents, collapsed=ev.collapsed, fvu=ev.fvu,
                      procrustes=procrustes, matched_abs_cos=cos)


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class AERecord:
    """One (setup, S, seed) toy autoencoder and its figures."""

    variant: str
    sparsity: float
    seed: int
    figures: AEFigures


@dataclass(frozen=True)
class SAERecord:
    """One (AE setup, S, seed): the toy autoencoder's figures and every SAE's.

    Attributes:
        ae: the AE setup's name in the grid.
        saes: {SAE name: figures}: the names of :data:`PLAIN_VARIANTS` and, where run, ``"saelens"``.
    """

    ae: str
    sparsity: float
    seed: int
    figures: AEFigures
    saes: dict[str, SAEFigures] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSettings:
    """Sizes of one replication run.

    Attributes:
        n_train: SAE training activations (fresh samples through the trained AE).
        n_eval: fresh evaluation samples (AE figures and SAE figures).
        sparsities, seeds: the SAE replication grid; grid_seeds: the seeds of the AE-setup grid.
        saelens: also train SAELens's SAE (on the setups :func:`run_saes` is told to).
    """

    n_train: int = 10_000
    n_eval: int = 10_000
    sparsities: tuple[float, ...] = SPARSITIES
    seeds: tuple[int, ...] = SEEDS
    grid_seeds: tuple[int, ...] = SEEDS
    saelens: bool = True


class AECache:
    """Trained toy autoencoders and their figures by (setup name, S, seed), so that an autoencoder
    used by the grid and by the SAE replication is trained once. The evaluation set of (S, seed) is
    the same for every setup."""

    def __init__(self, grid: Mapping[str, AESetup], n_eval: int) -> None:
        self.grid, self.n_eval = dict(grid), n_eval
        self._store: dict[tuple[str, float, int], tuple[ToyAE, AEFigures]] = {}

    def get(self, name: str, sparsity: float, seed: int) -> tuple[ToyAE, AEFigures]:
        key = (name, sparsity, seed)
        if key not in self._store:
            ae = train_toy_ae(self.grid[name], sparsity, seed)
            self._store[key] = (ae, ae_figures(ae, eval_features(self.n_eval, sparsity, seed)))
        return self._store[key]


def eval_features(n_eval: int, sparsity: float, seed: int) -> np.ndarray:
    """The evaluation set of (S, seed): float64[n_eval, N_FEATURES]."""
    return sample_features(n_eval, N_FEATURES, sparsity, _rng(seed, _EVAL_DATA))


def run_ae_grid(cache: AECache, sparsities: Sequence[float], seeds: Sequence[int],
                progress: Callable[[str], None] | None = None) -> list[AERecord]:
    """Every setup of ``cache.grid`` × S × seed."""
    records = []
    for name in cache.grid:
        for sparsity in sparsities:
            for seed in seeds:
                if progress:
                    progress(f"AE {name} S={sparsity} seed={seed}")
                records.append(AERecord(variant=name, sparsity=sparsity, seed=seed,
                                        figures=cache.get(name, sparsity, seed)[1]))
    return records


def run_saes(cache: AECache, setups: Sequence[str], settings: RunSettings, saelens_on: Iterable[str] = (),
             plain_variants: Mapping[str, PlainSAESettings] = PLAIN_VARIANTS,
             progress: Callable[[str], None] | None = None) -> list[SAERecord]:
    """For each AE setup × S × seed: every plain SAE variant and, on the setups in ``saelens_on``
    (when ``settings.saelens``), SAELens's SAE with the ``"plain"`` variant's settings, all on the
    same hidden activations."""
    saelens_on = set(saelens_on) if settings.saelens else set()
    records = []
    for name in setups:
        for sparsity in settings.sparsities:
            for seed in settings.seeds:
                if progress:
                    progress(f"SAEs on {name} S={sparsity} seed={seed}")
                ae, figs = cache.get(name, sparsity, seed)
                h_train = ae.hidden(sample_features(settings.n_train, N_FEATURES, sparsity,
                                                    _rng(seed, _SAE_TRAIN_DATA)))
                h_eval = ae.hidden(eval_features(settings.n_eval, sparsity, seed))
                saes = {v: plain_sae_figures(train_plain_sae(h_train, s, seed), h_eval, ae.W)
                        for v, s in plain_variants.items()}
                if name in saelens_on:
                    saes["saelens"] = saelens_sae_figures(h_train, h_eval, ae.W, plain_variants["plain"],
                                                          _stream_seed(seed, _SAELENS_SEED))
                records.append(SAERecord(ae=name, sparsity=sparsity, seed=seed, figures=figs, saes=saes))
    return records


# --------------------------------------------------------------------------- tables (from JSON-like dicts)


def _finite(x: Any) -> float:
    return float(x) if x is not None else float("nan")


def _mean_sd(values: Sequence[Any]) -> tuple[float, float]:
    v = np.array([_finite(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _pm(values: Sequence[Any], fmt: str) -> str:
    m, s = _mean_sd(values)
    return "–" if not math.isfinite(m) else f"{m:{fmt}} ± {s:{fmt}}"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy scalars and arrays → JSON values; nan and inf → None."""
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _by(records: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def distances(ae_records: Sequence[dict], definition: str) -> dict[str, dict[float, float]]:
    """{variant: {S: figure_distance of the seed-mean figures to the original row}} for one
    definition of diagonal dominance; the key 0.0 holds the sum over S."""
    out: dict[str, dict[float, float]] = {}
    for (variant,), runs in _by(ae_records, "variant").items():
        per_s: dict[float, float] = {}
        for (s,), rs in _by(runs, "sparsity").items():
            loss = _mean_sd([r["figures"]["ae_loss"] for r in rs])[0]
            cond = _mean_sd([r["figures"]["cond_W"] for r in rs])[0]
            diag = _mean_sd([r["figures"]["diag"][definition] for r in rs])[0]
            per_s[float(s)] = figure_distance(loss, cond, diag, ORIGINAL_AE[float(s)])
        per_s[0.0] = sum(per_s.values())
        out[variant] = per_s
    return out


@dataclass(frozen=True)
class Nearest:
    """The grid variant and definition of diagonal dominance that land nearest the original.

    Attributes:
        variant: name in the grid; definition: key of :data:`DIAGONAL_DOMINANCE`.
        distance: their :func:`figure_distance` (at one S, or summed over S).
    """

    variant: str
    definition: str
    distance: float


def nearest(ae_records: Sequence[dict], sparsity: float) -> Nearest:
    """The (variant, definition) whose seed-mean figures land nearest the original row at
    ``sparsity``; ``sparsity=0.0`` takes the distance summed over S."""
    candidates = [(d_by_variant[sparsity], v, name) for name in DIAGONAL_DOMINANCE
                  for v, d_by_variant in distances(ae_records, name).items()]
    distance, variant, definition = min(candidates, key=lambda t: t[0])
    return Nearest(variant=variant, definition=definition, distance=distance)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def table_original() -> str:
    """The original report's table (from :data:`ORIGINAL_AE`)."""
    lines = ["| S | AE loss | cond(W) | diagonal dominance | SAE |", "|---|---|---|---|---|"]
    for s, o in ORIGINAL_AE.items():
        lines.append(f"| {s:.2f} | {o.ae_loss:.4f} | {o.cond_W:.1f} | {o.diagonal_dominance:.3f} | {o.sae} |")
    return "\n".join(lines)


def table_ae_grid(results: dict) -> str:
    """The AE-setup grid: seed-mean AE loss / cond(W) / diagonal dominance (the definition nearest
    at S = 0.9) per S, and the distance to the original at S = 0.9 and summed over S."""
    records, definition = results["ae_grid"], results["definition"]
    dist = distances(records, definition)
    sparsities = sorted({float(r["sparsity"]) for r in records})
    head = " | ".join(f"S={s:.2f}: loss / cond / diag" for s in sparsities)
    lines = [f"| variant | setup | {head} | distance S=0.90 | distance Σ_S |",
             "|---|---|" + "---|" * len(sparsities) + "---|---|"]
    for (variant,), runs in _by(records, "variant").items():
        cells = []
        for s in sparsities:
            rs = [r for r in runs if float(r["sparsity"]) == s]
            loss = _mean_sd([r["figures"]["ae_loss"] for r in rs])[0]
            cond = _mean_sd([r["figures"]["cond_W"] for r in rs])[0]
            diag = _mean_sd([r["figures"]["diag"][definition] for r in rs])[0]
            cells.append(f"{loss:.4f} / {cond:.2f} / {diag:.3f}")
        setup = results["grid_setups"][variant]["describe"]
        lines.append(f"| {variant} | {setup} | {' | '.join(cells)} | {dist[variant][0.9]:.2f} | "
                     f"{dist[variant][0.0]:.2f} |")
    orig = " | ".join(f"{ORIGINAL_AE[s].ae_loss:.4f} / {ORIGINAL_AE[s].cond_W:.2f} / "
                      f"{ORIGINAL_AE[s].diagonal_dominance:.3f}" for s in sparsities)
    lines.append(f"| original report | seed 123 | {orig} | 0 | 0 |")
    return "\n".join(lines)


def table_definitions(results: dict) -> str:
    """The nearest variant's seed-mean figures (± sd over seeds) under every definition of diagonal
    dominance, beside the original's, with the distance at S = 0.9 per definition."""
    variant = results["nearest"]["S=0.90"]["variant"]
    records = [r for r in results["ae_grid"] if r["variant"] == variant]
    sparsities = sorted({float(r["sparsity"]) for r in records})
    lines = [f"| `{variant}` | definition | " + " | ".join(f"S={s:.2f}" for s in sparsities)
             + " | distance S=0.90 |", "|---|---|" + "---|" * len(sparsities) + "---|"]
    for name, (text, _) in DIAGONAL_DOMINANCE.items():
        cells = [_pm([r["figures"]["diag"][name] for r in records if float(r["sparsity"]) == s], ".3f")
                 for s in sparsities]
        lines.append(f"| {name} | {_md(text)} | {' | '.join(cells)} | {distances(records, name)[variant][0.9]:.2f} |")
    lines.append("| original report | unknown | "
                 + " | ".join(f"{ORIGINAL_AE[s].diagonal_dominance:.3f}" for s in sparsities) + " | 0 |")
    for label, key, fmt in (("cond(W)", "cond_W", ".2f"), ("AE loss", "ae_loss", ".4f"),
                            ("MSE per feature", "mse_per_feature", ".2e")):
        cells = [_pm([r["figures"][key] for r in records if float(r["sparsity"]) == s], fmt) for s in sparsities]
        lines.append(f"| {label} | | {' | '.join(cells)} | |")
    return "\n".join(lines)


def _sae_names(records: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(name for r in records for name in r["saes"]))


def table_replication(results: dict, ae: str) -> str:
    """Mean ± sd over seeds, per S, of one AE setup's figures and of the plain and SAELens SAEs'
    active and dead latents, L0, Procrustes, matched |cos|, FVU and collapsed runs."""
    records = [r for r in results["sae_runs"] if r["ae"] == ae]
    definition = results["definition"]
    saes = [s for s in ("plain", "saelens") if s in _sae_names(records)]
    lines = ["| S | AE loss | cond(W) | diag | SAE | active | dead | L0 | Procrustes | matched \\|cos\\| | FVU "
             "| collapsed |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (s,), runs in _by(records, "sparsity").items():
        ae_cells = (f"{_pm([r['figures']['ae_loss'] for r in runs], '.4f')} | "
                    f"{_pm([r['figures']['cond_W'] for r in runs], '.2f')} | "
                    f"{_pm([r['figures']['diag'][definition] for r in runs], '.3f')}")
        for i, sae in enumerate(saes):
            fs = [r["saes"][sae] for r in runs]
            first = f"| {float(s):.2f} | {ae_cells}" if i == 0 else "| | | |"
            lines.append(f"{first} | {sae} | {_pm([f['active'] for f in fs], '.1f')} | "
                         f"{_pm([f['dead'] for f in fs], '.1f')} | {_pm([f['l0'] for f in fs], '.2f')} | "
                         f"{_pm([f['procrustes'] for f in fs], '.3f')} | "
                         f"{_pm([f['matched_abs_cos'] for f in fs], '.3f')} | {_pm([f['fvu'] for f in fs], '.3f')} | "
                         f"{sum(bool(f['collapsed']) for f in fs)}/{len(fs)} |")
    return "\n".join(lines)


def table_per_seed(results: dict, sparsity: float) -> str:
    """Per AE setup and seed at one S: AE loss, cond(W) and, per SAE, active / dead / L0."""
    records = [r for r in results["sae_runs"] if float(r["sparsity"]) == sparsity]
    saes = _sae_names(records)
    lines = ["| AE | seed | AE loss | cond(W) | " + " | ".join(f"{s}: active / dead / L0" for s in saes) + " |",
             "|---|---|---|---|" + "---|" * len(saes)]
    for r in records:
        cells = [f"{r['saes'][s]['active']} / {r['saes'][s]['dead']} / {r['saes'][s]['l0']:.2f}"
                 if s in r["saes"] else "–" for s in saes]
        lines.append(f"| {r['ae']} | {r['seed']} | {r['figures']['ae_loss']:.4f} | {r['figures']['cond_W']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_variants(results: dict) -> str:
    """Every SAE × AE setup × S: L0 and dead latents (mean ± sd over seeds) and collapsed runs."""
    records = results["sae_runs"]
    sparsities = sorted({float(r["sparsity"]) for r in records})
    lines = ["| AE | SAE | " + " | ".join(f"S={s:.2f}: L0 / dead / collapsed" for s in sparsities) + " |",
             "|---|---|" + "---|" * len(sparsities)]
    for (ae,), runs in _by(records, "ae").items():
        for sae in _sae_names(runs):
            cells = []
            for s in sparsities:
                fs = [r["saes"][sae] for r in runs if float(r["sparsity"]) == s and sae in r["saes"]]
                cells.append(f"{_pm([f['l0'] for f in fs], '.2f')} / {_pm([f['dead'] for f in fs], '.1f')} / "
                             f"{sum(bool(f['collapsed']) for f in fs)}/{len(fs)}")
            lines.append(f"| {ae} | {sae} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(results: dict) -> str:
    """The nearest setups, the collapsed runs (per AE setup and SAE where any), and the runs with
    dead latents at S = 0.9, as bullet lines."""
    records = results["sae_runs"]
    near = results["nearest"]
    lines = [f"- Nearest the original at S = 0.90: `{near['S=0.90']['variant']}` with diagonal dominance "
             f"`{near['S=0.90']['definition']}` (distance {near['S=0.90']['distance']:.2f}); summed over S: "
             f"`{near['sum']['variant']}` with `{near['sum']['definition']}` (distance {near['sum']['distance']:.2f})."]
    trainings = [(r, sae, f) for r in records for sae, f in r["saes"].items()]
    collapsed = [(r, sae) for r, sae, f in trainings if f["collapsed"]]
    setups = list(dict.fromkeys(r["ae"] for r in records))
    with_saelens = len({r["ae"] for r in records if "saelens" in r["saes"]})
    lines.append(f"- Collapsed SAEs: {len(collapsed)} of {len(trainings)} trainings ({len(setups)} AE setups × "
                 f"{len({r['sparsity'] for r in records})} S × {len({r['seed'] for r in records})} seeds × "
                 f"{len(PLAIN_VARIANTS)} plain SAEs, and SAELens's on {with_saelens} of the setups).")
    by_pair: dict[tuple[str, str], list[str]] = {}
    for r, sae in collapsed:
        by_pair.setdefault((r["ae"], sae), []).append(f"S={float(r['sparsity']):.2f} seed {r['seed']}")
    for (ae, sae), where in by_pair.items():
        lines.append(f"  - AE `{ae}`, SAE `{sae}`: {', '.join(where)}.")
    at_09 = [(r, sae, f) for r, sae, f in trainings if float(r["sparsity"]) == 0.9]
    for sae_kind, label in (("plain", "the main plain SAE"), ("saelens", "SAELens")):
        runs = [(r, f) for r, sae, f in at_09 if sae == sae_kind]
        if runs:
            worst = max(f["dead"] for _, f in runs)
            lines.append(f"- At S = 0.90, {label}: {sum(f['dead'] > 0 for _, f in runs)} of {len(runs)} runs have a "
                         f"dead latent (at most {worst}); lowest L0 {min(f['l0'] for _, f in runs):.2f}.")
    return "\n".join(lines)


def table_run(results: dict) -> str:
    """One line: seeds, grid seeds, date, wall time and machine of the run."""
    m = results["meta"]
    return (f"Run of {m['date']}: seeds {', '.join(map(str, results['seeds']))} (AE grid: "
            f"{', '.join(map(str, results['grid_seeds']))}); {m['wall_s']:.0f} s on {m['cpu_count']} CPUs "
            f"({m['platform']}; Python {m['python']}, NumPy {m['numpy']}, torch {m['torch']}, "
            f"SAELens {m['sae_lens']}).")


def tables(results: dict) -> dict[str, str]:
    """Every generated block of ``docs/toy_replication.md``, from the results JSON (as loaded)."""
    out = {"run": table_run(results), "original": table_original(), "ae-grid": table_ae_grid(results),
           "definitions": table_definitions(results)}
    roles = {"nearest-0.90": results["nearest"]["S=0.90"]["variant"],
             "nearest-sum": results["nearest"]["sum"]["variant"], "repo": REPO_VARIANT}
    for role, ae in roles.items():
        setup = results["grid_setups"][ae]["describe"]
        out[f"replication-{role}"] = f"AE setup `{ae}`: {setup}.\n\n{table_replication(results, ae)}"
    out["per-seed-0.90"] = table_per_seed(results, 0.9)
    out["sae-variants"] = table_variants(results)
    out["verdict"] = verdict(results)
    return out


_BLOCK = re.compile(r"<!-- generated: (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- end generated -->", re.S)


def generated_blocks(doc: str) -> dict[str, str]:
    """{name: body} of every ``<!-- generated: name -->`` … ``<!-- end generated -->`` block of a
    document (the body without its final newline)."""
    return {m["name"]: m["body"].removesuffix("\n") for m in _BLOCK.finditer(doc)}


def fill_generated(doc: str, blocks: Mapping[str, str]) -> str:
    """``doc`` with the body of each generated block replaced by ``blocks[name]``.

    Raises:
        KeyError: the document has a block that ``blocks`` does not provide.
    """
    return _BLOCK.sub(lambda m: f"<!-- generated: {m['name']} -->\n{blocks[m['name']]}\n<!-- end generated -->",
                      doc)

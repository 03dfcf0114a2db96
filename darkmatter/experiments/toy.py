"""Toy models of superposition, an SAE on their hidden layer, and ICA on the SAE's residual.

The toy model follows Elhage et al. 2022, "Toy Models of Superposition"
(transformer-circuits.pub/2022/toy_model), with uniform feature importance:

    x: float32[batch, n]   each feature independently 0 with probability S (the sparsity),
                           else Uniform[0, 1]
    h = x @ W.T            W: float32[m, n], h: float32[batch, m] (the hidden layer)
    x' = ReLU(h @ W + b)   b: float32[n]
    loss = mean over batch and features of (x - x')²   (uniform importance)

trained with Adam (lr 1e-3, batches of 1,024 fresh samples, 10,000 steps, W initialised
``xavier_normal_`` and b at zero, as in the paper's notebook; the notebook used AdamW with
torch's default weight decay 0.01, we use plain Adam).

The SAE is SAELens's ``StandardTrainingSAE`` (ReLU latents, L1 penalty) trained on the
hidden activations h by :func:`darkmatter.experiments.training.train_sae`, the project's one
SAE trainer (SAELens's ``SAETrainer``), with one fixed coefficient (no calibration), raw
activations (no scaling to mean norm sqrt(d)) and SAELens's own initialisation. Its
conventions in sae-lens 6.54 (read from ``sae_lens/saes/standard_sae.py`` and ``sae.py``):

* ``l1_coefficient`` is a field of ``StandardTrainingSAEConfig`` (library default 1.0; we
  pass the issue's 0.01). ``l1_warm_up_steps`` defaults to 0 (no warm-up); we pass 0
  explicitly. The learning rate is constant (``lr_end = lr``, no warm-up or decay).
* loss = Σ_d (h - ĥ)²  (summed over d_in, averaged over the batch)
         + l1_coefficient · Σ_i f_i · ‖W_dec[i]‖  (averaged over the batch).
  The decoder rows are NOT constrained to unit norm; the L1 term is weighted by their norms.
* ``decoder_init_norm = 0.1``: W_dec rows start at norm 0.1 (Kaiming-uniform directions),
  W_enc = W_dec.T, b_enc = b_dec = 0. ``apply_b_dec_to_input = True`` (the default, kept):
  the encoder sees h - b_dec. ``normalize_activations = "none"``.
* ``SAETrainer`` clips the gradient norm at 1.0.

ICA on the SAE residual r = h - SAE(h) is the pipeline's own decomposition: float64
covariance, ``darkmatter.analysis.stats.pca_from_cov``, ``pca_whitening`` and
:func:`darkmatter.analysis.decompose.decompose` (one scikit-learn FastICA fit, logcosh);
every baseline of :mod:`darkmatter.analysis.directions` gives the chance level.

Definitions used in the records (all on a held-out evaluation set of fresh samples):

* represented feature: a column W[:, i] with ‖W[:, i]‖ > ``represented_norm`` (0.5).
* diagonal dominance of G = WᵀW (float64[n, n]): ``diag_dominant_fraction`` is the fraction
  of rows i with |G_ii| > Σ_{j≠i} |G_ij| (strict row diagonal dominance);
  ``diag_share_mean`` is the mean over i of |G_ii| / Σ_j |G_ij| ∈ [0, 1] (a row is dominant
  iff its share > 0.5; an all-zero row counts 0). We report this bounded share rather than
  the unbounded ratio |G_ii| / Σ_{j≠i}|G_ij|, which is infinite for a feature orthogonal to
  all others and so would dominate any mean.
* L0: mean over evaluation samples of the number of latents with activation > 0.
* dead latent: a latent that is 0 on every evaluation sample. ``active_latents`` =
  d_sae - dead = number of latents that fire on at least one evaluation sample (a count of
  latents, where L0 is a per-sample average).
* collapsed: every latent dead, or L0 == 0 (the same event on a finite evaluation set).
* SAE FVU: Σ‖h - ĥ‖² / Σ‖h - mean(h)‖².
* Procrustes similarity: see ``procrustes_similarity``.
* missed feature: a represented true feature whose best |cos| to the decoder row of any
  alive latent is < ``cos_threshold`` (0.9); found by ICA: some ICA mixing direction has
  |cos| > ``cos_threshold`` with it. A baseline's figure is the mean over draws (seeds
  ``seed``, ``seed + 1``, …) of the missed features' mean best |cos| to its k directions.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import procrustes

from darkmatter.analysis import directions as direction_sets
from darkmatter.analysis.compare import unit_rows
from darkmatter.analysis.decompose import decompose
from darkmatter.analysis.ica import match, pca_whitening
from darkmatter.analysis.stats import pca_from_cov
from darkmatter.experiments.training import TrainingSpec, evaluate_sae, train_sae
from darkmatter.sources.collect import reconstruct

# Streams of one run's seed: each gets its own generator so changing e.g. --ae-steps leaves the
# SAE's data and initialisation unchanged. _SAE_SHUFFLE is retired (train_sae seeds the batch
# order from the SAE's seed); it keeps its number so the other streams keep theirs.
_AE_INIT, _AE_DATA, _SAE_TRAIN_DATA, _EVAL_DATA, _SAE_INIT, _SAE_SHUFFLE, _RANDOM_BASELINE = range(7)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Architecture:
    """An n-m-n toy model: n features squeezed through m hidden dimensions."""

    n_features: int
    n_hidden: int

    @property
    def name(self) -> str:
        return f"{self.n_features}-{self.n_hidden}-{self.n_features}"


def parse_architecture(text: str) -> Architecture:
    """"10-5-10" → Architecture(10, 5).

    Raises:
        ValueError: not three positive integers n-m-n with equal ends and m ≥ 1.
    """
    parts = text.strip().split("-")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) != 3 or sizes[0] != sizes[2] or min(sizes) < 1:
        raise ValueError(f"architecture {text!r} is not n-m-n with positive integers (e.g. '10-5-10')")
    return Architecture(n_features=sizes[0], n_hidden=sizes[1])


@dataclass(frozen=True)
class ToySettings:
    """Everything but the architecture, sparsity and seed of one run.

    Attributes:
        ae_steps: Adam steps of the toy autoencoder (one fresh batch each).
        ae_batch_size: samples per toy-autoencoder step.
        ae_lr: toy-autoencoder Adam learning rate (constant).
        n_train: hidden activations in the SAE's training set.
        n_eval: fresh samples of the evaluation set (AE loss, SAE metrics, ICA).
        sae_epochs: passes of the SAE trainer over the n_train hidden activations.
        sae_batch_size: samples per SAE step (the last partial batch of an epoch is dropped).
        sae_l1: SAELens ``l1_coefficient``.
        sae_lr: SAELens trainer learning rate (constant, ``lr_end = lr``).
        d_sae: SAE latents; None means n (the number of true features).
        cos_threshold: |cos| above which a direction counts as recovering a feature.
        represented_norm: ‖W[:, i]‖ above which feature i counts as represented.
        degenerate_tol: residual PCA eigenvalues ≤ tol · largest are degenerate (not whitened).
        n_random_baselines: draws of each baseline direction set (the chance level of ICA's figure).
    """

    ae_steps: int = 10_000
    ae_batch_size: int = 1024
    ae_lr: float = 1e-3
    n_train: int = 20_000
    n_eval: int = 10_000
    sae_epochs: int = 20
    sae_batch_size: int = 256
    sae_l1: float = 0.01
    sae_lr: float = 1e-3
    d_sae: int | None = None
    cos_threshold: float = 0.9
    represented_norm: float = 0.5
    degenerate_tol: float = 1e-6
    n_random_baselines: int = 200

    def __post_init__(self) -> None:
        if min(self.ae_steps, self.ae_batch_size, self.n_train, self.n_eval, self.sae_epochs,
               self.sae_batch_size, self.n_random_baselines) < 1:
            raise ValueError("steps, sizes, epochs and baseline draws must be ≥ 1")
        if self.sae_batch_size > self.n_train:
            raise ValueError(f"sae_batch_size {self.sae_batch_size} exceeds n_train {self.n_train}")
        if self.d_sae is not None and self.d_sae < 1:
            raise ValueError(f"d_sae must be ≥ 1, got {self.d_sae}")
        if self.ae_lr <= 0 or self.sae_lr <= 0 or self.sae_l1 < 0:
            raise ValueError("learning rates must be > 0 and the L1 coefficient ≥ 0")


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint32)[0])


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(seed, stream))


# --------------------------------------------------------------------------- data and toy model


def sample_features(n_samples: int, n_features: int, sparsity: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Synthetic features: float32[n_samples, n_features], each entry independently 0 with
    probability ``sparsity`` (S), else Uniform[0, 1] (Elhage et al. 2022).

    Raises:
        ValueError: sparsity outside [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    values = torch.rand(n_samples, n_features, generator=generator)
    present = torch.rand(n_samples, n_features, generator=generator) >= sparsity
    return values * present


def zero_baseline_loss(sparsity: float) -> float:
    """Toy-AE loss of predicting x' = 0: E[x_i²] = (1 - S) / 3."""
    return (1.0 - sparsity) / 3.0


@dataclass(frozen=True)
class ToyModel:
    """A trained toy ReLU autoencoder.

    Attributes:
        W: float32[m, n]; column i is feature i's direction in hidden space.
        b: float32[n] output bias.
        loss_history: (step, evaluation loss) at 10 evenly spaced points, the last at the end.
    """

    W: np.ndarray
    b: np.ndarray
    loss_history: tuple[tuple[int, float], ...]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h = x @ W.T: float32[batch, m] from x: float32[batch, n]."""
        return x @ torch.from_numpy(self.W).T

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x' = ReLU(h @ W + b): float32[batch, n]."""
        return torch.relu(self.hidden(x) @ torch.from_numpy(self.W) + torch.from_numpy(self.b))

    def loss(self, x: torch.Tensor) -> float:
        """Mean squared error over batch and features (uniform importance)."""
        return float(((x - self.reconstruct(x)) ** 2).mean())


def train_toy_model(arch: Architecture, sparsity: float, seed: int, steps: int = 10_000,
                    batch_size: int = 1024, lr: float = 1e-3,
                    eval_x: torch.Tensor | None = None) -> ToyModel:
    """Train x' = ReLU(WᵀW x + b) with Adam on fresh batches (Elhage et al. 2022, uniform importance).

    Args:
        arch: n features, m hidden dimensions.
        sparsity: S, the probability that a feature is zero.
        seed: seeds W's initialisation and the batch stream.
        steps: Adam steps, one fresh batch of ``batch_size`` each.
        eval_x: float32[n_eval, n] for the loss history; None draws 4,096 samples from the seed.
    """
    init_gen = _generator(seed, _AE_INIT)
    data_gen = _generator(seed, _AE_DATA)
    W = torch.empty(arch.n_hidden, arch.n_features)
    # xavier_normal_ std = sqrt(2 / (fan_in + fan_out)), drawn from our generator
    W.normal_(0.0, math.sqrt(2.0 / (arch.n_hidden + arch.n_features)), generator=init_gen)
    W = torch.nn.Parameter(W)
    b = torch.nn.Parameter(torch.zeros(arch.n_features))
    opt = torch.optim.Adam([W, b], lr=lr)
    if eval_x is None:
        eval_x = sample_features(4096, arch.n_features, sparsity, _generator(seed, _EVAL_DATA))
    checkpoints = {int(round(steps * k / 10)) for k in range(1, 11)}
    history: list[tuple[int, float]] = []
    for step in range(1, steps + 1):
        x = sample_features(batch_size, arch.n_features, sparsity, data_gen)
        loss = ((x - torch.relu((x @ W.T) @ W + b)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in checkpoints:
            with torch.no_grad():
                eval_loss = ((eval_x - torch.relu((eval_x @ W.T) @ W + b)) ** 2).mean()
            history.append((step, float(eval_loss)))
    return ToyModel(W=W.detach().numpy().copy(), b=b.detach().numpy().copy(),
                    loss_history=tuple(history))


# --------------------------------------------------------------------------- geometry of W


@dataclass(frozen=True)
class DiagonalDominance:
    """Diagonal dominance of a square matrix G (see the module docstring).

    Attributes:
        fraction: fraction of rows with |G_ii| > Σ_{j≠i} |G_ij|.
        mean_share: mean over rows of |G_ii| / Σ_j |G_ij| ∈ [0, 1].
    """

    fraction: float
    mean_share: float


def diagonal_dominance(G: np.ndarray) -> DiagonalDominance:
    """Row diagonal dominance of G: float[n, n] (for the toy model, G = WᵀW).

    Raises:
        ValueError: G is not square.
    """
    G = np.abs(np.asarray(G, dtype=np.float64))
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be square, got shape {G.shape}")
    diag = np.diag(G)
    row = G.sum(axis=1)
    off = row - diag
    share = np.divide(diag, row, out=np.zeros_like(diag), where=row > 0)
    return DiagonalDominance(fraction=float((diag > off).mean()), mean_share=float(share.mean()))


@dataclass(frozen=True)
class ProcrustesMatch:
    """Hungarian matching of two direction sets, then Procrustes.

    Attributes:
        similarity: 1 - disparity ∈ [0, 1].
        disparity: ``scipy.spatial.procrustes`` disparity of the matched, sign-aligned pairs.
        mean_abs_cos: mean |cos| of the matched pairs (no rotation allowed).
        pairs: int[k, 2] (index in ``true_dirs``, index in ``learned``) per matched pair.
    """

    similarity: float
    disparity: float
    mean_abs_cos: float
    pairs: np.ndarray


def procrustes_similarity(true_dirs: np.ndarray, learned: np.ndarray) -> ProcrustesMatch:
    """How well ``learned`` directions reproduce ``true_dirs`` as a configuration.

    Both sets are scaled to unit rows; min(k_true, k_learned) pairs are matched by the Hungarian
    algorithm on |cos| (``darkmatter.analysis.ica.match``, i.e. ``scipy.optimize.linear_sum_assignment``);
    each learned row is sign-flipped to cos ≥ 0 with its partner; then
    ``scipy.spatial.procrustes`` centres both matched sets, scales each to unit Frobenius norm
    and finds the best orthogonal map (rotation or reflection) between them. Hence similarity
    = 1 for identical sets, for permuted and sign-flipped copies, and for copies rotated as a
    whole (where mean_abs_cos drops below 1); only mean_abs_cos measures alignment without a
    rotation.

    Args:
        true_dirs: float[k_true, d] (e.g. Wᵀ, the toy features in hidden space).
        learned: float[k_learned, d] (e.g. the SAE's W_dec).
    Raises:
        ValueError: widths differ, a row is zero, or fewer than 2 pairs are matched.
    """
    for name, rows in (("true_dirs", true_dirs), ("learned", learned)):
        if (np.linalg.norm(rows, axis=1) == 0).any():
            raise ValueError(f"a row of {name} has zero norm and no direction")
    A, B = unit_rows(np.asarray(true_dirs, dtype=np.float64)), unit_rows(np.asarray(learned, dtype=np.float64))
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"direction widths differ: {A.shape[1]} vs {B.shape[1]}")
    if min(len(A), len(B)) < 2:
        raise ValueError("Procrustes needs at least 2 matched pairs")
    if len(B) >= len(A):
        perm, _ = match(A, B)
        pairs = np.stack([np.arange(len(A)), perm], axis=1)
    else:
        perm, _ = match(B, A)
        pairs = np.stack([perm, np.arange(len(B))], axis=1)
    a, b = A[pairs[:, 0]], B[pairs[:, 1]]
    cos = (a * b).sum(axis=1)
    b = b * np.where(cos < 0, -1.0, 1.0)[:, None]
    _, _, disparity = procrustes(a, b)
    return ProcrustesMatch(similarity=float(1.0 - disparity), disparity=float(disparity),
                           mean_abs_cos=float(np.abs(cos).mean()), pairs=pairs)


# --------------------------------------------------------------------------- SAE (SAELens)


@dataclass(frozen=True)
class ToySAE:
    """A SAELens StandardSAE trained on toy hidden activations, and its numbers on the evaluation set.

    Attributes:
        W_dec: float64[d_sae, m] decoder rows.
        loss_per_epoch: mean total loss (MSE + L1) of the steps of each epoch.
        l0_per_epoch: mean L0 on the training batches of each epoch.
        steps: optimiser steps taken.
        l0: mean active latents per evaluation sample.
        dead: latents that never fire on the evaluation set; dead_fraction = dead / d_sae.
        active_latents: d_sae - dead.
        fvu: fraction of variance unexplained.
        mse: mean over samples of Σ_d (h - ĥ)².
        collapsed: all latents dead or L0 == 0.
        alive: bool[d_sae], latent fires on at least one evaluation sample.
        residual: float64[n_eval, m], h - SAE(h).
    """

    W_dec: np.ndarray
    loss_per_epoch: tuple[float, ...]
    l0_per_epoch: tuple[float, ...]
    steps: int
    l0: float
    dead: int
    dead_fraction: float
    active_latents: int
    fvu: float
    mse: float
    collapsed: bool
    alive: np.ndarray
    residual: np.ndarray


def train_toy_sae(hidden: torch.Tensor, eval_hidden: torch.Tensor, d_sae: int, l1: float, lr: float,
                  epochs: int, batch_size: int, seed: int) -> ToySAE:
    """Train SAELens's ``StandardTrainingSAE`` (ReLU + L1) on ``hidden`` with
    :func:`darkmatter.experiments.training.train_sae` and evaluate it on ``eval_hidden``.

    Settings kept from the toy-model setup: a fixed ``l1_coefficient`` (no calibration, no
    warm-up), raw activations (``normalize=False``), ``b_dec`` at 0 and SAELens's decoder
    initialisation norm 0.1.

    Args:
        hidden: float32[n_train, m] toy-model hidden activations.
        eval_hidden: float32[n_eval, m] fresh evaluation activations (the validation set).
        epochs: passes over ``hidden``; total samples = epochs · (n_train // batch_size) · batch_size.
        seed: seeds the SAE initialisation and the batch order.
    """
    steps_per_epoch = len(hidden) // batch_size
    with tempfile.TemporaryDirectory(prefix="toy_sae_") as tmp, torch.random.fork_rng(devices=[]):
        spec = TrainingSpec(arch="standard", d_sae=d_sae, l0_target=1.0,
                            total_samples=epochs * steps_per_epoch * batch_size, lr=lr, seed=seed, device="cpu",
                            batch_size=batch_size, log_every=1, n_evals=1, calibration_rounds=1,
                            initial_coefficient=l1, init_to_target=False, arch_options={"decoder_init_norm": 0.1},
                            normalize=False, b_dec_init="zero")
        result = train_sae(hidden, spec, out_dir=Path(tmp) / "sae", val_acts=eval_hidden)
        from sae_lens import SAE

        sae = SAE.load_from_disk(str(Path(tmp) / "sae"), device="cpu")
    v = evaluate_sae(sae, eval_hidden)
    feats, recon = reconstruct(sae, eval_hidden)
    alive = (feats > 0).any(dim=0).numpy()
    h = eval_hidden.numpy().astype(np.float64)
    residual = h - recon.numpy().astype(np.float64)

    def per_epoch(key: str) -> tuple[float, ...]:
        values = [e[key] for e in result.history]
        return tuple(float(np.mean(values[e * steps_per_epoch:(e + 1) * steps_per_epoch])) for e in range(epochs))

    return ToySAE(W_dec=sae.W_dec.detach().numpy().astype(np.float64), loss_per_epoch=per_epoch("loss"),
                  l0_per_epoch=per_epoch("l0"), steps=result.steps, l0=v["mean_l0"], dead=int(v["dead_features"]),
                  dead_fraction=v["dead_fraction"], active_latents=int(alive.sum()), fvu=v["fvu"],
                  mse=v["mse"] * h.shape[1], collapsed=bool(v["dead_features"] == d_sae or v["mean_l0"] == 0.0),
                  alive=alive, residual=residual)


# --------------------------------------------------------------------------- ICA on the residual


@dataclass(frozen=True)
class ResidualICA:
    """What ICA on the SAE residual recovers of the features the SAE missed.

    Attributes:
        k: whitened components (non-degenerate residual PCA components, ≤ m); 0 skips ICA.
        converged, n_iter: FastICA's report (False / 0 when skipped).
        n_missed: true features counted as missed (given by the caller).
        n_found: missed features with an ICA mixing direction at |cos| > threshold.
        missed_max_cos_ica: mean over missed features of the max |cos| to the k ICA directions
            (nan when none are missed or k = 0).
        missed_max_cos_baselines: the same for each baseline of
            :mod:`darkmatter.analysis.directions`, averaged over ``n_draws`` draws (random
            directions: the chance level in an m-dimensional space).
        directions: float64[k, m] unit ICA mixing directions.
    """

    k: int
    converged: bool
    n_iter: int
    n_missed: int
    n_found: int
    missed_max_cos_ica: float
    missed_max_cos_baselines: dict[str, float]
    directions: np.ndarray


def residual_ica(residual: np.ndarray, missed_dirs: np.ndarray, seed: int, cos_threshold: float = 0.9,
                 degenerate_tol: float = 1e-6, n_draws: int = 200) -> ResidualICA:
    """PCA-whiten the residual to its non-degenerate components, decompose it (one FastICA fit),
    and compare the mixing directions and every baseline with the missed feature directions.

    Args:
        residual: float[n_samples, m], h - SAE(h).
        missed_dirs: float[n_missed, m] directions of the features the SAE missed (any norm > 0).
        seed: FastICA ``random_state`` and the first baseline draw's seed.
        degenerate_tol: eigenvalues ≤ tol · the largest are dropped (k counts the rest).
        n_draws: draws of each baseline (a deterministic one repeats itself).
    """
    residual = np.asarray(residual, dtype=np.float64)
    m = residual.shape[1]
    mean = residual.mean(axis=0)
    centred = residual - mean
    cov = centred.T @ centred / len(residual)
    pca = pca_from_cov((cov + cov.T) / 2)
    top = pca.eigenvalues[0]
    k = int((pca.eigenvalues > degenerate_tol * top).sum()) if top > 0 else 0
    missed = unit_rows(np.asarray(missed_dirs, dtype=np.float64)) if len(missed_dirs) else np.zeros((0, m))
    nan = {b.name: float("nan") for b in direction_sets.baselines()}
    if k == 0:
        return ResidualICA(k=0, converged=False, n_iter=0, n_missed=len(missed), n_found=0,
                           missed_max_cos_ica=float("nan"), missed_max_cos_baselines=nan,
                           directions=np.zeros((0, m)))
    whitening = pca_whitening(pca, mean, k)
    dec = decompose(whitening.apply(residual), whitening, [seed], backend="sklearn")
    dirs, fit = dec.directions, dec.fits[0]
    if len(missed) == 0:
        return ResidualICA(k=k, converged=fit.converged, n_iter=fit.n_iter, n_missed=0, n_found=0,
                           missed_max_cos_ica=float("nan"), missed_max_cos_baselines=nan, directions=dirs)
    best = np.abs(missed @ dirs.T).max(axis=1)
    context = direction_sets.DirectionContext(k=k, d_model=m, seed=_stream_seed(seed, _RANDOM_BASELINE),
                                              pca_components=pca.components, dewhitener=whitening.dewhitener)
    chance = {b.name: float(np.mean([np.abs(missed @ d.T).max(axis=1).mean()
                                     for d in direction_sets.baseline_draws(b.name, context, n_draws)]))
              for b in direction_sets.baselines()}
    return ResidualICA(k=k, converged=fit.converged, n_iter=fit.n_iter, n_missed=len(missed),
                       n_found=int((best > cos_threshold).sum()), missed_max_cos_ica=float(best.mean()),
                       missed_max_cos_baselines=chance, directions=dirs)


# --------------------------------------------------------------------------- one run, a sweep


@dataclass(frozen=True)
class RunRecord:
    """All numbers of one (architecture, sparsity, seed) run. Keys of ``asdict``:

    arch, n_features, n_hidden, sparsity, seed;
    toy model: ae_loss (evaluation MSE), ae_loss_zero_baseline ((1 - S)/3), ae_loss_rel_change_last20
        ((loss at 80% of steps - final) / final: ~0 when plateaued), ae_loss_history,
        cond_W (σ_max/σ_min of W), diag_dominant_fraction, diag_share_mean, n_represented,
        dims_per_feature (m / ‖W‖_F², Elhage et al.'s measure);
    SAE: d_sae, sae_l0, sae_dead, sae_dead_fraction, sae_active_latents, sae_fvu, sae_mse,
        collapsed, procrustes_similarity, procrustes_disparity, matched_abs_cos,
        sae_steps, sae_loss_per_epoch, sae_l0_per_epoch;
    ICA: ica_k, ica_converged, ica_n_iter, n_missed, n_found_by_ica, missed_max_cos_ica,
        missed_max_cos_baselines ({baseline name: chance level}).
    """

    arch: str
    n_features: int
    n_hidden: int
    sparsity: float
    seed: int
    ae_loss: float
    ae_loss_zero_baseline: float
    ae_loss_rel_change_last20: float
    ae_loss_history: tuple[tuple[int, float], ...]
    cond_W: float
    diag_dominant_fraction: float
    diag_share_mean: float
    n_represented: int
    dims_per_feature: float
    d_sae: int
    sae_l0: float
    sae_dead: int
    sae_dead_fraction: float
    sae_active_latents: int
    sae_fvu: float
    sae_mse: float
    collapsed: bool
    procrustes_similarity: float
    procrustes_disparity: float
    matched_abs_cos: float
    sae_steps: int
    sae_loss_per_epoch: tuple[float, ...]
    sae_l0_per_epoch: tuple[float, ...]
    ica_k: int
    ica_converged: bool
    ica_n_iter: int
    n_missed: int
    n_found_by_ica: int
    missed_max_cos_ica: float
    missed_max_cos_baselines: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def run_one(arch: Architecture, sparsity: float, seed: int,
            settings: ToySettings = ToySettings()) -> RunRecord:
    """Train the toy model, train the SAE on its hidden layer, run ICA on the SAE residual.

    Raises:
        ValueError: sparsity outside [0, 1) (from ``sample_features``).
    """
    eval_x = sample_features(settings.n_eval, arch.n_features, sparsity, _generator(seed, _EVAL_DATA))
    toy = train_toy_model(arch, sparsity, seed, steps=settings.ae_steps, batch_size=settings.ae_batch_size,
                          lr=settings.ae_lr, eval_x=eval_x)
    W = toy.W.astype(np.float64)
    ae_loss = toy.loss_history[-1][1]
    at_80 = toy.loss_history[7][1] if len(toy.loss_history) == 10 else toy.loss_history[0][1]
    norms = np.linalg.norm(W, axis=0)
    dominance = diagonal_dominance(W.T @ W)

    train_x = sample_features(settings.n_train, arch.n_features, sparsity, _generator(seed, _SAE_TRAIN_DATA))
    with torch.no_grad():
        train_h, eval_h = toy.hidden(train_x), toy.hidden(eval_x)
    d_sae = settings.d_sae or arch.n_features
    ev = train_toy_sae(train_h, eval_h, d_sae=d_sae, l1=settings.sae_l1, lr=settings.sae_lr,
                       epochs=settings.sae_epochs, batch_size=settings.sae_batch_size,
                       seed=_stream_seed(seed, _SAE_INIT))
    W_dec = ev.W_dec
    pm = procrustes_similarity(W.T, W_dec)

    represented = norms > settings.represented_norm
    alive_dirs = unit_rows(W_dec[ev.alive]) if ev.alive.any() else np.zeros((0, arch.n_hidden))
    best_sae_cos = (np.abs(unit_rows(W.T) @ alive_dirs.T).max(axis=1) if len(alive_dirs)
                    else np.zeros(arch.n_features))
    missed = represented & (best_sae_cos < settings.cos_threshold)
    ica = residual_ica(ev.residual, W.T[missed], seed=seed, cos_threshold=settings.cos_threshold,
                       degenerate_tol=settings.degenerate_tol, n_draws=settings.n_random_baselines)

    return RunRecord(
        arch=arch.name, n_features=arch.n_features, n_hidden=arch.n_hidden, sparsity=float(sparsity),
        seed=int(seed), ae_loss=ae_loss, ae_loss_zero_baseline=zero_baseline_loss(sparsity),
        ae_loss_rel_change_last20=(at_80 - ae_loss) / ae_loss if ae_loss > 0 else 0.0,
        ae_loss_history=toy.loss_history, cond_W=float(np.linalg.cond(W)),
        diag_dominant_fraction=dominance.fraction, diag_share_mean=dominance.mean_share,
        n_represented=int(represented.sum()),
        dims_per_feature=float(arch.n_hidden / (W ** 2).sum()),
        d_sae=d_sae, sae_l0=ev.l0, sae_dead=ev.dead, sae_dead_fraction=ev.dead_fraction,
        sae_active_latents=ev.active_latents, sae_fvu=ev.fvu, sae_mse=ev.mse, collapsed=ev.collapsed,
        procrustes_similarity=pm.similarity, procrustes_disparity=pm.disparity,
        matched_abs_cos=pm.mean_abs_cos, sae_steps=ev.steps, sae_loss_per_epoch=ev.loss_per_epoch,
        sae_l0_per_epoch=ev.l0_per_epoch, ica_k=ica.k, ica_converged=ica.converged,
        ica_n_iter=ica.n_iter, n_missed=ica.n_missed, n_found_by_ica=ica.n_found,
        missed_max_cos_ica=ica.missed_max_cos_ica, missed_max_cos_baselines=ica.missed_max_cos_baselines)


def run_sweep(architectures: Sequence[Architecture], sparsities: Sequence[float], seeds: Sequence[int],
              settings: ToySettings = ToySettings(), progress: bool = False) -> list[RunRecord]:
    """``run_one`` for every (architecture, sparsity, seed), in that nesting order.

    Args:
        progress: show a tqdm bar over runs.
    """
    from tqdm.auto import tqdm

    grid = [(a, s, seed) for a in architectures for s in sparsities for seed in seeds]
    records = []
    bar = tqdm(grid, desc="toy runs", disable=not progress, unit="run")
    for arch, sparsity, seed in bar:
        bar.set_postfix_str(f"{arch.name} S={sparsity} seed={seed}")
        records.append(run_one(arch, sparsity, seed, settings))
    return records


SUMMARY_FIELDS = ("ae_loss", "ae_loss_rel_change_last20", "cond_W", "diag_dominant_fraction",
                  "diag_share_mean", "n_represented", "sae_l0", "sae_dead", "sae_dead_fraction",
                  "sae_active_latents", "sae_fvu", "procrustes_similarity", "matched_abs_cos", "n_missed",
                  "n_found_by_ica", "missed_max_cos_ica")


def _field_values(r: RunRecord) -> dict[str, float]:
    """The summarised numbers of one run: SUMMARY_FIELDS plus ``missed_max_cos_<baseline>``."""
    return {**{name: getattr(r, name) for name in SUMMARY_FIELDS},
            **{f"missed_max_cos_{name}": v for name, v in r.missed_max_cos_baselines.items()}}


@dataclass(frozen=True)
class SummaryRow:
    """Mean and standard deviation over seeds of one (architecture, sparsity).

    Attributes:
        mean, std: per field of ``SUMMARY_FIELDS`` and ``missed_max_cos_<baseline>`` for every
            baseline; std is the sample standard deviation
            (ddof = 1; 0 for a single seed); nan-valued runs (e.g. no missed features) are
            skipped, and a field with no finite value is nan.
        n_runs: seeds; n_collapsed: runs with a collapsed SAE; collapsed_seeds: their seeds.
    """

    arch: str
    sparsity: float
    n_runs: int
    n_collapsed: int
    collapsed_seeds: tuple[int, ...]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)


def summarise(records: Sequence[RunRecord]) -> list[SummaryRow]:
    """Group by (arch, sparsity) in first-seen order; mean ± std over seeds and collapse counts."""
    groups: dict[tuple[str, float], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.arch, r.sparsity), []).append(r)
    rows = []
    for (arch, sparsity), runs in groups.items():
        mean, std = {}, {}
        values = [_field_values(r) for r in runs]
        for name in values[0]:
            v = np.array([x[name] for x in values], dtype=np.float64)
            v = v[np.isfinite(v)]
            mean[name] = float(v.mean()) if len(v) else float("nan")
            std[name] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else float("nan"))
        collapsed = tuple(r.seed for r in runs if r.collapsed)
        rows.append(SummaryRow(arch=arch, sparsity=sparsity, n_runs=len(runs), n_collapsed=len(collapsed),
                               collapsed_seeds=collapsed, mean=mean, std=std))
    return rows

"""Causal tests of residual directions: splice, add back, ablate, logit effect.

Does the model use what the SAE leaves in its residual r = x − x̂? The tests edit the activation
at the hook on held-out text and read what changes downstream (a language model's next-token
distribution; a planted run's linear readout):

* **splice**: x → x̂ (the SAE reconstruction), x → 0, and x → x + ε with a random ε of the
  residual's norm ‖x − x̂‖ at every position (Gurnee 2024, "SAE reconstruction errors are
  (empirically) pathological": the SAE's error costs more than a random one of the same size);
  the next-token cross-entropy and KL(clean ‖ edited) of each. SAELens's "CE loss recovered"
  (L_zero − L_spliced) / (L_zero − L_clean) is computed exactly as ``sae_lens.evals.get_recons_loss``
  does it (x̂ at every token that is not BOS, zero at *every* position, BOS included; losses of the
  predictions made at non-BOS tokens); ours, on the analysed positions only, is reported beside it.
* **add back**: x → x̂ + Σ_{c∈S} s_c a_c, a set S of a decomposition's parts (source × mixing
  column) put back on the spliced activation; its score is the share of the clean–spliced gap it
  closes, (L_spliced − L_edit) / (L_spliced − L_clean).

  - *Per component* (the tested ones): component c alone, against a matched-null part carrying the
    same residual variance (a part of a random rotation of the same whitened subspace, scaled to
    ‖a_c‖²) on the same windows. The test is the paired difference ICA − null, one-sided, Holm over
    the tested components at :data:`ALPHA`; c "closes the gap" when it closes at least
    :data:`MIN_SHARE` of it and survives Holm.
  - *Top m*: the held-out documents are split in halves A and B. On A, the parts of every set (ICA
    and each draw of each baseline, e.g. PCA and the matched null draws) are ordered by their
    first-order effect on the loss (attribution patching: one backward pass at the spliced
    activation gives g = ∂L/∂x at every position, and part c's predicted change is
    Σ_pos g_pos · s_c,pos a_c; Nanda 2023 "Attribution patching", Kramár et al. 2024 "AtP*"). On B,
    the first m ICA parts are added back exactly, against each baseline draw *at equal variance* (a
    baseline adds back as much residual variance as the ICA set, the last of its parts scaled to hit
    it; sources are uncorrelated with unit variance, so a part's variance is its mixing column's
    squared norm). Fitting the order on A and scoring on B keeps the selection out of the score, and
    every set is ordered the same way. The baselines are named decompositions (``Mapping[str,
    Sequence[Parts]]``: one or more draws per name); which ones is the caller's choice (step 06:
    every registered baseline that is a rotation of the whitened subspace).
* **ablation**: x → x − (x·u)u for a unit direction u; KL and the change in loss.
* **logit effect**: x → x + α a_c (α in units of the source's standard deviation, which is 1);
  the mean change of every output (logit) over the positions.

Edits act at the positions a run analyses (``Batch.splice``: not BOS, not a massive activation)
unless said otherwise; losses count where a prediction follows (``Batch.score``). Every figure is
summed per sequence and per document (``Batch.unit``: the cluster), and every standard error comes
from the spread of the per-document totals (:func:`ratio_se`), never from correlated tokens or
windows of one document. The loops stack several edits along the batch dimension, so one forward
pass of the layers after the hook serves many of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch

from darkmatter.analysis.candidates import holm
from darkmatter.analysis.directions import ICA

#: What an edit starts from at the positions it changes.
Base = Literal["clean", "spliced", "zero"]
#: Where an edit acts: the analysed positions (``Batch.splice``), every token SAELens splices
#: (``Batch.edit_tokens``: not BOS), or every position (SAELens's zero-ablation).
Where = Literal["analysed", "tokens", "all"]
#: Which losses an edit's totals count: at the analysed positions (``Batch.score``) or at SAELens's
#: (``Batch.score_tokens``: predictions made at non-BOS tokens).
Scored = Literal["analysed", "tokens"]


@dataclass
class Batch:
    """Held-out sequences with their activations at the hook.

    Attributes:
        x: float32[b, ctx, d_model] clean activations at the hook.
        splice: bool[b, ctx] positions that edits change (the rows the analysis would take).
        score: bool[b, ctx] positions whose outputs count (a next token exists, for a language model).
        tokens: int64[b, ctx] token ids, or None without a model.
        unit: int64[b] the cluster (document) of each sequence: standard errors are over clusters.
        edit_tokens: bool[b, ctx] where SAELens splices (every token but BOS); None: ``splice``.
        score_tokens: bool[b, ctx] the predictions SAELens scores (made at a non-BOS token, a next
            token existing); None: ``score``.
    """

    x: torch.Tensor
    splice: torch.Tensor
    score: torch.Tensor
    tokens: torch.Tensor | None
    unit: np.ndarray
    edit_tokens: torch.Tensor | None = None
    score_tokens: torch.Tensor | None = None

    def where(self, at: Where) -> torch.Tensor:
        """bool[b, ctx] the positions an edit acting ``at`` changes."""
        if at == "all":
            return torch.ones_like(self.splice)
        return self.edit_tokens if at == "tokens" and self.edit_tokens is not None else self.splice

    def scored(self, which: Scored) -> torch.Tensor:
        """bool[b, ctx] the positions whose losses count for ``which``."""
        return self.score_tokens if which == "tokens" and self.score_tokens is not None else self.score


class Downstream(Protocol):
    """What reads the activation after the hook (a language model's later layers, or a readout).

    Attributes:
        units: int64[n_sequences] the cluster (document) of every held-out sequence.
    """

    loss_name: str
    divergence_name: str
    output_name: str
    description: str
    units: np.ndarray

    def batches(self, select: np.ndarray | None = None) -> Iterator[Batch]:
        """The held-out sequences ``select`` (int64 indices, increasing; None: all), in that order."""
        ...

    def outputs(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        """float32[e·b, ctx, n_out] outputs of ``acts`` (float32[e·b, ctx, d_model]: e edits of the batch)."""
        ...

    def reference(self, clean: torch.Tensor, batch: Batch) -> Any:
        """What scoring needs of the clean outputs (float32[b, ctx, n_out]) of one batch."""
        ...

    def score(self, out: torch.Tensor, batch: Batch, reference: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, divergence from the clean outputs): float32[e·b, ctx] each, for ``out`` =
        float32[e·b, ctx, n_out], the outputs of e edits of the batch (0 where undefined)."""
        ...

    def loss_gradient(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        """float32[b, ctx, d_model] ∂/∂acts of the loss summed over ``batch.score`` (one backward pass)."""
        ...


@dataclass(frozen=True)
class Edit:
    """One intervention: x' = base + ((read − centre) @ U) @ A + shift (+ noise) where it acts.

    Attributes:
        name: key of the result.
        base: ``clean`` (x), ``spliced`` (x̂) or ``zero``.
        read: what U reads: the ``residual`` x − x̂ (centred by ``centre``) or the ``clean`` x.
        U: float64[d_model, m] read-out vectors (unmixing rows, transposed), or None.
        A: float64[m, d_model] write-in vectors (mixing columns, transposed, scaled), or None.
        centre: float64[d_model] subtracted from what U reads (the residual mean), or None.
        shift: float64[d_model] added everywhere it edits, or None.
        track_outputs: also sum the change of every output (for the logit effect).
        at: where it acts (:data:`Where`); scored: which losses count (:data:`Scored`).
        noise: add ε of norm ‖x − x̂‖ in a uniformly random direction at every position it edits,
            seeded by ``seed`` and the batch's number (the random-error baseline of the splice).
    """

    name: str
    base: Base
    read: Literal["residual", "clean"] = "residual"
    U: np.ndarray | None = None
    A: np.ndarray | None = None
    centre: np.ndarray | None = None
    shift: np.ndarray | None = None
    track_outputs: bool = False
    at: Where = "analysed"
    scored: Scored = "analysed"
    noise: bool = False
    seed: int = 0

    @property
    def identity(self) -> bool:
        """It leaves x as it is (its outputs are the clean ones)."""
        return self.base == "clean" and self.U is None and self.shift is None and not self.noise


@dataclass
class EditTotals:
    """Sums over the held-out positions of one edit, per sequence.

    Attributes:
        loss, divergence: float64[n_seq] summed over each sequence's scored positions.
        positions: float64[n_seq] scored positions per sequence.
        unit: int64[n_seq] each sequence's cluster (document).
        output_change: float64[n_out] summed change of each output (``track_outputs`` edits), or None.
    """

    loss: np.ndarray
    divergence: np.ndarray
    positions: np.ndarray
    unit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    output_change: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.unit) != len(self.loss):  # no clusters given: each sequence its own
            self.unit = np.arange(len(self.loss))

    @property
    def mean_loss(self) -> float:
        return float(self.loss.sum() / max(self.positions.sum(), 1))

    @property
    def mean_divergence(self) -> float:
        return float(self.divergence.sum() / max(self.positions.sum(), 1))

    @property
    def mean_output_change(self) -> np.ndarray | None:
        return None if self.output_change is None else self.output_change / max(self.positions.sum(), 1)

    def subset(self, rows: np.ndarray) -> EditTotals:
        """The totals of the sequences ``rows`` (int indices into these totals)."""
        return EditTotals(self.loss[rows], self.divergence[rows], self.positions[rows], self.unit[rows])


def _noise_seed(seed: int, batch_number: int) -> int:
    return int(np.random.SeedSequence([seed, batch_number, 1031]).generate_state(1)[0])


def _apply(edit: Edit, x: torch.Tensor, x_hat: torch.Tensor, batch: Batch, batch_number: int = 0) -> torch.Tensor:
    base = {"clean": x, "spliced": x_hat, "zero": torch.zeros_like(x)}[edit.base]
    out = base
    if edit.U is not None and edit.A is not None:
        src = x - x_hat if edit.read == "residual" else x
        if edit.centre is not None:
            src = src - torch.as_tensor(edit.centre, dtype=x.dtype, device=x.device)
        U = torch.as_tensor(edit.U, dtype=x.dtype, device=x.device)
        A = torch.as_tensor(edit.A, dtype=x.dtype, device=x.device)
        out = out + (src @ U) @ A
    if edit.shift is not None:
        out = out + torch.as_tensor(edit.shift, dtype=x.dtype, device=x.device)
    if edit.noise:
        gen = torch.Generator(device=x.device).manual_seed(_noise_seed(edit.seed, batch_number))
        eps = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        out = out + eps / eps.norm(dim=-1, keepdim=True) * (x - x_hat).norm(dim=-1, keepdim=True)
    return torch.where(batch.where(edit.at)[..., None], out, x)


def _n_selected(downstream: Downstream, select: np.ndarray | None) -> int:
    return len(downstream.units) if select is None else len(select)


@torch.no_grad()
def run_edits(downstream: Downstream, reconstruct: Callable[[torch.Tensor], torch.Tensor], edits: Sequence[Edit],
              select: np.ndarray | None = None, stack: int = 4,
              progress: Callable[[int], object] | None = None) -> dict[str, EditTotals]:
    """Every edit on every selected held-out batch; one forward pass serves ``stack`` edits.

    The clean outputs of each batch are computed once (the reference of the divergence); edits that
    leave x as it is (:attr:`Edit.identity`) reuse them.

    Args:
        reconstruct: x → x̂, float32[..., d_model] (the SAE's forward: encode then decode).
        select: int64 indices of the held-out sequences to use, increasing (None: all).
        stack: edits stacked along the batch dimension per forward pass.
        progress: called after each forward pass with the window passes it made (windows × edits,
            the clean reference counting as one edit), e.g. a tqdm's update; or None.
    Returns:
        {edit name: EditTotals}, sequences in the order of ``select``.
    Raises:
        ValueError: two edits share a name.
    """
    if len({e.name for e in edits}) != len(edits):
        raise ValueError("edit names must be unique")
    parts: dict[str, list[tuple[np.ndarray, ...]]] = {e.name: [] for e in edits}
    changes: dict[str, np.ndarray] = {}
    units: list[np.ndarray] = []
    moving = [e for e in edits if not e.identity]
    for number, batch in enumerate(downstream.batches(select)):
        x = batch.x
        b = x.shape[0]
        units.append(np.asarray(batch.unit))
        x_hat = reconstruct(x.reshape(-1, x.shape[-1])).reshape(x.shape).to(x.dtype)
        clean = downstream.outputs(x, batch)
        reference = downstream.reference(clean, batch)
        if progress is not None:
            progress(b)

        def record(group: Sequence[Edit], out: torch.Tensor, shared: bool = False,
                   batch: Batch = batch, reference: Any = reference, clean: torch.Tensor = clean) -> None:
            """Sum the losses of ``group``'s edits stacked in ``out`` (``shared``: one copy for all)."""
            loss, div = (v.double() for v in downstream.score(out, batch, reference))
            n = len(batch.x)
            for j, e in enumerate(group):
                sl = slice(0, n) if shared else slice(j * n, (j + 1) * n)
                weight = batch.scored(e.scored).to(torch.float64)
                parts[e.name].append(((loss[sl] * weight).sum(1).cpu().numpy(),
                                      (div[sl] * weight).sum(1).cpu().numpy(), weight.sum(1).cpu().numpy()))
                if e.track_outputs:
                    d = ((out[sl] - clean).double() * weight[..., None]).sum((0, 1)).cpu().numpy()
                    changes[e.name] = changes.get(e.name, 0) + d

        if any(e.identity for e in edits):
            record([e for e in edits if e.identity], clean, shared=True)
        for start in range(0, len(moving), stack):
            group = moving[start:start + stack]
            acts = torch.cat([_apply(e, x, x_hat, batch, number) for e in group])
            out = downstream.outputs(acts, batch)
            record(group, out)
            del out, acts
            if progress is not None:
                progress(len(group) * b)
    unit = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
    totals = {}
    for name, got in parts.items():
        loss_s, div_s, pos_s = (np.concatenate(col) for col in zip(*got)) if got else (np.zeros(0),) * 3
        totals[name] = EditTotals(loss=loss_s, divergence=div_s, positions=pos_s, unit=unit,
                                  output_change=changes.get(name))
    return totals


# ------------------------------------------------------------------------------------- decompositions
@dataclass(frozen=True)
class Parts:
    """A decomposition of the centred residual: r − mean ≈ Σ_c s_c a_c with s = (r − mean) @ unmixing.T.

    Attributes:
        name: ``ICA`` or the baseline's name (``PCA``, ``null``, …).
        unmixing: float64[k, d_model]; mixing: float64[d_model, k]; mean: float64[d_model].
        order: int64[k] the order in which parts are added back (top-m = the first m).
    """

    name: str
    unmixing: np.ndarray
    mixing: np.ndarray
    mean: np.ndarray
    order: np.ndarray

    @property
    def variance(self) -> np.ndarray:
        """float64[k] residual variance each part carries (‖a_c‖²: sources have unit variance)."""
        return (self.mixing ** 2).sum(0)


def rotated_parts(name: str, whitener: np.ndarray, dewhitener: np.ndarray, rotation: np.ndarray,
                  mean: np.ndarray, order: np.ndarray | None = None) -> Parts:
    """The parts of a rotation R of the whitened k-subspace: s = z @ R.T, a = dewhitenerᵀ Rᵀ.

    Args:
        whitener, dewhitener: float64[k, d_model] (z = (r − mean) @ whitener.T, r − mean ≈ z @ dewhitener).
        rotation: float64[k, k] orthogonal (identity: the principal components; Haar: the matched null).
        order: the add-back order (default: 0..k−1).
    """
    k = len(rotation)
    return Parts(name=name, unmixing=rotation @ whitener, mixing=dewhitener.T @ rotation.T, mean=mean,
                 order=np.arange(k) if order is None else np.asarray(order))


def equal_variance_set(parts: Parts, target: float) -> tuple[np.ndarray, np.ndarray]:
    """The first parts in ``parts.order`` that together carry ``target`` residual variance, the last
    one scaled to hit it exactly.

    Returns:
        (ids: int64[m'], scale: float64[m'] applied to their mixing columns; all 1 but the last).
    """
    var = parts.variance[parts.order]
    cum = np.cumsum(var)
    m = min(int(np.searchsorted(cum, target * (1 - 1e-12))) + 1, len(var))
    scale = np.ones(m)
    rest = target - (cum[m - 2] if m > 1 else 0.0)
    scale[-1] = float(np.sqrt(np.clip(rest / var[m - 1], 0.0, 1.0)))
    return parts.order[:m], scale


def add_back(name: str, parts: Parts, ids: np.ndarray, scale: np.ndarray | None = None) -> Edit:
    """x̂ + Σ_{c∈ids} scale_c s_c a_c: the listed parts of the residual put back on the spliced activation."""
    ids = np.asarray(ids)
    A = parts.mixing[:, ids].T * (1.0 if scale is None else np.asarray(scale)[:, None])
    return Edit(name, "spliced", U=parts.unmixing[ids].T, A=A, centre=parts.mean)


def matched_add_back(name: str, null: Parts, variance: float, part: int = 0) -> Edit:
    """x̂ + s_j a_j·√(variance / ‖a_j‖²): part j of a null decomposition put back carrying ``variance``
    (a tested component's ‖a_c‖²), the per-component matched null."""
    scale = np.sqrt(variance / null.variance[part])
    return add_back(name, null, np.array([part]), np.array([scale]))


def ablate(name: str, direction: np.ndarray) -> Edit:
    """x − (x·u)u for the unit vector u along ``direction`` (float[d_model])."""
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    return Edit(name, "clean", read="clean", U=u[:, None], A=-u[None])


def steer(name: str, vector: np.ndarray) -> Edit:
    """x + vector at the spliced positions, tracking the change of every output."""
    return Edit(name, "clean", shift=np.asarray(vector, dtype=np.float64), track_outputs=True)


def attribution(downstream: Downstream, reconstruct: Callable[[torch.Tensor], torch.Tensor], sets: Sequence[Parts],
                select: np.ndarray | None = None,
                progress: Callable[[int], object] | None = None) -> tuple[list[np.ndarray], float]:
    """First-order loss decrease of adding back each part alone (attribution patching).

    One backward pass per batch at the spliced activation (x̂ at the analysed positions) gives
    g = ∂L/∂x (L: the loss summed over the scored positions); adding part c back changes x by
    s_c,pos a_c at each analysed position, so L changes by Σ_pos g_pos · a_c s_c,pos ≈ u_cᵀ M a_c with
    M = Σ_pos (r_pos − mean) g_posᵀ (float64[d_model, d_model]) accumulated once for every set
    (Nanda 2023, "Attribution patching"; Kramár et al. 2024, "AtP*").

    Args:
        sets: decompositions sharing one residual mean.
        select: the held-out sequences used (None: all).
        progress: called with the windows of each backward pass, or None.
    Returns:
        ([float64[k] predicted loss decrease of each part, per scored position, one array per set],
        scored positions).
    """
    M: np.ndarray | None = None
    n = 0.0
    mean = torch.as_tensor(sets[0].mean)
    for batch in downstream.batches(select):
        x = batch.x
        with torch.no_grad():
            x_hat = reconstruct(x.reshape(-1, x.shape[-1])).reshape(x.shape).to(x.dtype)
        acts = torch.where(batch.splice[..., None], x_hat, x)
        g = downstream.loss_gradient(acts, batch).detach()
        r = (x - x_hat)[batch.splice].double().cpu() - mean
        m = r.T @ g[batch.splice].double().cpu()
        M = m.numpy() if M is None else M + m.numpy()
        n += float(batch.score.sum())
        if progress is not None:
            progress(len(x))
    if M is None:
        raise ValueError("no held-out sequences selected")
    return [-((p.unmixing @ M) * p.mixing.T).sum(1) / max(n, 1.0) for p in sets], n


# ------------------------------------------------------------------------------------- reading the totals
#: A component "closes the gap" when adding it back alone closes at least this share of it ...
MIN_SHARE = 0.01
#: ... and beats its matched-null part, Holm-corrected over the tested components at this level.
ALPHA = 0.01


def cluster_sums(values: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """float64[n_clusters] ``values`` (float[n_seq]) summed within each cluster (sorted cluster ids)."""
    _, inverse = np.unique(unit, return_inverse=True)
    return np.bincount(inverse, weights=np.asarray(values, dtype=np.float64))


def ratio_se(num: np.ndarray, den: np.ndarray) -> float:
    """Standard error of the ratio estimator R = Σ_i num_i / Σ_i den_i over G clusters i.

    The delta method (linearisation) with cluster totals, as for a ratio estimator in survey
    sampling (Cochran 1977, "Sampling Techniques", §6.4; Cameron & Miller 2015 on cluster-robust
    inference): Var(R) ≈ G/(G − 1) · Σ_i (num_i − R den_i)² / (Σ_i den_i)². Both the numerator and
    the denominator vary over clusters; clusters are the independent units (documents), however
    many tokens and windows each holds. NaN with fewer than two clusters or a zero denominator.

    Args:
        num, den: float[G] per-cluster totals.
    """
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    G, D = len(num), float(den.sum())
    if G < 2 or D == 0:
        return float("nan")
    e = num - num.sum() / D * den
    return float(np.sqrt(G / (G - 1) * (e ** 2).sum()) / abs(D))


def one_sided_p(z: float, clusters: int) -> float:
    """P(T ≥ z) for Student's t with ``clusters`` − 1 degrees of freedom (the reference distribution of
    a cluster-robust z with few clusters, Cameron & Miller 2015); 1 where z is NaN."""
    from scipy.stats import t

    if not np.isfinite(z) or clusters < 2:
        return 1.0
    return float(t.sf(z, clusters - 1))


@dataclass(frozen=True)
class GapClosed:
    """The share of the clean–spliced loss gap an edit closes, with its standard error over documents.

    Attributes:
        share: (L_spliced − L_edit) / (L_spliced − L_clean) over all scored positions.
        se: :func:`ratio_se` with the documents' totals; clusters: the documents it runs over.
    """

    share: float
    se: float
    clusters: int = 0

    @property
    def z(self) -> float:
        return self.share / self.se if self.se > 0 else float("nan")


@dataclass(frozen=True)
class PairedTest:
    """An edit against its matched null on the same windows: the difference of the gap shares closed.

    Attributes:
        difference: share(edit) − share(null) (the null's mean over draws where there are several).
        se: :func:`ratio_se` of the paired per-document difference.
        z: difference / se; p: one-sided (edit > null), Student's t with clusters − 1 degrees of freedom.
        clusters: the documents it runs over.
    """

    difference: float
    se: float
    z: float
    p: float
    clusters: int


def _check(*totals: EditTotals) -> None:
    if len({len(t.loss) for t in totals}) != 1:
        raise ValueError("edit totals cover different sequences")


def gap_closed(edit: EditTotals, spliced: EditTotals, clean: EditTotals) -> GapClosed:
    """(L_spliced − L_edit) / (L_spliced − L_clean) over all scored positions, a ratio of document
    totals; its standard error is :func:`ratio_se` over the documents (``EditTotals.unit``).

    Raises:
        ValueError: the totals come from different sequences.
    """
    _check(edit, spliced, clean)
    gap = cluster_sums(spliced.loss - clean.loss, clean.unit)
    if gap.sum() <= 0:
        return GapClosed(float("nan"), float("nan"), len(gap))
    d = cluster_sums(spliced.loss - edit.loss, clean.unit)
    return GapClosed(float(d.sum() / gap.sum()), ratio_se(d, gap), len(gap))


def paired_test(edit: EditTotals, nulls: Sequence[EditTotals], spliced: EditTotals,
                clean: EditTotals) -> PairedTest:
    """``edit``'s gap share minus the mean of ``nulls``' on the same sequences, paired per document:
    Σ_i (L̄_null,i − L_edit,i) / Σ_i (L_spliced,i − L_clean,i) over documents i, with :func:`ratio_se`.

    Raises:
        ValueError: the totals come from different sequences, or there is no null.
    """
    if not nulls:
        raise ValueError("a paired test needs at least one null")
    _check(edit, spliced, clean, *nulls)
    gap = cluster_sums(spliced.loss - clean.loss, clean.unit)
    null_loss = np.mean([n.loss for n in nulls], axis=0)
    d = cluster_sums(null_loss - edit.loss, clean.unit)
    if gap.sum() <= 0:
        return PairedTest(float("nan"), float("nan"), float("nan"), 1.0, len(gap))
    diff, se = float(d.sum() / gap.sum()), ratio_se(d, gap)
    z = diff / se if se > 0 else float("nan")
    return PairedTest(diff, se, z, one_sided_p(z, len(gap)), len(gap))


def loss_recovered(clean: EditTotals, spliced: EditTotals, zero: EditTotals) -> float:
    """(L_zero − L_spliced) / (L_zero − L_clean): SAELens's ``ce_loss_score`` where the totals are its
    edits and positions (``sae_lens.evals.get_downstream_reconstruction_metrics``)."""
    return (zero.mean_loss - spliced.mean_loss) / (zero.mean_loss - clean.mean_loss)


def top_outputs(change: np.ndarray, n: int = 10) -> tuple[list[int], list[int]]:
    """Ids of the n outputs that rise most and the n that fall most (``change``: float[n_out])."""
    order = np.argsort(change)
    return order[::-1][:n].tolist(), order[:n].tolist()


def m_grid(k: int) -> list[int]:
    """The set sizes m of the top-m add-back: 1, 3, 10, 30, 100, … below k, then k."""
    out, m = [], 1
    while m < k:
        out.append(m)
        m = 3 * m if str(m).startswith("1") else m * 10 // 3
    return out + [k]


def halves(units: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out sequences split by document into halves A and B (seeded; A gets the smaller half).

    Args:
        units: int64[n_seq] each sequence's document.
    Returns:
        (a, b): int64 sequence indices, increasing; whole documents on each side.
    """
    docs = np.unique(units)
    shuffled = np.random.default_rng([seed, 1032]).permutation(docs)
    in_a = np.isin(units, shuffled[:len(docs) // 2])
    return np.flatnonzero(in_a), np.flatnonzero(~in_a)


@dataclass
class ReadoutDownstream:
    """A linear readout y = x @ B of held-out rows: the planted runs' stand-in for a model.

    Loss and divergence are both ‖y' − y‖² / n_out (the readout's squared error against its clean
    value), so the clean loss is 0 and the gap closed is the share of the readout's error removed.

    Args:
        rows: float32[n, d_model] held-out rows; B: float64[d_model, n_out]; per: rows per sequence.
        units: int64[n // per] each sequence's cluster (document) for the standard errors; None: each
            sequence its own.
        description: the held-out data and the readout, in words.
    """

    rows: np.ndarray
    B: np.ndarray
    per: int = 128
    device: str = "cpu"
    description: str = "held-out rows through a linear readout"
    units: np.ndarray = None  # type: ignore[assignment]
    loss_name: str = "readout squared error (per readout, units of x²)"
    divergence_name: str = "readout squared error (per readout)"
    output_name: str = "readout"
    _B: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._B = torch.as_tensor(self.B, dtype=torch.float32, device=self.device)
        n_seq = len(self.rows) // self.per
        self.units = np.arange(n_seq) if self.units is None else np.asarray(self.units, dtype=np.int64)
        if len(self.units) != n_seq:
            raise ValueError(f"units has {len(self.units)} entries for {n_seq} sequences")

    def batches(self, select: np.ndarray | None = None) -> Iterator[Batch]:
        idx = np.arange(len(self.units)) if select is None else np.asarray(select, dtype=np.int64)
        for start in range(0, len(idx), 16):
            seqs = idx[start:start + 16]
            rows = (seqs[:, None] * self.per + np.arange(self.per)).ravel()
            x = torch.as_tensor(self.rows[rows], device=self.device).reshape(len(seqs), self.per, -1).float()
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=self.device)
            yield Batch(x=x, splice=mask, score=mask, tokens=None, unit=self.units[seqs])

    def outputs(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        return acts @ self._B

    def reference(self, clean: torch.Tensor, batch: Batch) -> torch.Tensor:
        return clean

    def score(self, out: torch.Tensor, batch: Batch, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(reference)
        err = (out.reshape(-1, *reference.shape) - reference).pow(2).mean(-1).reshape(-1, reference.shape[1])
        assert err.shape[0] % b == 0
        return err, err

    def loss_gradient(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        """2 (acts − x) B Bᵀ / n_out at the scored positions (the loss is quadratic, the readout linear)."""
        g = 2.0 * ((acts - batch.x) @ self._B) @ self._B.T / self._B.shape[1]
        return g * batch.score[..., None]


# ------------------------------------------------------------------------------------- the whole test
@dataclass(frozen=True)
class BaselineAddBack:
    """One baseline's top-m add-back at the ICA set's variance, on half B: each draw's parts in their
    own fitted order, the first ones carrying the same residual variance as ICA's first m (the last
    part scaled).

    Attributes:
        gap: gap closed by the draws' mean edit (per-sequence losses averaged over draws), ± its
            standard error over documents: for one draw, that draw's; its share is the draws' mean share.
        draws: gap share closed by each draw (one for a deterministic baseline such as PCA).
        low, high: the draws' 2.5% and 97.5% quantiles (both the share for one draw).
        parts: parts added back, mean over draws (fractional: the last one is scaled).
        versus: ICA − the draws' mean, paired per document (None in a results file written before
            schema 7, which kept this test for the matched null only).
    """

    gap: GapClosed
    draws: list[float]
    low: float
    high: float
    parts: float
    versus: PairedTest | None


@dataclass(frozen=True)
class TopM:
    """The top-m add-back of one m, scored on half B of the held-out documents: ICA's first m parts
    (in the order fitted on half A) against the baselines at equal variance.

    Attributes:
        m: ICA components added back; variance: residual variance they carry (their ‖a_c‖² summed).
        ica: gap closed by them.
        baselines: {baseline name: its add-back carrying the same variance}, in the order given.
    """

    m: int
    variance: float
    ica: GapClosed
    baselines: dict[str, BaselineAddBack]


@dataclass(frozen=True)
class OutputShift:
    """The outputs an added direction moves most (mean change over the held-out positions)."""

    scale: float
    up: list[tuple[str, float]]
    down: list[tuple[str, float]]


@dataclass(frozen=True)
class ComponentEffect:
    """One ICA component's causal figures (None where it was not tested).

    Attributes:
        tested: whether it was; not_tested_because: why not ("" when it was).
        add_back: gap closed when its part alone is put back on the spliced activation;
        null_add_back: by its matched-null part (same variance, a random direction of the whitened
            subspace) on the same windows; versus_null: the paired difference ICA − null.
        holm: the difference survives Holm over the tested components at :data:`ALPHA`.
        closes_gap: it closes at least :data:`MIN_SHARE` of the gap and ``holm``.
        attribution: its first-order loss decrease per scored position on half A (the top-m order's
            fit), for every component.
        ablation_divergence: mean divergence when its (unit mixing) direction is projected out of x;
        ablation_loss_change: the mean loss change it causes.
        output_shift: per scale α, the outputs that adding α·a_c moves most (the logit effect).
    """

    component: int
    tested: bool
    not_tested_because: str
    add_back: GapClosed | None
    null_add_back: GapClosed | None
    versus_null: PairedTest | None
    holm: bool
    closes_gap: bool
    attribution: float | None
    ablation_divergence: float | None
    ablation_loss_change: float | None
    output_shift: list[OutputShift]


@dataclass(frozen=True)
class CausalTable:
    """Every causal figure of one run (causal.json).

    Attributes:
        loss_name, divergence_name, output_name: what was measured, with units.
        n_sequences, n_documents, n_positions: held-out windows, their documents (the clusters of every
            standard error) and scored positions.
        clean_loss, spliced_loss, zero_loss: mean loss with x, x̂ and 0 at the analysed positions.
        mean_loss: with x̂ + the residual mean; subspace_loss: with x̂ + the residual's whole
            whitened k-subspace part (mean included), the most any top-m set can put back.
        random_error_loss, random_error_divergence: with x + ε, ‖ε‖ = ‖x − x̂‖ in a random direction
            per analysed position (Gurnee 2024); divergence_ratio: spliced / random-error divergence.
        loss_recovered: SAELens's (L_zero − L_spliced) / (L_zero − L_clean) exactly as
            ``sae_lens.evals`` computes it (x̂ at every non-BOS token, zero at every position, the
            predictions made at non-BOS tokens), from saelens_clean_loss, saelens_spliced_loss,
            saelens_zero_loss over saelens_positions.
        analysed_loss_recovered: the same ratio with x̂ and zero at the analysed positions only (our
            splice: no BOS, no massive activation) and their losses.
        spliced_divergence, zero_divergence: mean divergence from the clean outputs.
        mean_gap_closed, subspace_gap_closed: gap closed by the mean, by the whole k-subspace.
        tested: components given per-component tests, in test order; test_rule: which and why.
        alpha: Holm's family-wise level; min_share: the share of the gap a closer must close.
        order: ICA components in the top-m order (fitted on half A); order_rule: how.
        fit_documents, score_documents: documents in halves A (order) and B (top-m scores).
        top_m: one row per m; components: per ICA component, in component order.
        baseline_draws: {baseline name: its draws in the top-m} (e.g. PCA 1, the matched null
            ``--causal-null-draws``); scales: the logit effect's α.
    """

    loss_name: str
    divergence_name: str
    output_name: str
    n_sequences: int
    n_documents: int
    n_positions: int
    clean_loss: float
    spliced_loss: float
    zero_loss: float
    mean_loss: float
    subspace_loss: float
    random_error_loss: float
    random_error_divergence: float
    divergence_ratio: float
    loss_recovered: float
    saelens_clean_loss: float
    saelens_spliced_loss: float
    saelens_zero_loss: float
    saelens_positions: int
    analysed_loss_recovered: float
    spliced_divergence: float
    zero_divergence: float
    mean_gap_closed: GapClosed
    subspace_gap_closed: GapClosed
    tested: list[int]
    test_rule: str
    alpha: float
    min_share: float
    order: list[int]
    order_rule: str
    fit_documents: int
    score_documents: int
    top_m: list[TopM]
    components: list[ComponentEffect]
    baseline_draws: dict[str, int]
    scales: list[float]


ORDER_RULE = ("each set's parts (ICA and every draw of every baseline) by their first-order loss decrease on half A "
              "of the held-out documents (attribution patching at the spliced activation); top-m scored on half B")


class Bar(Protocol):
    """What :func:`causal_tests` needs of a progress bar (a tqdm has it)."""

    def update(self, n: int) -> object: ...

    def set_description(self, desc: str) -> object: ...

    def close(self) -> object: ...


#: A progress-bar factory: (description, total window passes) → a :class:`Bar`.
ProgressFactory = Callable[[str, int], Bar]


def splice_edits(ica: Parts, seed: int) -> list[Edit]:
    """The splice rows: clean, spliced, zero, mean, whole subspace, random error, and SAELens's three."""
    return [Edit("clean", "clean"), Edit("spliced", "spliced"), Edit("zero", "zero"),
            Edit("mean", "spliced", shift=ica.mean),
            Edit("subspace", "spliced", U=ica.unmixing.T, A=ica.mixing.T, centre=ica.mean, shift=ica.mean),
            Edit("random error", "clean", noise=True, seed=seed),
            Edit("saelens clean", "clean", scored="tokens"),
            Edit("saelens spliced", "spliced", at="tokens", scored="tokens"),
            Edit("saelens zero", "zero", at="all", scored="tokens")]


def component_edits(ica: Parts, tested: Sequence[int], component_nulls: Sequence[Parts]) -> list[Edit]:
    """Per tested component c: its part added back, its matched-null part at ‖a_c‖², its ablation."""
    directions = ica.mixing / np.linalg.norm(ica.mixing, axis=0)
    out = []
    for c, null in zip(tested, component_nulls):
        out += [add_back(f"add {c}", ica, np.array([c])), matched_add_back(f"null {c}", null, float(ica.variance[c])),
                ablate(f"ablate {c}", directions[:, c])]
    return out


def top_m_edits(ica: Parts, baselines: Mapping[str, Sequence[Parts]], ms: Sequence[int]
                ) -> tuple[list[Edit], dict[int, tuple[float, dict[str, list[float]]]]]:
    """The top-m add-backs of ICA and of each draw of each baseline (all in their ``order``), the
    baselines at the ICA set's variance. Edits are named ``ICA top {m}`` and ``{name} {draw} top {m}``.

    Returns:
        (edits, {m: (variance, {baseline name: parts used by each draw, the last one fractional})}).
    """
    edits, plan = [], {}
    for m in ms:
        target = float(ica.variance[ica.order[:m]].sum())
        edits.append(add_back(f"{ICA} top {m}", ica, ica.order[:m]))
        used: dict[str, list[float]] = {}
        for name, draws in baselines.items():
            used[name] = []
            for d, parts in enumerate(draws):
                ids, sc = equal_variance_set(parts, target)
                edits.append(add_back(f"{name} {d} top {m}", parts, ids, sc))
                used[name].append(len(ids) - 1 + float(sc[-1] ** 2))
        plan[m] = (target, used)
    return edits, plan


def baseline_add_back(ica: EditTotals, draws: Sequence[EditTotals], parts: Sequence[float], spliced: EditTotals,
                      clean: EditTotals) -> BaselineAddBack:
    """One baseline's :class:`BaselineAddBack` from the totals of ICA's top-m edit and of each draw's
    (``parts``: parts each draw used), on the same sequences.

    Raises:
        ValueError: no draws, or the totals come from different sequences.
    """
    if not draws:
        raise ValueError("a baseline needs at least one draw")
    shares = [gap_closed(t, spliced, clean).share for t in draws]
    mean = EditTotals(loss=np.mean([t.loss for t in draws], axis=0),
                      divergence=np.mean([t.divergence for t in draws], axis=0),
                      positions=draws[0].positions, unit=draws[0].unit)
    return BaselineAddBack(gap=gap_closed(mean, spliced, clean), draws=shares,
                           low=float(np.quantile(shares, 0.025)), high=float(np.quantile(shares, 0.975)),
                           parts=float(np.mean(parts)), versus=paired_test(ica, list(draws), spliced, clean))


def window_passes(n_windows: int, k: int, n_tested: int, baseline_draws: int, n_scales: int = 2,
                  logit_windows: int = 2) -> dict[str, int]:
    """What :func:`causal_tests` costs, in window passes (one held-out window through the layers after
    the hook for one edit; the clean reference of each batch counts as one), per phase.

    Halves A and B are taken as n_windows / 2 each (they split documents, so they differ by at most
    a document's windows). ``attribution`` counts windows of half A, each one forward and one
    backward pass (about three window passes).

    Args:
        n_windows: held-out windows; k: components; n_tested: components given per-component tests;
        baseline_draws: the top-m's baseline decompositions, every draw of every baseline (step 06:
            one PCA + ``--causal-null-draws`` matched nulls); n_scales, logit_windows: of the logit effect.
    Returns:
        {"splice and components", "attribution", "top-m", "logit effect": window passes}.
    """
    moving = sum(not e.identity for e in splice_edits(Parts("", np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1),
                                                              np.arange(1)), 0))
    ms = len(m_grid(k)) - 1
    half = n_windows // 2
    return {"splice and components": n_windows * (1 + moving + 3 * n_tested),
            "attribution": half if ms else 0,
            "top-m": (n_windows - half) * (1 + ms * (1 + baseline_draws)) if ms else 0,
            "logit effect": min(logit_windows, n_windows) * (1 + n_scales * n_tested) if n_scales and n_tested else 0}


def causal_tests(downstream: Downstream, reconstruct: Callable[[torch.Tensor], torch.Tensor], ica: Parts,
                 baselines: Mapping[str, Sequence[Parts]], decode: Callable[[int], str], tested: Sequence[int] = (),
                 component_nulls: Sequence[Parts] = (), test_rule: str = "",
                 not_tested: Mapping[int, str] | None = None,
                 scales: Sequence[float] = (), logit_sequences: int | None = 2, seed: int = 0, stack: int = 4,
                 progress: ProgressFactory | None = None) -> CausalTable:
    """Splice, add back (each tested component against its matched null; top-m against every draw of
    every baseline at equal variance, ordered on half A and scored on half B), ablate, and the logit
    effect; see the module docstring.

    Cost in window passes (one window through the layers after the hook for one edit), n windows,
    T tested components, D baseline draws in all, M set sizes: n·(1 + 7 + 3T) for the splice and the
    per-component edits, n/2 forward + backward passes for the order, n/2·(1 + M·(1 + D)) for the
    top-m, and 2·(1 + |scales|·T) for the logit effect (:func:`window_passes`). One progress bar
    counts them all (the attribution's windows one each), its description naming the phase.

    Args:
        ica: the ICA parts (``order`` is refitted).
        baselines: {name: its draws}, decompositions of the same residual (e.g. ``PCA``: the principal
            components of the same whitened subspace, ``rotated_parts`` with the identity; ``null``: the
            matched null draws, Haar rotations); a name with no draws is left out.
        decode: an output id as text (a token; a readout's name).
        tested: the components given per-component tests (in test order); component_nulls: one null
            decomposition per tested component, whose part 0 scaled to ‖a_c‖² is c's matched null.
        test_rule: which components are tested, in words; not_tested: why each other one is not.
        scales: α of the logit effect (empty: skipped); logit_sequences: sequences it uses (None: all).
        seed: the halves' split and the random error.
        progress: a progress-bar factory (e.g. ``lambda d, n: tqdm(desc=d, total=n)``), called once
            with the whole test's window passes, or None.
    Returns:
        the :class:`CausalTable`.
    Raises:
        ValueError: ``component_nulls`` and ``tested`` differ in length; a baseline is named ``ICA``.
    """
    if len(component_nulls) != len(tested):
        raise ValueError("one null decomposition per tested component")
    if ICA in baselines:
        raise ValueError(f"a baseline cannot be named {ICA}")
    baselines = {name: list(draws) for name, draws in baselines.items() if len(draws)}
    k = len(ica.order)
    units = np.asarray(downstream.units)
    n = len(units)

    edits = splice_edits(ica, seed) + component_edits(ica, tested, component_nulls)
    moving = sum(not e.identity for e in edits) + 1
    half_a, half_b = halves(units, seed)
    ms = m_grid(k)[:-1]
    sets = [ica, *(p for draws in baselines.values() for p in draws)]
    with_top = bool(len(half_a) and len(half_b) and ms)
    steers = [steer(f"steer {c} {a}", a * ica.mixing[:, c]) for c in tested for a in scales]
    pick = np.arange(min(logit_sequences, n)) if logit_sequences is not None else None
    passes = {"splice and per-component edits": n * moving,
              "attribution on half A (forward + backward)": len(half_a) if with_top else 0,
              # top-m: per m the ICA set and every baseline draw, plus each batch's clean reference
              "top-m add-back on half B": len(half_b) * (1 + len(ms) * len(sets)) if with_top else 0,
              "logit effect": _n_selected(downstream, pick) * (len(steers) + 1) if steers else 0}
    bar = progress("causal tests", sum(passes.values())) if progress is not None else None

    def phase(desc: str, job: Callable[[Callable[[int], object] | None], Any]) -> Any:
        if bar is None:
            return job(None)
        bar.set_description(f"causal tests: {desc}")
        return job(bar.update)

    try:
        totals = phase("splice and per-component edits",
                       lambda up: run_edits(downstream, reconstruct, edits, stack=stack, progress=up))
        clean, spliced = totals["clean"], totals["spliced"]

        # top-m: order on half A (attribution), score on half B (exact)
        top: list[TopM] = []
        ica_attr = np.full(k, np.nan)
        ica_order = ica.order
        if with_top:
            decrease, _ = phase("attribution on half A (forward + backward)",
                                lambda up: attribution(downstream, reconstruct, sets, half_a, up))
            ordered = iter([replace(p, order=np.argsort(-d, kind="stable")) for p, d in zip(sets, decrease)])
            ica_ordered = next(ordered)
            ica_attr, ica_order = decrease[0], ica_ordered.order
            by_name = {name: [next(ordered) for _ in draws] for name, draws in baselines.items()}
            t_edits, plan = top_m_edits(ica_ordered, by_name, ms)
            scored = phase("top-m add-back on half B",
                           lambda up: run_edits(downstream, reconstruct, t_edits, half_b, stack=stack, progress=up))
            sb, cb = spliced.subset(half_b), clean.subset(half_b)
            for m in ms:
                ica_m = scored[f"{ICA} top {m}"]
                top.append(TopM(m=m, variance=plan[m][0], ica=gap_closed(ica_m, sb, cb), baselines={
                    name: baseline_add_back(ica_m, [scored[f"{name} {d} top {m}"] for d in range(len(draws))],
                                            plan[m][1][name], sb, cb) for name, draws in baselines.items()}))

        shifts: dict[str, EditTotals] = {}
        if steers:
            shifts = phase("logit effect",
                           lambda up: run_edits(downstream, reconstruct, steers, pick, stack=stack, progress=up))
    finally:
        if bar is not None:
            bar.close()

    def closed(name: str) -> GapClosed:
        return gap_closed(totals[name], spliced, clean)

    def shift_rows(c: int) -> list[OutputShift]:
        out = []
        for a in scales:
            change = shifts[f"steer {c} {a}"].mean_output_change
            assert change is not None
            up, down = top_outputs(change)
            out.append(OutputShift(float(a), [(decode(t), float(change[t])) for t in up],
                                   [(decode(t), float(change[t])) for t in down]))
        return out

    tests = {c: paired_test(totals[f"add {c}"], [totals[f"null {c}"]], spliced, clean) for c in tested}
    rejected = dict(zip(tested, holm(np.array([tests[c].p for c in tested]), ALPHA))) if tested else {}
    comps = []
    for c in range(k):
        attr = float(ica_attr[c]) if np.isfinite(ica_attr[c]) else None
        if c not in tests:
            comps.append(ComponentEffect(c, False, (not_tested or {}).get(c, "not tested"), None, None, None, False,
                                         False, attr, None, None, []))
            continue
        share = closed(f"add {c}")
        comps.append(ComponentEffect(
            component=c, tested=True, not_tested_because="", add_back=share, null_add_back=closed(f"null {c}"),
            versus_null=tests[c], holm=bool(rejected[c]),
            closes_gap=bool(rejected[c] and share.share >= MIN_SHARE), attribution=attr,
            ablation_divergence=totals[f"ablate {c}"].mean_divergence,
            ablation_loss_change=totals[f"ablate {c}"].mean_loss - clean.mean_loss,
            output_shift=shift_rows(c) if scales else []))
    zero, noise = totals["zero"], totals["random error"]
    s_clean, s_spliced, s_zero = totals["saelens clean"], totals["saelens spliced"], totals["saelens zero"]
    return CausalTable(
        loss_name=downstream.loss_name, divergence_name=downstream.divergence_name,
        output_name=downstream.output_name, n_sequences=n, n_documents=len(np.unique(units)),
        n_positions=int(clean.positions.sum()),
        clean_loss=clean.mean_loss, spliced_loss=spliced.mean_loss, zero_loss=zero.mean_loss,
        mean_loss=totals["mean"].mean_loss, subspace_loss=totals["subspace"].mean_loss,
        random_error_loss=noise.mean_loss, random_error_divergence=noise.mean_divergence,
        divergence_ratio=spliced.mean_divergence / noise.mean_divergence if noise.mean_divergence > 0
        else float("nan"),
        loss_recovered=loss_recovered(s_clean, s_spliced, s_zero), saelens_clean_loss=s_clean.mean_loss,
        saelens_spliced_loss=s_spliced.mean_loss, saelens_zero_loss=s_zero.mean_loss,
        saelens_positions=int(s_clean.positions.sum()),
        analysed_loss_recovered=loss_recovered(clean, spliced, zero),
        spliced_divergence=spliced.mean_divergence, zero_divergence=zero.mean_divergence,
        mean_gap_closed=closed("mean"), subspace_gap_closed=closed("subspace"),
        tested=[int(c) for c in tested], test_rule=test_rule, alpha=ALPHA, min_share=MIN_SHARE,
        order=[int(c) for c in ica_order], order_rule=ORDER_RULE if top else "no top-m (fewer than two documents)",
        fit_documents=len(np.unique(units[half_a])), score_documents=len(np.unique(units[half_b])),
        top_m=top, components=comps, baseline_draws={name: len(draws) for name, draws in baselines.items()},
        scales=[float(a) for a in scales])


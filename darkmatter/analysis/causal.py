"""Causal tests of residual directions: splice, add back, ablate, logit effect.

Does the model use what the SAE leaves in its residual r = x − x̂? The tests edit the activation
at the hook on held-out text and read what changes downstream (a language model's next-token
distribution; a planted run's linear readout):

* **splice**: x → x̂ (the SAE reconstruction) and x → 0; the next-token cross-entropy of clean,
  spliced and zero-ablated runs and SAELens's "CE loss recovered" (L_zero − L_spliced) /
  (L_zero − L_clean) (``sae_lens.evals``), with KL(clean ‖ edited) beside it.
* **add back**: x → x̂ + Σ_{c∈S} s_c a_c, a set S of a decomposition's parts (source × mixing
  column) put back on the spliced activation; its score is the share of the clean–spliced gap it
  closes, (L_spliced − L_edit) / (L_spliced − L_clean). Sets of m ICA components are held
  against the same subspace's matched null rotations and its principal components *at equal
  variance* (the baseline adds back as much residual variance as the ICA set; the last of its
  parts is scaled to hit it exactly; sources are uncorrelated and of unit variance, so a part's
  variance is its mixing column's squared norm).
* **ablation**: x → x − (x·u)u for a unit direction u; KL and the change in loss.
* **logit effect**: x → x + α a_c (α in units of the source's standard deviation, which is 1);
  the mean change of every output (logit) over the positions.

Edits act only at the positions a run analyses (``Batch.splice``: not BOS, not a massive
activation); losses count where a prediction follows (``Batch.score``). Every figure is summed
per sequence (a window, nearly always within one document) so that its standard error comes from
the spread over sequences, not over correlated tokens. The loops stack several edits along the
batch dimension, so one forward pass of the layers after the hook serves many of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

#: What an edit starts from at the spliced positions.
Base = Literal["clean", "spliced", "zero"]


@dataclass
class Batch:
    """Held-out sequences with their activations at the hook.

    Attributes:
        x: float32[b, ctx, d_model] clean activations at the hook.
        splice: bool[b, ctx] positions that edits change (the rows the analysis would take).
        score: bool[b, ctx] positions whose outputs count (a next token exists, for a language model).
        tokens: int64[b, ctx] token ids, or None without a model.
        unit: int64[b] sequence ids (for standard errors over sequences).
    """

    x: torch.Tensor
    splice: torch.Tensor
    score: torch.Tensor
    tokens: torch.Tensor | None
    unit: np.ndarray


class Downstream(Protocol):
    """What reads the activation after the hook (a language model's later layers, or a readout)."""

    loss_name: str
    divergence_name: str
    output_name: str
    description: str

    def batches(self, n_sequences: int | None = None) -> Iterator[Batch]:
        """The held-out sequences (the first ``n_sequences`` of them, or all)."""
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


@dataclass(frozen=True)
class Edit:
    """One intervention at the spliced positions: x' = base + ((read − centre) @ U) @ A + shift.

    Attributes:
        name: key of the result.
        base: ``clean`` (x), ``spliced`` (x̂) or ``zero``.
        read: what U reads: the ``residual`` x − x̂ (centred by ``centre``) or the ``clean`` x.
        U: float64[d_model, m] read-out vectors (unmixing rows, transposed), or None.
        A: float64[m, d_model] write-in vectors (mixing columns, transposed, scaled), or None.
        centre: float64[d_model] subtracted from what U reads (the residual mean), or None.
        shift: float64[d_model] added everywhere it edits, or None.
        track_outputs: also sum the change of every output (for the logit effect).
    """

    name: str
    base: Base
    read: Literal["residual", "clean"] = "residual"
    U: np.ndarray | None = None
    A: np.ndarray | None = None
    centre: np.ndarray | None = None
    shift: np.ndarray | None = None
    track_outputs: bool = False


@dataclass
class EditTotals:
    """Sums over the held-out positions of one edit, per sequence.

    Attributes:
        loss, divergence: float64[n_seq] summed over each sequence's scored positions.
        positions: float64[n_seq] scored positions per sequence.
        output_change: float64[n_out] summed change of each output (``track_outputs`` edits), or None.
    """

    loss: np.ndarray
    divergence: np.ndarray
    positions: np.ndarray
    output_change: np.ndarray | None = None

    @property
    def mean_loss(self) -> float:
        return float(self.loss.sum() / max(self.positions.sum(), 1))

    @property
    def mean_divergence(self) -> float:
        return float(self.divergence.sum() / max(self.positions.sum(), 1))

    @property
    def mean_output_change(self) -> np.ndarray | None:
        return None if self.output_change is None else self.output_change / max(self.positions.sum(), 1)


def _apply(edit: Edit, x: torch.Tensor, x_hat: torch.Tensor, splice: torch.Tensor) -> torch.Tensor:
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
    return torch.where(splice[..., None], out, x)


@torch.no_grad()
def run_edits(downstream: Downstream, reconstruct: Callable[[torch.Tensor], torch.Tensor], edits: Sequence[Edit],
              n_sequences: int | None = None, stack: int = 4,
              progress: Callable[[int], object] | None = None) -> dict[str, EditTotals]:
    """Every edit on every held-out batch; one forward pass serves ``stack`` edits.

    Args:
        reconstruct: x → x̂, float32[..., d_model] (the SAE's forward: encode then decode).
        n_sequences: use only the first n held-out sequences (None: all).
        stack: edits stacked along the batch dimension per forward pass.
        progress: called with the number of edits after each forward pass (e.g. a tqdm's update), or None.
    Returns:
        {edit name: EditTotals}, sequences in the order ``downstream.batches`` yields them.
    Raises:
        ValueError: two edits share a name.
    """
    if len({e.name for e in edits}) != len(edits):
        raise ValueError("edit names must be unique")
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {e.name: [] for e in edits}
    changes: dict[str, np.ndarray] = {}
    for batch in downstream.batches(n_sequences):
        x = batch.x
        x_hat = reconstruct(x.reshape(-1, x.shape[-1])).reshape(x.shape).to(x.dtype)
        clean = downstream.outputs(x, batch)
        reference = downstream.reference(clean, batch)
        weight = batch.score.to(torch.float64)
        for start in range(0, len(edits), stack):
            group = edits[start:start + stack]
            acts = torch.cat([_apply(e, x, x_hat, batch.splice) for e in group])
            out = downstream.outputs(acts, batch)
            loss, div = (v.double() for v in downstream.score(out, batch, reference))
            b = x.shape[0]
            for j, e in enumerate(group):
                sl = slice(j * b, (j + 1) * b)
                parts[e.name].append(((loss[sl] * weight).sum(1).cpu().numpy(),
                                      (div[sl] * weight).sum(1).cpu().numpy(), weight.sum(1).cpu().numpy()))
                if e.track_outputs:
                    d = ((out[sl] - clean).double() * weight[..., None]).sum((0, 1)).cpu().numpy()
                    changes[e.name] = changes.get(e.name, 0) + d
            del out, acts
            if progress is not None:
                progress(len(group))
    totals = {}
    for name, got in parts.items():
        loss_s, div_s, pos_s = (np.concatenate(col) for col in zip(*got))
        totals[name] = EditTotals(loss=loss_s, divergence=div_s, positions=pos_s, output_change=changes.get(name))
    return totals


# ------------------------------------------------------------------------------------- decompositions
@dataclass(frozen=True)
class Parts:
    """A decomposition of the centred residual: r − mean ≈ Σ_c s_c a_c with s = (r − mean) @ unmixing.T.

    Attributes:
        name: ``ICA``, ``PCA`` or ``null``.
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


def ablate(name: str, direction: np.ndarray) -> Edit:
    """x − (x·u)u for the unit vector u along ``direction`` (float[d_model])."""
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    return Edit(name, "clean", read="clean", U=u[:, None], A=-u[None])


def steer(name: str, vector: np.ndarray) -> Edit:
    """x + vector at the spliced positions, tracking the change of every output."""
    return Edit(name, "clean", shift=np.asarray(vector, dtype=np.float64), track_outputs=True)


# ------------------------------------------------------------------------------------- reading the totals
#: A component "closes the gap" when adding it back alone closes at least this share of it ...
MIN_SHARE = 0.01
#: ... at this many standard errors (over held-out sequences) or more.
MIN_Z = 3.0


@dataclass(frozen=True)
class GapClosed:
    """The share of the clean–spliced loss gap an edit closes, with its standard error over sequences."""

    share: float
    se: float

    @property
    def z(self) -> float:
        return self.share / self.se if self.se > 0 else float("nan")

    @property
    def closes_gap(self) -> bool:
        """At least :data:`MIN_SHARE` of the gap at z ≥ :data:`MIN_Z`."""
        return bool(self.share >= MIN_SHARE and self.z >= MIN_Z)


def gap_closed(edit: EditTotals, spliced: EditTotals, clean: EditTotals) -> GapClosed:
    """(L_spliced − L_edit) / (L_spliced − L_clean) over all scored positions; the standard error is
    the delta method's over sequences (the numerator's per-sequence differences, gap held fixed).

    Raises:
        ValueError: the totals come from different sequences.
    """
    if not (len(edit.loss) == len(spliced.loss) == len(clean.loss)):
        raise ValueError("edit totals cover different sequences")
    n = max(spliced.positions.sum(), 1)
    gap = (spliced.loss - clean.loss).sum() / n
    if gap <= 0:
        return GapClosed(float("nan"), float("nan"))
    d = spliced.loss - edit.loss  # per sequence
    share = d.sum() / n / gap
    w = len(d)
    se = float(np.std(d * w / n, ddof=1) / np.sqrt(w) / gap) if w > 1 else float("nan")
    return GapClosed(float(share), se)


def loss_recovered(clean: EditTotals, spliced: EditTotals, zero: EditTotals) -> float:
    """SAELens's CE loss recovered: (L_zero − L_spliced) / (L_zero − L_clean)."""
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


@dataclass
class ReadoutDownstream:
    """A linear readout y = x @ B of held-out rows: the planted runs' stand-in for a model.

    Loss and divergence are both ‖y' − y‖² / n_out (the readout's squared error against its clean
    value), so the clean loss is 0 and the gap closed is the share of the readout's error removed.

    Args:
        rows: float32[n, d_model] held-out rows; B: float64[d_model, n_out]; per: rows per sequence.
        description: the held-out data and the readout, in words.
    """

    rows: np.ndarray
    B: np.ndarray
    per: int = 128
    device: str = "cpu"
    description: str = "held-out rows through a linear readout"
    loss_name: str = "readout squared error (per readout, units of x²)"
    divergence_name: str = "readout squared error (per readout)"
    output_name: str = "readout"
    _B: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._B = torch.as_tensor(self.B, dtype=torch.float32, device=self.device)

    def batches(self, n_sequences: int | None = None) -> Iterator[Batch]:
        n_seq = len(self.rows) // self.per if n_sequences is None else min(n_sequences, len(self.rows) // self.per)
        for start in range(0, n_seq, 16):
            stop = min(start + 16, n_seq)
            x = torch.as_tensor(self.rows[start * self.per:stop * self.per], device=self.device)
            x = x.reshape(stop - start, self.per, -1).float()
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=self.device)
            yield Batch(x=x, splice=mask, score=mask, tokens=None, unit=np.arange(start, stop))

    def outputs(self, acts: torch.Tensor, batch: Batch) -> torch.Tensor:
        return acts @ self._B

    def reference(self, clean: torch.Tensor, batch: Batch) -> torch.Tensor:
        return clean

    def score(self, out: torch.Tensor, batch: Batch, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(reference)
        err = (out.reshape(-1, *reference.shape) - reference).pow(2).mean(-1).reshape(-1, reference.shape[1])
        assert err.shape[0] % b == 0
        return err, err


# ------------------------------------------------------------------------------------- the whole test
@dataclass(frozen=True)
class TopM:
    """The top-m add-back of one m: ICA's first m components against the baselines at equal variance.

    Attributes:
        m: ICA components added back; variance: residual variance they carry (their ‖a_c‖² summed).
        ica: gap closed by them; pca: by the leading principal components carrying the same variance
            (``pca_parts`` of them, the last scaled); null: by each matched null rotation's parts in
            random order carrying the same variance (one per draw).
        null_mean, null_max: over the draws.
    """

    m: int
    variance: float
    ica: GapClosed
    pca: GapClosed
    pca_parts: float
    null: list[float]
    null_mean: float
    null_max: float


@dataclass(frozen=True)
class OutputShift:
    """The outputs an added direction moves most (mean change over the held-out positions)."""

    scale: float
    up: list[tuple[str, float]]
    down: list[tuple[str, float]]


@dataclass(frozen=True)
class ComponentEffect:
    """One ICA component's causal figures.

    Attributes:
        add_back: gap closed when its part alone is put back on the spliced activation;
        closes_gap: it closes at least :data:`MIN_SHARE` of it at z ≥ :data:`MIN_Z`.
        ablation_divergence: mean divergence when its (unit mixing) direction is projected out of x;
        ablation_loss_change: the mean loss change it causes.
        output_shift: per scale α, the outputs that adding α·a_c moves most (the logit effect).
    """

    component: int
    add_back: GapClosed
    closes_gap: bool
    ablation_divergence: float
    ablation_loss_change: float
    output_shift: list[OutputShift]


@dataclass(frozen=True)
class CausalTable:
    """Every causal figure of one run (causal.json).

    Attributes:
        loss_name, divergence_name, output_name: what was measured, with units.
        n_sequences, n_positions: held-out sequences and scored positions.
        clean_loss, spliced_loss, zero_loss: mean loss with x, x̂ and 0 at the hook.
        mean_loss: with x̂ + the residual mean; subspace_loss: with x̂ + the residual's whole
            whitened k-subspace part (mean included), the most any top-m set can put back.
        loss_recovered: SAELens's (L_zero − L_spliced) / (L_zero − L_clean).
        spliced_divergence, zero_divergence: mean divergence from the clean outputs.
        mean_gap_closed, subspace_gap_closed: gap closed by the mean, by the whole k-subspace.
        order: ICA components in add-back order; order_rule: why.
        top_m: one row per m; components: per ICA component, in component order.
        null_draws: matched null rotations per m; scales: the logit effect's α.
    """

    loss_name: str
    divergence_name: str
    output_name: str
    n_sequences: int
    n_positions: int
    clean_loss: float
    spliced_loss: float
    zero_loss: float
    mean_loss: float
    subspace_loss: float
    loss_recovered: float
    spliced_divergence: float
    zero_divergence: float
    mean_gap_closed: GapClosed
    subspace_gap_closed: GapClosed
    order: list[int]
    order_rule: str
    top_m: list[TopM]
    components: list[ComponentEffect]
    null_draws: int
    scales: list[float]


def causal_tests(downstream: Downstream, reconstruct: Callable[[torch.Tensor], torch.Tensor], ica: Parts,
                 pca: Parts, nulls: Sequence[Parts], order_rule: str, decode: Callable[[int], str],
                 scales: Sequence[float] = (), logit_sequences: int | None = None, stack: int = 4,
                 progress: Callable[[int], object] | None = None) -> CausalTable:
    """Splice, add back (each component, and top-m against PCA and the matched nulls at equal
    variance), ablate, and the logit effect; see the module docstring.

    Args:
        ica: the ICA parts, ``order`` = the add-back order; pca: the principal components of the
            same whitened subspace (``rotated_parts`` with the identity); nulls: matched null draws.
        decode: an output id as text (a token; a readout's name).
        scales: α of the logit effect (empty: skipped); logit_sequences: sequences it uses (None: all).
    Returns:
        the :class:`CausalTable`.
    """
    k = len(ica.order)
    edits = [Edit("clean", "clean"), Edit("spliced", "spliced"), Edit("zero", "zero"),
             Edit("mean", "spliced", shift=ica.mean),
             Edit("subspace", "spliced", U=ica.unmixing.T, A=ica.mixing.T, centre=ica.mean, shift=ica.mean)]
    edits += [add_back(f"add {c}", ica, np.array([c])) for c in range(k)]
    directions = ica.mixing / np.linalg.norm(ica.mixing, axis=0)
    edits += [ablate(f"ablate {c}", directions[:, c]) for c in range(k)]
    ms = m_grid(k)[:-1]
    var = ica.variance
    plan: dict[int, tuple[float, float]] = {}
    for m in ms:
        target = float(var[ica.order[:m]].sum())
        edits.append(add_back(f"ICA top {m}", ica, ica.order[:m]))
        ids, sc = equal_variance_set(pca, target)
        edits.append(add_back(f"PCA top {m}", pca, ids, sc))
        plan[m] = (target, len(ids) - 1 + float(sc[-1] ** 2))
        for d, null in enumerate(nulls):
            ids, sc = equal_variance_set(null, target)
            edits.append(add_back(f"null {d} top {m}", null, ids, sc))
    totals = run_edits(downstream, reconstruct, edits, stack=stack, progress=progress)
    shifts: dict[str, EditTotals] = {}
    if scales:
        steers = [steer(f"steer {c} {a}", a * ica.mixing[:, c]) for c in range(k) for a in scales]
        shifts = run_edits(downstream, reconstruct, steers, logit_sequences, stack=stack, progress=progress)
    clean, spliced, zero = totals["clean"], totals["spliced"], totals["zero"]

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

    top = []
    for m in ms:
        nd = [closed(f"null {d} top {m}").share for d in range(len(nulls))]
        top.append(TopM(m=m, variance=plan[m][0], ica=closed(f"ICA top {m}"), pca=closed(f"PCA top {m}"),
                        pca_parts=plan[m][1], null=nd, null_mean=float(np.mean(nd)) if nd else float("nan"),
                        null_max=float(np.max(nd)) if nd else float("nan")))
    comps = [ComponentEffect(component=c, add_back=closed(f"add {c}"), closes_gap=closed(f"add {c}").closes_gap,
                             ablation_divergence=totals[f"ablate {c}"].mean_divergence,
                             ablation_loss_change=totals[f"ablate {c}"].mean_loss - clean.mean_loss,
                             output_shift=shift_rows(c)) for c in range(k)]
    return CausalTable(
        loss_name=downstream.loss_name, divergence_name=downstream.divergence_name,
        output_name=downstream.output_name, n_sequences=len(clean.loss), n_positions=int(clean.positions.sum()),
        clean_loss=clean.mean_loss, spliced_loss=spliced.mean_loss, zero_loss=zero.mean_loss,
        mean_loss=totals["mean"].mean_loss, subspace_loss=totals["subspace"].mean_loss,
        loss_recovered=loss_recovered(clean, spliced, zero), spliced_divergence=spliced.mean_divergence,
        zero_divergence=zero.mean_divergence, mean_gap_closed=closed("mean"), subspace_gap_closed=closed("subspace"),
        order=[int(c) for c in ica.order], order_rule=order_rule, top_m=top, components=comps,
        null_draws=len(nulls), scales=[float(a) for a in scales])

"""Activations at the hook, SAE reconstructions and the residual, streamed in chunks.

The dense SAE feature matrix ``[n_tokens, d_sae]`` never exists whole: each
chunk of ``sae_chunk_size`` rows is encoded, decoded and reduced to running
sums (FVU, L0, per-feature firing counts and power sums) before the next.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from darkmatter.distributed import SINGLE, Comm
from darkmatter.errors import DarkMatterError
from darkmatter.sources.base import Resume, RowBatch, RowLog
from darkmatter.sources.models import LoadedModel


@dataclass
class Throughput:
    """Wall time of collection by stage (seconds; CUDA work synchronised at each stage's end).

    Attributes:
        model: forward passes to the hook layer (stopping right after it).
        sae: SAE encode + decode and the running statistics.
        write: copies to the float32 memmaps (device → host included).
        total: the whole collection, text windows and everything else included.
    """

    model: float = 0.0
    sae: float = 0.0
    write: float = 0.0
    total: float = 0.0
    _marks: dict[str, float] = field(default_factory=dict, repr=False)

    def tokens_per_second(self, n_tokens: int) -> dict[str, float]:
        """Tokens/s for the model alone, model + SAE, and end to end with I/O."""
        return {"model": n_tokens / max(self.model, 1e-9),
                "model_and_sae": n_tokens / max(self.model + self.sae, 1e-9),
                "end_to_end": n_tokens / max(self.total, 1e-9)}

    def record(self, n_tokens: int) -> ThroughputRecord:
        """Seconds per stage and tokens/s, for sae_stats.json."""
        tps = self.tokens_per_second(n_tokens)
        return ThroughputRecord(seconds_model=self.model, seconds_sae=self.sae, seconds_write=self.write,
                                seconds_total=self.total, tokens_per_second_model=tps["model"],
                                tokens_per_second_model_and_sae=tps["model_and_sae"],
                                tokens_per_second_end_to_end=tps["end_to_end"])


@dataclass(frozen=True)
class ThroughputRecord:
    """Collection wall time by stage (seconds) and throughput (tokens/s)."""

    seconds_model: float
    seconds_sae: float
    seconds_write: float
    seconds_total: float
    tokens_per_second_model: float
    tokens_per_second_model_and_sae: float
    tokens_per_second_end_to_end: float


def now(device: torch.device | str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


Pending = tuple[int, "np.ndarray | None", Callable[[], torch.Tensor]]
"""One batch of a source's stream, not yet computed: (windows in it, tokens int[b, ctx] or None,
``compute()`` → activations float32[b, ctx, d_model]). A sharded run computes only its own batches."""


def window_rows(batches: Iterator[Pending], n_tokens: int,
                bos_id: int | None = None, max_norm_ratio: float | None = None, log: RowLog | None = None,
                desc: str = "rows", what: str = "the source", hook_name: str = "the hook",
                hint: str = "lower `n_tokens` / `sae_train_tokens`", comm: Comm = SINGLE,
                resume: Resume | None = None) -> Iterator[RowBatch]:
    """Turn batches of windows of activations into the analysed rows, until ``n_tokens`` rows
    have been yielded (by every rank together).

    BOS positions (where ``tokens == bos_id``) are always dropped. With ``max_norm_ratio``, so
    are tokens whose activation norm exceeds that multiple of the batch's median norm: the
    "massive activations" of attention sinks (Sun et al. 2024), thousands of times the typical
    norm, which would otherwise dominate every second- and fourth-moment statistic downstream.

    Sharded (``comm`` of a torchrun world of W ranks): the stream is read in rounds of W batches,
    batch j of a round belongs to rank j, and only that rank computes it. After each round the
    ranks exchange how many rows their batch gave, so every rank cuts the stream where one
    process would have: the rows, their order (batch order) and the per-batch drops are exactly
    those of a single process.

    Args:
        batches: :data:`Pending` batches; only what is needed is pulled (and computed).
        n_tokens: rows to yield in total (over every rank).
        bos_id: BOS token id (None: nothing is dropped as BOS).
        log: if given, the token windows of every batch pulled are appended to ``log.windows``
            (row indices refer to them).
        what: names the source in the "ran out" message, ``hint`` says what to do; hook_name: in the
            NaN message.
        comm: the ranks of a sharded run (default: one process).
        resume: skip the first ``resume.batches`` batches (pulled and logged, not computed) that
            gave ``resume.rows`` rows in an interrupted run.
    Yields:
        RowBatch: rows float32[m, d_model], index int32[m, 2] of (window, position), massive
        tokens dropped and BOS positions skipped in this batch (up to the last row taken), its
        batch number and the rows analysed after its round.
    Raises:
        DarkMatterError: the activations contain NaN or inf, or ``batches`` runs out.
    """
    done = resume.rows if resume else 0
    skip = resume.batches if resume else 0
    start = batch = 0
    with tqdm(total=n_tokens, initial=done, desc=desc, unit="tok", mininterval=2.0, disable=not comm.is_main) as bar:
        while done < n_tokens:
            pulled = list(itertools.islice(batches, comm.world))
            if not pulled:
                raise DarkMatterError(f"{what} ran out after {done:,} of {n_tokens:,} tokens ({desc}); {hint}")
            if batch + len(pulled) <= skip:  # collected before the interruption
                if log is not None:
                    log.windows.extend(np.asarray(t, dtype=np.int32) for _, toks, _ in pulled if toks is not None
                                       for t in toks)
                start += sum(p[0] for p in pulled)
                batch += len(pulled)
                continue
            mine, failed = None, None
            try:
                if comm.rank < len(pulled):
                    mine = _rows_of(pulled[comm.rank], bos_id, max_norm_ratio, hook_name, start, batch)
            except DarkMatterError as exc:
                failed = exc
            avail = comm.gather_ints([-1 if failed else (mine.available if mine else 0)])[:, 0]
            if failed is not None:
                raise failed
            if (avail < 0).any():  # another rank's batch failed; it says why
                raise DarkMatterError(f"rank {int(np.flatnonzero(avail < 0)[0])} stopped collecting (see its message)")
            takes: list[int] = []
            for j in range(len(pulled)):
                takes.append(int(min(avail[j], n_tokens - done - sum(takes))))
            finished = done + sum(takes) == n_tokens
            last = max((j for j, t in enumerate(takes) if t), default=-1) if finished else len(pulled) - 1
            if log is not None:
                log.windows.extend(np.asarray(t, dtype=np.int32) for _, toks, _ in pulled[:last + 1]
                                   if toks is not None for t in toks)
            before = done + sum(takes[:comm.rank])
            done += sum(takes)
            bar.update(sum(takes))
            if mine is not None and comm.rank <= last:
                yield mine.cut(takes[comm.rank], before + takes[comm.rank] == n_tokens, batch + comm.rank, done,
                               start + sum(p[0] for p in pulled[:comm.rank]))
            start += sum(p[0] for p in pulled)
            batch += len(pulled)


@dataclass
class _BatchRows:
    """One computed batch before the cut: its analysable rows and what was dropped."""

    acts: torch.Tensor
    is_bos: np.ndarray
    rows: torch.Tensor
    win: np.ndarray
    pos: np.ndarray
    massive: np.ndarray

    @property
    def available(self) -> int:
        return int((~self.massive).sum())

    def cut(self, take: int, last: bool, batch: int, done: int, start: int) -> RowBatch:
        """The first ``take`` analysable rows (``last``: the stream ends in this batch, so BOS positions
        and massive tokens after the last row taken are not counted)."""
        massive = self.massive.copy()
        if take < (~massive).sum():  # last batch: count only what lies before the cut
            cut = np.flatnonzero(~massive)[take - 1] if take else -1
            massive[cut + 1:] = False
        keep = ~massive
        dropped = self.rows[torch.as_tensor(massive, device=self.rows.device)]
        rows, win, pos = self.rows[torch.as_tensor(keep, device=self.rows.device)], self.win[keep], self.pos[keep]
        bw, bp = np.nonzero(self.is_bos)
        if last and take:  # BOS positions up to the last analysed token only
            lw, lp = win[take - 1], pos[take - 1]
            sel = (bw < lw) | ((bw == lw) & (bp <= lp))
            bw, bp = bw[sel], bp[sel]
        acts = self.acts
        bos_rows = acts[torch.as_tensor(bw, device=acts.device), torch.as_tensor(bp, device=acts.device)]
        return RowBatch(x=rows[:take], index=np.stack([win[:take] + start, pos[:take]], axis=1).astype(np.int32),
                        n_massive=int(massive.sum()), n_bos=len(bw), excluded=torch.cat([bos_rows, dropped]),
                        batch=batch, done=done)


def _rows_of(pending: Pending, bos_id: int | None, max_norm_ratio: float | None, hook_name: str, start: int,
             batch: int) -> _BatchRows:
    _, tokens, compute = pending
    acts = compute()
    is_bos = (np.zeros(acts.shape[:2], dtype=bool) if tokens is None or bos_id is None
              else np.asarray(tokens) == bos_id)
    win, pos = np.nonzero(~is_bos)
    rows = acts[torch.as_tensor(win, device=acts.device), torch.as_tensor(pos, device=acts.device)]
    if not torch.isfinite(rows).all():
        raise DarkMatterError(
            f"activations at {hook_name} contain NaN/inf (windows {start}..{start + len(acts)}, batch {batch}); "
            "the model weights or inputs are broken: check `model` / `activations`, or use `device` cpu")
    massive = np.zeros(len(win), dtype=bool)
    if max_norm_ratio is not None and len(rows):
        norms = rows.norm(dim=1)
        massive = (norms > max_norm_ratio * norms.median()).cpu().numpy()
    return _BatchRows(acts, is_bos, rows, win, pos, massive)


def hook_rows(model: LoadedModel, windows: Iterator[np.ndarray], hook_name: str, layer: int,
              batch_size: int, device: str, n_tokens: int, max_norm_ratio: float | None = None,
              log: RowLog | None = None, desc: str = "model forward",
              clock: Throughput | None = None, comm: Comm = SINGLE,
              resume: Resume | None = None) -> Iterator[RowBatch]:
    """Run token windows through the model in batches of ``batch_size`` and yield the analysed
    rows at ``hook_name`` (see :func:`window_rows` for what is dropped and how ranks share the work).

    Args:
        windows: int32[ctx] token windows (an iterator; only what is needed is consumed).
        layer: block of the hook; the forward stops right after it.
        clock: if given, the forward passes' wall time is added to ``clock.model``.
    Raises:
        DarkMatterError: NaN/inf activations, or the text runs out.
    """
    def forward(batch: np.ndarray) -> torch.Tensor:
        t0 = now(device) if clock is not None else 0.0
        acts = model.activations(torch.as_tensor(batch, dtype=torch.long, device=device), hook_name, layer)
        if clock is not None:
            clock.model += now(device) - t0
        return acts

    def pending() -> Iterator[Pending]:
        while True:
            pulled = list(itertools.islice(windows, batch_size))
            if not pulled:
                return
            batch = np.stack(pulled)
            yield len(batch), batch, functools.partial(forward, batch)

    return window_rows(pending(), n_tokens, model.bos_id, max_norm_ratio, log, desc, what="the text",
                       hook_name=hook_name,
                       hint="lower `n_tokens` / `sae_train_tokens` or give more text with `text_files`",
                       comm=comm, resume=resume)


@dataclass
class SAERunningStats:
    """Running sums over SAE-encoded chunks; ``finish`` turns them into the reported numbers.

    Feature power sums follow the raw-moment route (sums of f, f², f³, f⁴ per
    feature, in float64) so that excess kurtosis of every feature over all
    tokens can be computed later without a second encode pass.
    """

    d_sae: int
    d_model: int
    n: int = 0
    sum_sq_resid: float = 0.0
    sum_x: np.ndarray | None = None
    sum_sq_x: float = 0.0
    sum_l0: float = 0.0
    sum_cos: float = 0.0
    feature_moments: torch.Tensor | None = None  # float64[5, d_sae]: count, Σf, Σf², Σf³, Σf⁴

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, feats: torch.Tensor) -> None:
        """Add one chunk: x, x_hat float32[m, d_model]; feats float32[m, d_sae]."""
        if self.feature_moments is None:
            self.feature_moments = torch.zeros(5, self.d_sae, dtype=torch.float64, device=feats.device)
            self.sum_x = np.zeros(self.d_model)
        r = x - x_hat
        self.n += len(x)
        self.sum_sq_resid += float(r.double().pow(2).sum())
        self.sum_x += x.double().sum(0).cpu().numpy()
        self.sum_sq_x += float(x.double().pow(2).sum())
        self.sum_cos += float(torch.nn.functional.cosine_similarity(x, x_hat, dim=1).double().sum())
        row, col = torch.nonzero(feats, as_tuple=True)
        vals = feats[row, col].double()
        self.sum_l0 += len(vals)
        fm = self.feature_moments
        fm[0].index_add_(0, col, torch.ones_like(vals))
        for p in range(1, 5):
            fm[p].index_add_(0, col, vals ** p)

    def arrays(self) -> dict[str, np.ndarray]:
        """The running sums as float64 arrays (exact), for a checkpoint."""
        fm = (self.feature_moments.cpu().numpy() if self.feature_moments is not None
              else np.zeros((5, self.d_sae)))
        return {"scalars": np.array([self.n, self.sum_sq_resid, self.sum_sq_x, self.sum_l0, self.sum_cos]),
                "sum_x": self.sum_x if self.sum_x is not None else np.zeros(self.d_model), "moments": fm}

    @classmethod
    def from_arrays(cls, d_sae: int, d_model: int, arrays: dict[str, np.ndarray],
                    device: str = "cpu") -> SAERunningStats:
        """The inverse of :meth:`arrays` (sums restored bit for bit, so a resumed run ends identical)."""
        n, sq_r, sq_x, l0, cos = (float(v) for v in arrays["scalars"])
        return cls(d_sae=d_sae, d_model=d_model, n=int(n), sum_sq_resid=sq_r, sum_x=np.array(arrays["sum_x"]),
                   sum_sq_x=sq_x, sum_l0=l0, sum_cos=cos,
                   feature_moments=torch.as_tensor(np.array(arrays["moments"]), device=device))

    def reduced(self, comm: Comm) -> SAERunningStats:
        """These sums added over every rank (itself in a single process)."""
        if not comm.sharded:
            return self
        a = self.arrays()
        return SAERunningStats.from_arrays(self.d_sae, self.d_model, {k: comm.sum_np(v) for k, v in a.items()})

    def finish(self) -> SAEMetrics:
        """FVU, MSE, mean L0, mean cos(x, x̂), dead features (never fired in this run)."""
        assert self.sum_x is not None and self.feature_moments is not None
        mean = self.sum_x / self.n
        total_var = self.sum_sq_x - self.n * float(mean @ mean)
        fired = self.feature_moments[0].cpu().numpy()
        return SAEMetrics(n_tokens=self.n, d_sae=self.d_sae, fvu=self.sum_sq_resid / total_var,
                          mse=self.sum_sq_resid / (self.n * self.d_model), mean_l0=self.sum_l0 / self.n,
                          mean_cos_x_xhat=self.sum_cos / self.n, dead_features=int((fired == 0).sum()),
                          dead_fraction=float((fired == 0).mean()))


@dataclass(frozen=True)
class SAEMetrics:
    """How well an SAE reconstructs a set of activations.

    Attributes:
        n_tokens: rows.
        d_sae: latents.
        fvu: Σ‖x − x̂‖² / Σ‖x − mean‖² (fraction of variance unexplained).
        mse: per element, squared activation units.
        mean_l0: active latents per token.
        mean_cos_x_xhat: mean cosine of x and its reconstruction.
        dead_features, dead_fraction: latents that never fired on these rows.
    """

    n_tokens: int
    d_sae: int
    fvu: float
    mse: float
    mean_l0: float
    mean_cos_x_xhat: float
    dead_features: int
    dead_fraction: float


@torch.no_grad()
def reconstruct(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAE features and reconstruction (SAELens ``encode`` / ``decode``).

    Args:
        x: float32[m, d_model].
    Returns:
        (feats: float32[m, d_sae], x_hat: float32[m, d_model]).
    """
    feats = sae.encode(x)
    return feats, sae.decode(feats)


def gather_rows(source, part: str, n_tokens: int, batch_size: int, device: str,
                desc: str = "SAE training activations") -> tuple[torch.Tensor, int]:
    """All ``n_tokens`` rows of ``part`` of an :class:`~darkmatter.sources.base.ActivationSource`
    in memory, on the CPU (the SAE-training set: small enough to hold).

    Returns:
        (float32[n_tokens, d_model] rows, number of token windows pulled).
    Raises:
        DarkMatterError: as the source's ``rows``.
    """
    log = RowLog()
    acts = torch.cat([b.x.cpu() for b in source.rows(part, n_tokens, batch_size, device, log, desc=desc)])
    return acts, len(log.windows)


@dataclass
class CollectState:
    """Everything :func:`collect_rows` has accumulated on this rank: what a checkpoint saves.

    Attributes:
        stats: running SAE statistics over the analysed rows; every: over the excluded ones too.
        n_massive, n_bos: rows excluded so far.
        row: rows written to this rank's arrays.
        batch: the stream's number of the last batch taken (-1: none), done: rows analysed by
            every rank once its round was in.
        segments: (batch, first row, rows) of each batch this rank wrote, in order.
    """

    stats: SAERunningStats
    every: SAERunningStats
    n_massive: int = 0
    n_bos: int = 0
    row: int = 0
    batch: int = -1
    done: int = 0
    segments: list[tuple[int, int, int]] = field(default_factory=list)

    @classmethod
    def fresh(cls, d_sae: int, d_model: int) -> CollectState:
        return cls(SAERunningStats(d_sae=d_sae, d_model=d_model), SAERunningStats(d_sae=d_sae, d_model=d_model))

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as arrays (for ``np.savez``)."""
        return {**{f"stats_{k}": v for k, v in self.stats.arrays().items()},
                **{f"every_{k}": v for k, v in self.every.arrays().items()},
                "counts": np.array([self.n_massive, self.n_bos, self.row, self.batch, self.done], dtype=np.int64),
                "segments": np.array(self.segments, dtype=np.int64).reshape(-1, 3)}

    @classmethod
    def from_arrays(cls, d_sae: int, d_model: int, a: dict[str, np.ndarray], device: str = "cpu") -> CollectState:
        """The inverse of :meth:`arrays`."""
        n_massive, n_bos, row, batch, done = (int(v) for v in a["counts"])
        part = {p: SAERunningStats.from_arrays(d_sae, d_model, {k: a[f"{p}_{k}"] for k in ("scalars", "sum_x",
                                                                                              "moments")}, device)
                for p in ("stats", "every")}
        return cls(part["stats"], part["every"], n_massive, n_bos, row, batch, done,
                   [tuple(int(x) for x in s) for s in a["segments"]])  # type: ignore[misc]


@dataclass(frozen=True)
class Collected:
    """What :func:`collect_rows` measured.

    Attributes:
        stats: running SAE statistics (see :meth:`SAERunningStats.finish`).
        n_massive: tokens excluded as massive activations.
        n_bos: BOS positions skipped.
        with_excluded: the same statistics over the analysed and the excluded rows together
            (None where nothing was excluded).
    """

    stats: SAERunningStats
    n_massive: int
    n_bos: int
    with_excluded: SAERunningStats | None = None


def collect_rows(rows: Iterator[RowBatch], sae, chunk_size: int, activations_out: np.ndarray,
                 residuals_out: np.ndarray, index_out: np.ndarray, clock: Throughput | None = None,
                 state: CollectState | None = None,
                 checkpoint: Callable[[CollectState], None] | None = None) -> CollectState:
    """Fill ``activations_out`` / ``residuals_out`` (float32[capacity, d_model] memmaps) and
    ``index_out`` (int32[capacity, 2]) from ``rows``, SAE-encoding in chunks of ``chunk_size``.

    Args:
        rows: RowBatch-es (as any :class:`~darkmatter.sources.base.ActivationSource` yields).
        clock: if given, SAE and write times are added to it.
        state: what an interrupted run had accumulated (rows continue at ``state.row``); None: fresh.
        checkpoint: called with the state after every batch (it decides when to save).
    Returns:
        The final state (this rank's sums: see :meth:`SAERunningStats.reduced`).
    """
    state = state or CollectState.fresh(int(sae.cfg.d_sae), activations_out.shape[1])
    for batch in rows:
        state.n_massive += batch.n_massive
        state.n_bos += batch.n_bos
        first = state.row
        if batch.excluded is not None:
            for start in range(0, len(batch.excluded), chunk_size):
                x = batch.excluded[start:start + chunk_size]
                feats, x_hat = reconstruct(sae, x)
                state.every.update(x, x_hat, feats)
        for start in range(0, len(batch.x), chunk_size):
            x = batch.x[start:start + chunk_size]
            t0 = now(x.device) if clock is not None else 0.0
            feats, x_hat = reconstruct(sae, x)
            state.stats.update(x, x_hat, feats)
            state.every.update(x, x_hat, feats)
            resid = x - x_hat
            t1 = now(x.device) if clock is not None else 0.0
            m, row = len(x), state.row
            activations_out[row:row + m] = x.cpu().numpy()
            residuals_out[row:row + m] = resid.cpu().numpy()
            index_out[row:row + m] = batch.index[start:start + m]
            if clock is not None:
                clock.sae += t1 - t0
                clock.write += time.perf_counter() - t1
            state.row += m
            del feats
        state.segments.append((batch.batch, first, state.row - first))
        state.batch, state.done = batch.batch, batch.done
        if checkpoint is not None:
            checkpoint(state)
    return state


def collected(state: CollectState, comm: Comm = SINGLE) -> Collected:
    """The run's statistics from every rank's final :class:`CollectState`."""
    stats, every = state.stats.reduced(comm), state.every.reduced(comm)
    n_massive, n_bos = (int(v) for v in comm.sum_np(np.array([state.n_massive, state.n_bos], dtype=np.float64)))
    return Collected(stats=stats, n_massive=n_massive, n_bos=n_bos, with_excluded=every if every.n > stats.n else None)

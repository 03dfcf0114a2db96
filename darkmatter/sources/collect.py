"""Activations at the hook, SAE reconstructions and the residual, streamed in chunks.

The dense SAE feature matrix ``[n_tokens, d_sae]`` never exists whole: each
chunk of ``sae_chunk_size`` rows is encoded, decoded and reduced to running
sums (FVU, L0, per-feature firing counts and power sums) before the next.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from darkmatter.errors import DarkMatterError
from darkmatter.sources.base import RowBatch, RowLog
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


def window_rows(batches: Iterator[tuple[torch.Tensor, np.ndarray | None]], n_tokens: int,
                bos_id: int | None = None, max_norm_ratio: float | None = None, log: RowLog | None = None,
                desc: str = "rows", what: str = "the source", hook_name: str = "the hook",
                hint: str = "lower --n-tokens / --sae-train-tokens") -> Iterator[RowBatch]:
    """Turn batches of windows of activations into the analysed rows, until ``n_tokens`` rows
    have been yielded.

    BOS positions (where ``tokens == bos_id``) are always dropped. With ``max_norm_ratio``, so
    are tokens whose activation norm exceeds that multiple of the batch's median norm: the
    "massive activations" of attention sinks (Sun et al. 2024), thousands of times the typical
    norm, which would otherwise dominate every second- and fourth-moment statistic downstream.

    Args:
        batches: (acts: float32[b, ctx, d_model] on some device, tokens: int[b, ctx] or None);
            only what is needed is consumed.
        n_tokens: rows to yield in total.
        bos_id: BOS token id (None: nothing is dropped as BOS).
        log: if given, the token windows of every batch pulled are appended to ``log.windows``
            (row indices refer to them).
        what: names the source in the "ran out" message, ``hint`` says what to do; hook_name: in the
            NaN message.
    Yields:
        RowBatch: rows float32[m, d_model], index int32[m, 2] of (window, position), massive
        tokens dropped and BOS positions skipped in this batch (up to the last row taken).
    Raises:
        DarkMatterError: the activations contain NaN or inf, or ``batches`` runs out.
    """
    done = 0
    start = 0
    with tqdm(total=n_tokens, desc=desc, unit="tok", mininterval=2.0) as bar:
        while done < n_tokens:
            pulled = next(batches, None)
            if pulled is None:
                raise DarkMatterError(f"{what} ran out after {done:,} of {n_tokens:,} tokens ({desc}); {hint}")
            acts, tokens = pulled
            if log is not None and tokens is not None:
                log.windows.extend(np.asarray(tokens, dtype=np.int32))
            is_bos = (np.zeros(acts.shape[:2], dtype=bool) if tokens is None or bos_id is None
                      else np.asarray(tokens) == bos_id)
            win, pos = np.nonzero(~is_bos)
            rows = acts[torch.as_tensor(win, device=acts.device), torch.as_tensor(pos, device=acts.device)]
            if not torch.isfinite(rows).all():
                raise DarkMatterError(
                    f"activations at {hook_name} contain NaN/inf (windows {start}..{start + len(acts)}); "
                    "the model weights or inputs are broken: check --model / --activations, or use --device cpu")
            massive = np.zeros(len(win), dtype=bool)
            if max_norm_ratio is not None and len(rows):
                norms = rows.norm(dim=1)
                massive = (norms > max_norm_ratio * norms.median()).cpu().numpy()
            take = min(int((~massive).sum()), n_tokens - done)
            if take < (~massive).sum():  # last batch: count only what lies before the cut
                cut = np.flatnonzero(~massive)[take - 1] if take else -1
                massive[cut + 1:] = False
            n_massive = int(massive.sum())
            keep = ~massive
            dropped = rows[torch.as_tensor(massive, device=rows.device)]
            rows, win, pos = rows[torch.as_tensor(keep, device=rows.device)], win[keep], pos[keep]
            done += take
            bw, bp = np.nonzero(is_bos)
            if done == n_tokens and take:  # BOS positions up to the last analysed token only
                lw, lp = win[take - 1], pos[take - 1]
                sel = (bw < lw) | ((bw == lw) & (bp <= lp))
                bw, bp = bw[sel], bp[sel]
            n_bos = len(bw)
            bos_rows = acts[torch.as_tensor(bw, device=acts.device), torch.as_tensor(bp, device=acts.device)]
            bar.update(take)
            yield RowBatch(x=rows[:take], index=np.stack([win[:take] + start, pos[:take]], axis=1).astype(np.int32),
                           n_massive=n_massive, n_bos=n_bos, excluded=torch.cat([bos_rows, dropped]))
            start += len(acts)


def hook_rows(model: LoadedModel, windows: Iterator[np.ndarray], hook_name: str, layer: int,
              batch_size: int, device: str, n_tokens: int, max_norm_ratio: float | None = None,
              log: RowLog | None = None, desc: str = "model forward",
              clock: Throughput | None = None) -> Iterator[RowBatch]:
    """Run token windows through the model in batches of ``batch_size`` and yield the analysed
    rows at ``hook_name`` (see :func:`window_rows` for what is dropped).

    Args:
        windows: int32[ctx] token windows (an iterator; only what is needed is consumed).
        layer: block of the hook; the forward stops right after it.
        clock: if given, the forward passes' wall time is added to ``clock.model``.
    Raises:
        DarkMatterError: NaN/inf activations, or the text runs out.
    """
    def forward() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        while True:
            pulled = list(itertools.islice(windows, batch_size))
            if not pulled:
                return
            batch = np.stack(pulled)
            t0 = now(device) if clock is not None else 0.0
            acts = model.activations(torch.as_tensor(batch, dtype=torch.long, device=device), hook_name, layer)
            if clock is not None:
                clock.model += now(device) - t0
            yield acts, batch

    return window_rows(forward(), n_tokens, model.bos_id, max_norm_ratio, log, desc, what="the text",
                       hook_name=hook_name,
                       hint="lower --n-tokens / --sae-train-tokens or give more text with --text-files")


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
                 residuals_out: np.ndarray, index_out: np.ndarray, clock: Throughput | None = None) -> Collected:
    """Fill ``activations_out`` / ``residuals_out`` (float32[n_tokens, d_model] memmaps) and
    ``index_out`` (int32[n_tokens, 2]) from ``rows``, SAE-encoding in chunks of ``chunk_size``.

    Args:
        rows: RowBatch-es (as any :class:`~darkmatter.sources.base.ActivationSource` yields)
            until ``len(activations_out)`` rows have come.
        clock: if given, SAE and write times are added to it.
    Raises:
        DarkMatterError: fewer rows arrived than the outputs hold.
    """
    stats = SAERunningStats(d_sae=int(sae.cfg.d_sae), d_model=activations_out.shape[1])
    every = SAERunningStats(d_sae=int(sae.cfg.d_sae), d_model=activations_out.shape[1])
    row = n_massive = n_bos = 0
    for batch in rows:
        n_massive += batch.n_massive
        n_bos += batch.n_bos
        if batch.excluded is not None:
            for start in range(0, len(batch.excluded), chunk_size):
                x = batch.excluded[start:start + chunk_size]
                feats, x_hat = reconstruct(sae, x)
                every.update(x, x_hat, feats)
        for start in range(0, len(batch.x), chunk_size):
            x = batch.x[start:start + chunk_size]
            t0 = now(x.device) if clock is not None else 0.0
            feats, x_hat = reconstruct(sae, x)
            stats.update(x, x_hat, feats)
            every.update(x, x_hat, feats)
            resid = x - x_hat
            t1 = now(x.device) if clock is not None else 0.0
            m = len(x)
            activations_out[row:row + m] = x.cpu().numpy()
            residuals_out[row:row + m] = resid.cpu().numpy()
            index_out[row:row + m] = batch.index[start:start + m]
            if clock is not None:
                clock.sae += t1 - t0
                clock.write += time.perf_counter() - t1
            row += m
            del feats
    if row != len(activations_out):
        raise DarkMatterError(f"only {row:,} of {len(activations_out):,} rows arrived")
    return Collected(stats=stats, n_massive=n_massive, n_bos=n_bos,
                     with_excluded=every if every.n > stats.n else None)

"""The one interface every source of activations implements.

A source is where the activations ``x`` at a hook come from: a model run over text
(:class:`~darkmatter.sources.model_source.ModelSource`), planted activations with a known
answer (:class:`~darkmatter.sources.planted.PlantedSource`), or activations a user cached on
disk (:class:`~darkmatter.sources.cached.CachedSource`). The pipeline's steps talk to a source
only through :class:`ActivationSource`, so none of them branches on what kind it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

#: Which rows a source yields: those an SAE may be trained on, or those that are analysed.
#: When the pipeline trains the SAE the two are disjoint (e.g. even and odd documents).
Part = Literal["train", "analysis"]


@dataclass(frozen=True)
class RowBatch:
    """One batch of activation rows at the hook.

    Attributes:
        x: float32 torch tensor [m, d_model], on the requested device.
        index: int32[m, 2]: (window, position) of each row in the windows the source pulled
            (sources without windows use (row, 0)).
        n_massive: tokens dropped from this batch as massive activations (norm above
            ``max_norm_ratio`` × the batch median; Sun et al. 2024).
        n_bos: BOS positions skipped in this batch, up to the last row taken.
        excluded: float32 torch tensor [n_bos + n_massive, d_model] of the skipped rows (None where
            the source skips nothing), so the SAE's FVU can be reported with them too.
        batch: the batch's number in the source's stream (counting every rank's batches).
        done: rows analysed by every rank together once this batch's round is in (a checkpoint
            after this batch resumes from there).
    """

    x: Any
    index: np.ndarray
    n_massive: int = 0
    n_bos: int = 0
    excluded: Any = None
    batch: int = 0
    done: int = 0


@dataclass(frozen=True)
class Resume:
    """Where an interrupted collection stopped: its first ``batches`` batches (a whole number of
    rounds) gave ``rows`` analysed rows; they are pulled again but not recomputed."""

    batches: int
    rows: int


@dataclass(frozen=True)
class HookInfo:
    """The hook a source reads and what stands behind it (for setup.json).

    Attributes:
        hook_name: hook point (``blocks.L.hook_resid_pre`` for TransformerLens models).
        d_model: width of the activations there.
        layer: block index, or None where the source has no layers.
        n_layers, d_vocab, bos_id: of the model, or None without one.
        text: what the rows are computed from, in words.
        split: how SAE-training rows are kept apart from analysed rows, in words.
    """

    hook_name: str
    d_model: int
    layer: int | None = None
    n_layers: int | None = None
    d_vocab: int | None = None
    bos_id: int | None = None
    text: str = ""
    split: str = ""


@dataclass(frozen=True)
class GroundTruth:
    """A known answer: the true feature directions and which of them the SAE left in the residual.

    Attributes:
        directions: float64[n_features, d_model] unit rows.
        dark: int64[n_dark] ids of the features that should be found in the residual and kept.
        rule: how ``dark`` was chosen, in words.
        positional: int64[n_positional] ids of features that are in the residual too but fire only at
            the first positions of a document: artifacts the candidate rule should exclude, never
            among ``dark`` (planted data with ``positional_features``; empty elsewhere).
    """

    directions: np.ndarray
    dark: np.ndarray
    rule: str
    positional: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class RowContext:
    """What a reader sees for one analysed row.

    Attributes:
        token: the row's token (decoded), or a short label where there is no text.
        context: the surrounding text with the token marked ``[[like this]]``, or a label.
        window, position: where the row sits in the source's windows (None without windows).
        row: row number in the source's own stream (None where windows say it).
    """

    token: str
    context: str
    window: int | None = None
    position: int | None = None
    row: int | None = None


@dataclass
class RowLog:
    """Filled while :meth:`ActivationSource.rows` runs.

    Attributes:
        windows: int32[ctx] token windows pulled, in order (empty for sources without tokens);
            the ``window`` column of every yielded index refers to this list.
    """

    windows: list[np.ndarray] = field(default_factory=list)


@runtime_checkable
class ActivationSource(Protocol):
    """Activations at a hook, with what is needed to read them back.

    The pipeline calls, in order of steps:
    01 ``hook()``, ``builtin_sae()``, ``rows("train", …)`` when it trains an SAE, ``ground_truth()``;
    02 ``rows("analysis", …)``; 05 ``ground_truth()``; 06 ``unembed()``, ``decode()``,
    ``row_contexts()``, ``downstream()``. Loading anything heavy (a model) happens lazily, on first need.
    """

    kind: str

    @property
    def description(self) -> str:
        """Where the activations come from, in words (for setup.json and the report)."""
        ...

    def hook(self) -> HookInfo:
        """The hook and its width. Raises DarkMatterError for an unknown hook."""
        ...

    def details(self) -> dict[str, Any]:
        """What else defines the source (planted spec, cache path), for setup.json."""
        ...

    def rows(self, part: Part, n_tokens: int, batch_size: int, device: str, log: RowLog | None = None,
             desc: str = "rows", clock: Any = None, comm: Any = None, resume: Resume | None = None
             ) -> Iterator[RowBatch]:
        """Yield exactly ``n_tokens`` analysed rows of ``part``, in a fixed order (``clock``: an
        optional :class:`~darkmatter.sources.collect.Throughput` that model time is added to).
        With ``comm`` (a sharded run's :class:`~darkmatter.distributed.Comm`) this rank yields only
        its own batches (see :func:`darkmatter.sources.collect.window_rows`); ``resume`` skips
        what an interrupted run already collected.

        Raises DarkMatterError when the source runs out or yields NaN/inf."""
        ...

    def builtin_sae(self, device: str) -> Any | None:
        """An SAE that comes with the source (the planted oracle), or None."""
        ...

    def ground_truth(self, W_dec: np.ndarray) -> GroundTruth | None:
        """The known answer given the SAE's decoder ``W_dec: float[d_sae, d_model]``, or None."""
        ...

    def unembed(self) -> np.ndarray | None:
        """The unembedding ``W_U: float32[d_model, d_vocab]`` for the logit lens, or None."""
        ...

    def decode(self, token_id: int) -> str:
        """One token id as text."""
        ...

    def row_contexts(self, rows: np.ndarray, index: np.ndarray, tokens: np.ndarray | None, width: int,
                     dark: set[int]) -> Callable[[int], RowContext]:
        """A reader for analysed rows.

        Args:
            rows: int64[m] analysed row numbers that will be asked for (lets a source prefetch).
            index: int32[n_tokens, 2] token_index.npy.
            tokens: int32[n_windows, ctx] tokens.npy, or None.
            width: tokens of context either side of the marked one.
            dark: ids of dark features (sources with a ground truth mark them).
        """
        ...

    def note(self) -> str | None:
        """What the source cannot show (e.g. no tokens: contexts are skipped), or None."""
        ...

    def units(self, index: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, str]:
        """The resampling unit of every analysed row: its document where the source knows documents.

        Restarts, bootstrap standard errors and the design effect draw whole units
        (:mod:`darkmatter.analysis.resampling`).

        Args:
            index: int[n_tokens, 2] token_index.npy; tokens: int[n_windows, ctx] tokens.npy, or None.
        Returns:
            (int64[n_tokens] unit id per row, the unit's name: ``"document"``, ``"window"`` or ``"row"``).
        """
        ...

    def downstream(self, truth: GroundTruth | None, n_sequences: int, skip: int, device: str) -> Any | None:
        """What reads the hook's activation afterwards, on held-out data, for the causal tests
        (a :class:`darkmatter.analysis.causal.Downstream`), or None where the source has nothing.

        Args:
            truth: the known answer (planted sources read some dark features out), or None.
            n_sequences: held-out sequences (windows; blocks of rows without windows).
            skip: sequences the analysis already used (they are not reused).
        """
        ...

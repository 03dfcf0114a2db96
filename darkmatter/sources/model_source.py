"""Activations of a language model at a hook, over a document stream.

Documents (:mod:`darkmatter.sources.text`) are cut into token windows with BOS prepended,
run through the model to the hook's block (TransformerLens ``run_with_cache`` with
``stop_at_layer``), and every non-BOS, non-massive token becomes a row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkmatter.analysis import interpret
from darkmatter.distributed import SINGLE, Comm
from darkmatter.errors import DarkMatterError
from darkmatter.sources.base import GroundTruth, HookInfo, Part, Resume, RowBatch, RowContext, RowLog
from darkmatter.sources.collect import Throughput, hook_rows
from darkmatter.sources.models import LoadedModel, load_model
from darkmatter.sources.splice import LMDownstream
from darkmatter.sources.text import documents, held_out_windows, token_windows


def layer_of(hook_name: str) -> int:
    """Block index of a per-block hook (``blocks.L.*``). Raises DarkMatterError otherwise."""
    m = re.match(r"blocks\.(\d+)\.", hook_name)
    if not m:
        raise DarkMatterError(f"hook {hook_name!r} is not a per-block hook (blocks.L.hook_...); "
                              "pass `hook_name` like blocks.6.hook_resid_pre")
    return int(m.group(1))


def check_model(kind: str, name: str) -> None:
    """Refuse, before loading, a ``local_hooked`` ``--model`` that is not a model folder.

    Raises:
        DarkMatterError: no folder, or no readable ``hooked_config.json`` object in it.
    """
    if kind != "local_hooked":
        return
    folder = Path(name)
    if not (folder / "hooked_config.json").is_file():
        raise DarkMatterError(f"`model` {name}: no local model folder there (hooked_config.json + weights.pt + "
                              "tokenizer files): check `model`")
    try:
        ok = isinstance(json.loads((folder / "hooked_config.json").read_text()), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise DarkMatterError(f"`model` {name}: hooked_config.json is not a JSON object of HookedTransformerConfig "
                              "fields: check `model`")


@dataclass(frozen=True)
class TextSpec:
    """Where documents come from (see :func:`darkmatter.sources.text.documents`).

    Attributes:
        text_files: glob of local files, or None.
        dataset: Hugging Face dataset name (streamed), or None.
        column: text column of ``dataset``.
        context_size: tokens per window, BOS included.
        prepend_bos: BOS at position 0 of every window.
        split: even documents train the SAE, odd ones are analysed (when the SAE is trained here).
        corpus: the named corpus read when neither ``text_files`` nor ``dataset`` is given
            (:data:`darkmatter.sources.corpus.CORPORA`).
    """

    text_files: str | None = None
    dataset: str | None = None
    column: str = "text"
    context_size: int = 128
    prepend_bos: bool = True
    split: bool = False
    corpus: str = "mixed"

    def describe(self) -> str:
        named = self.text_files or self.dataset
        if named:
            return named
        from darkmatter.sources.corpus import describe

        return describe(self.corpus)

    def record(self) -> dict[str, Any]:
        """What the text is, for the run's record: the glob or dataset, or the corpus's
        :func:`~darkmatter.sources.corpus.summary` (sources, versions, licences, documents per
        source and kind). Raises DarkMatterError when the corpus is not installed."""
        if self.text_files:
            return {"text_files": self.text_files}
        if self.dataset:
            return {"dataset": self.dataset, "column": self.column}
        from darkmatter.sources.corpus import summary

        return summary(self.corpus)


class ModelSource:
    """A model read at ``hook_name`` over the documents of ``text`` (loaded on first need).

    Args:
        model_kind, model_name, seed: see :func:`darkmatter.sources.models.load_model`.
        hook_name: a TransformerLens hook inside a block (``blocks.L.*``).
        text: the documents and windowing.
        max_norm_ratio: drop tokens whose norm exceeds this multiple of the batch median (None: keep).
        device: where the model runs.
    Raises:
        DarkMatterError: the hook is not per-block.
    """

    kind = "model"

    def __init__(self, model_kind: str, model_name: str, hook_name: str, text: TextSpec,
                 max_norm_ratio: float | None, device: str, seed: int = 0):
        self.layer = layer_of(hook_name)
        self.hook_name, self.text, self.max_norm_ratio = hook_name, text, max_norm_ratio
        self._load = (model_kind, model_name, device, seed)
        self._decoded: dict[int, str] = {}

    @cached_property
    def model(self) -> LoadedModel:
        model = load_model(*self._load)
        model.check_hook(self.hook_name)
        n_ctx = getattr(getattr(model.model, "cfg", None), "n_ctx", None)
        if isinstance(n_ctx, int) and self.text.context_size > n_ctx:
            raise DarkMatterError(f"`context_size` {self.text.context_size} is longer than the model's context "
                                  f"(n_ctx {n_ctx}): pass `context_size` {n_ctx} or less")
        return model

    @property
    def description(self) -> str:
        return self.model.description

    def hook(self) -> HookInfo:
        probe = torch.tensor([[self.model.bos_id] * 2], device=self._load[2])
        width = self.model.activations(probe, self.hook_name, self.layer).shape[-1]
        return HookInfo(hook_name=self.hook_name, d_model=int(width), layer=self.layer,
                        n_layers=self.model.n_layers, d_vocab=int(self.model.model.cfg.d_vocab),
                        bos_id=self.model.bos_id, text=self.text.describe(),
                        split=("even-numbered documents train the SAE, odd-numbered ones are analysed"
                               if self.text.split else "every document is analysed"))

    def details(self) -> dict[str, Any]:
        return {"model": self._load[1], "model_kind": self._load[0], "context_size": self.text.context_size,
                "text": self.text.record()}

    def windows(self, part: Part) -> Iterator[np.ndarray]:
        """int32[context_size] token windows of ``part`` of the documents."""
        t = self.text
        return token_windows(documents(t.text_files, t.dataset, t.column, part, t.split, t.corpus),
                             self.model.tokenizer, t.context_size, self.model.bos_id, t.prepend_bos)

    def rows(self, part: Part, n_tokens: int, batch_size: int, device: str, log: RowLog | None = None,
             desc: str = "model forward", clock: Throughput | None = None, comm: Comm | None = None,
             resume: Resume | None = None) -> Iterator[RowBatch]:
        return hook_rows(self.model, self.windows(part), self.hook_name, self.layer, batch_size, device,
                         n_tokens, self.max_norm_ratio, log, desc, clock, comm or SINGLE, resume)

    def builtin_sae(self, device: str) -> None:
        return None

    def ground_truth(self, W_dec: np.ndarray) -> GroundTruth | None:
        return None

    def unembed(self) -> np.ndarray | None:
        return self.model.unembed()

    def decode(self, token_id: int) -> str:
        t = int(token_id)
        if t not in self._decoded:
            self._decoded[t] = self.model.decode(t)
        return self._decoded[t]

    def row_contexts(self, rows: np.ndarray, index: np.ndarray, tokens: np.ndarray | None, width: int,
                     dark: set[int]) -> Callable[[int], RowContext]:
        if tokens is None:
            raise DarkMatterError("tokens.npy is missing: rerun scripts/02_collect_activations.py")
        bos = self.model.bos_id

        def read(row: int) -> RowContext:
            w, p = (int(v) for v in index[row])
            return RowContext(token=self.decode(int(tokens[w, p])), window=w, position=p,
                              context=interpret.context(tokens, w, p, width, self.decode, bos))

        return read

    def note(self) -> str | None:
        return None

    def units(self, index: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, str]:
        """Documents, found from the BOS separators in the token windows
        (:func:`~darkmatter.analysis.resampling.units_of`)."""
        from darkmatter.analysis.resampling import units_of

        return units_of(index, tokens)

    def downstream(self, truth: GroundTruth | None, n_sequences: int, skip: int, device: str) -> LMDownstream:
        """The model from the hook onward on ``n_sequences`` held-out windows of the documents that
        follow the ``skip`` windows step 02 read (its ``tokens.npy``), in the same document stream:
        each window starts at a document start, at most two per document
        (:func:`darkmatter.sources.text.held_out_windows`); ``Batch.unit`` is its document.

        Raises:
            DarkMatterError: the text runs out before ``n_sequences`` windows.
        """
        t = self.text
        held, doc = held_out_windows(documents(t.text_files, t.dataset, t.column, "analysis", t.split),
                                     self.model.tokenizer, t.context_size, self.model.bos_id, skip, n_sequences,
                                     t.prepend_bos)
        n_docs = len(np.unique(doc))
        return LMDownstream(self.model, self.hook_name, self.layer, held, device, self.max_norm_ratio, units=doc,
                            description=f"{n_sequences} windows from {n_docs} documents of {t.describe()} after the "
                                        f"{skip:,} windows step 02 read (each window starts at a document start, "
                                        "at most two per document)")

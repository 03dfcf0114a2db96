"""Activations someone already computed, read from disk: no model is loaded.

Two layouts are read (``--activations PATH``):

* an ``.npy`` file of float activations, ``[n_tokens, d_model]`` (rows in any order, no
  windows) or ``[n_windows, context, d_model]`` (windows of consecutive tokens), memory-mapped;
  with ``--activation-tokens`` an ``.npy`` of int token ids ``[n_windows, context]`` (the
  flattened ``[n_tokens]`` works for 2-D activations: each row is then a window of one);
* a folder written by SAELens's activation cache (``CacheActivationsRunner``: a Hugging Face
  dataset saved with ``save_to_disk``, one row per window, a column named after the hook
  holding ``[context, d_in]`` and, when cached, ``token_ids``), read with
  ``datasets.load_from_disk``.

With ``--activation-documents`` (an ``.npy`` of int document ids, one per window or one per
row) restarts and standard errors resample whole documents; without it, whole windows (rows of
2-D activations), and the report says so.

With token ids and a tokenizer (``--tokenizer``, a local folder or a cached hub name), step 06
shows text contexts; with token ids alone it shows the ids. BOS positions are dropped when the
tokenizer names a BOS token. There is no unembedding, so there is no logit lens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkmatter.analysis import interpret
from darkmatter.distributed import SINGLE, Comm
from darkmatter.errors import DarkMatterError
from darkmatter.sources.base import GroundTruth, HookInfo, Part, Resume, RowBatch, RowContext, RowLog
from darkmatter.sources.collect import Pending, window_rows

#: 2-D activations (no windows) are read, and split between SAE training and analysis, in blocks
#: of this many rows (the planted generator's block, so the same rows give the same SAE chunks).
ROW_BLOCK = 8192


class CachedSource:
    """Activations on disk as an :class:`~darkmatter.sources.base.ActivationSource`.

    Args:
        path: an ``.npy`` file or a SAELens activation-cache folder (see the module docstring).
        hook_name: the hook the activations were read at (also the cache folder's column).
        tokens_path: optional ``.npy`` of token ids matching the windows.
        tokenizer: optional tokenizer name or folder (``transformers.AutoTokenizer``), for text.
        max_norm_ratio: drop tokens whose norm exceeds this multiple of the batch median (None: keep).
        split: when an SAE is trained here, even windows (blocks of :data:`ROW_BLOCK` rows without
            windows) train it and odd ones are analysed; otherwise every row is analysed.
        documents_path: optional ``.npy`` of int document ids, ``[n_windows]`` or one per row.
    Raises:
        DarkMatterError: the path is missing or holds no usable activations.
    """

    kind = "cached"

    def __init__(self, path: str, hook_name: str, tokens_path: str | None = None, tokenizer: str | None = None,
                 max_norm_ratio: float | None = None, split: bool = False, documents_path: str | None = None):
        self.path, self.hook_name, self.tokens_path = Path(path), hook_name, tokens_path
        self.documents_path = documents_path
        self.tokenizer_name, self.max_norm_ratio, self.split = tokenizer, max_norm_ratio, split
        if not self.path.exists():
            raise DarkMatterError(f"`activations` {path}: no such file or folder")
        self.description = f"activations cached at {self.path} ({hook_name})"

    @cached_property
    def _data(self) -> tuple[Any, np.ndarray | None]:
        """(activations [n_windows, ctx, d_model] array-like, token ids [n_windows, ctx] or None)."""
        if self.path.is_dir():
            acts, tokens = _read_saelens_cache(self.path, self.hook_name)
        else:
            try:
                acts = np.load(self.path, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise DarkMatterError(f"`activations` {self.path} is not a readable .npy file ({exc})") from exc
            if not isinstance(acts, np.ndarray):
                raise DarkMatterError(f"`activations` {self.path} holds several arrays (.npz): save the activations "
                                      "alone with np.save")
            tokens = None
        if acts.ndim == 2:
            acts = acts.reshape(acts.shape[0], 1, acts.shape[1])
        if acts.ndim != 3 or not np.issubdtype(acts.dtype, np.floating):
            raise DarkMatterError(f"`activations` {self.path}: expected float [n_tokens, d_model] or "
                                  f"[n_windows, context, d_model], got {acts.dtype} {tuple(acts.shape)}")
        if self.tokens_path is not None:
            try:
                tokens = np.load(self.tokens_path).reshape(acts.shape[0], -1)
                if not np.issubdtype(tokens.dtype, np.integer):
                    raise ValueError(f"dtype {tokens.dtype} is not an integer type")
            except (ValueError, OSError, AttributeError) as exc:
                raise DarkMatterError(f"`activation_tokens` {self.tokens_path}: not an .npy of token ids matching "
                                      f"{acts.shape[0]:,} windows ({exc})") from exc
        if tokens is not None and tokens.shape != acts.shape[:2]:
            raise DarkMatterError(f"token ids have shape {tokens.shape} but the activations hold "
                                  f"{acts.shape[:2]} windows × positions: pass the matching `activation_tokens`")
        if tokens is not None and tokens.size and int(tokens.min()) < 0:
            raise DarkMatterError(f"the token ids ({self.tokens_path or self.path}) hold {int(tokens.min())}: token "
                                  "ids are 0 or more; pass the ids the activations were computed from")
        return acts, tokens

    @cached_property
    def documents(self) -> np.ndarray | None:
        """int64[n_windows, ctx] document id of every cached row (``--activation-documents``), or None.

        Raises:
            DarkMatterError: not an integer .npy with one id per window or per row.
        """
        if self.documents_path is None:
            return None
        acts = self._data[0]
        n, ctx = acts.shape[:2]
        try:
            ids = np.load(self.documents_path)
            if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{getattr(ids, 'dtype', type(ids))} is not an integer array")
        except (ValueError, OSError) as exc:
            raise DarkMatterError(f"`activation_documents` {self.documents_path}: not an .npy of int document "
                                  f"ids ({exc})") from exc
        if ids.size == n:
            return np.repeat(ids.reshape(n, 1).astype(np.int64), ctx, axis=1)
        if ids.size == n * ctx:
            return ids.reshape(n, ctx).astype(np.int64)
        raise DarkMatterError(f"`activation_documents` {self.documents_path} holds {ids.size:,} ids; the activations "
                              f"have {n:,} windows of {ctx} rows: pass one id per window or one per row")

    @cached_property
    def tokenizer(self) -> Any | None:
        if self.tokenizer_name is None:
            return None
        from transformers import AutoTokenizer

        from darkmatter.sources.hub import hub_guard

        with hub_guard(f"tokenizer {self.tokenizer_name}"):
            return AutoTokenizer.from_pretrained(self.tokenizer_name)

    def check_vocabulary(self) -> None:
        """Token ids beyond the tokenizer's vocabulary are refused before any step decodes them.

        Raises:
            DarkMatterError: the largest id and the vocabulary size.
        """
        tokens, tok = self._data[1], self.tokenizer
        if tokens is not None and tok is not None and tokens.size and int(tokens.max()) >= len(tok):
            raise DarkMatterError(f"the token ids hold {int(tokens.max())}, beyond the {len(tok):,} tokens of "
                                  f"`tokenizer` {self.tokenizer_name}: pass the tokenizer the ids come from")

    @property
    def bos_id(self) -> int | None:
        self.check_vocabulary()
        tok = self.tokenizer
        return None if tok is None or tok.bos_token_id is None else int(tok.bos_token_id)

    def hook(self) -> HookInfo:
        acts, tokens = self._data
        return HookInfo(hook_name=self.hook_name, d_model=int(acts.shape[2]), bos_id=self.bos_id,
                        text=f"cached activations: {acts.shape[0]:,} windows × {acts.shape[1]} positions"
                             + (", with token ids" if tokens is not None else ", no token ids"),
                        split=("even windows train the SAE, odd ones are analysed" if self.split
                               else "every cached row is analysed"))

    def details(self) -> dict[str, Any]:
        return {"path": str(self.path), "tokens": self.tokens_path, "tokenizer": self.tokenizer_name,
                "documents": self.documents_path}

    def units(self, index: np.ndarray, tokens: np.ndarray | None) -> tuple[np.ndarray, str]:
        """Documents from ``--activation-documents``; without them, windows (rows of 2-D activations,
        each its own window), or documents found from BOS separators in the token ids."""
        from darkmatter.analysis.resampling import units_of

        docs = self.documents
        if docs is None:
            units, name = units_of(index, tokens)
            return units, ("row" if name == "window" and self._data[0].shape[1] == 1 else name)
        order, _ = self._order("analysis")  # index[:, 0] counts windows (rows of 2-D activations) in reading order
        index = np.asarray(index, dtype=np.int64)
        return docs[order[index[:, 0]], index[:, 1]], "document"

    def _order(self, part: Part) -> tuple[np.ndarray, int]:
        """Windows of ``part`` in reading order, and how many to read per batch."""
        n, ctx = self._data[0].shape[:2]
        unit = ROW_BLOCK if ctx == 1 else 1
        blocks = np.arange(-(-n // unit))
        if self.split:
            blocks = blocks[0 if part == "train" else 1::2]
        order = (blocks[:, None] * unit + np.arange(unit)).ravel()
        return order[order < n], unit

    def rows(self, part: Part, n_tokens: int, batch_size: int, device: str, log: RowLog | None = None,
             desc: str = "cached rows", clock: Any = None, comm: Comm | None = None,
             resume: Resume | None = None) -> Iterator[RowBatch]:
        acts, tokens = self._data
        order, unit = self._order(part)
        per_batch = unit if unit > 1 else batch_size

        def load(ids: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(acts[ids], dtype=np.float32), device=device)

        def batches() -> Iterator[Pending]:
            for s in range(0, len(order), per_batch):
                ids = order[s:s + per_batch]
                yield len(ids), None if tokens is None else np.asarray(tokens[ids]), functools.partial(load, ids)

        hint = "lower `n_tokens` / `sae_train_tokens`" + (
            f" (while an SAE is trained here, the {part} part is every other "
            f"{'block of ' + str(ROW_BLOCK) + ' rows' if unit > 1 else 'window'}: about half the cache)"
            if self.split else "")
        return window_rows(batches(), n_tokens, self.bos_id, self.max_norm_ratio, log, desc,
                           what=f"`activations` {self.path}", hook_name=self.hook_name, hint=hint,
                           comm=comm or SINGLE, resume=resume)

    def builtin_sae(self, device: str) -> None:
        return None

    def ground_truth(self, W_dec: np.ndarray) -> GroundTruth | None:
        return None

    def unembed(self) -> None:
        return None

    def decode(self, token_id: int) -> str:
        tok = self.tokenizer
        return f"#{int(token_id)}" if tok is None else tok.decode([int(token_id)])

    def row_contexts(self, rows: np.ndarray, index: np.ndarray, tokens: np.ndarray | None, width: int,
                     dark: set[int]) -> Callable[[int], RowContext]:
        order, unit = self._order("analysis")  # index[:, 0] counts windows in reading order

        def read(row: int) -> RowContext:
            w, p = (int(v) for v in index[row])
            if tokens is None:
                where = (f"row {int(order[w])} of {self.path.name}" if unit > 1 else
                         f"window {int(order[w])}, position {p} of {self.path.name}")
                return RowContext(token=f"row {row}", context=f"{where} (no token ids cached)", window=w, position=p)
            bos = self.bos_id if self.bos_id is not None else -1
            return RowContext(token=self.decode(int(tokens[w, p])), window=w, position=p,
                              context=interpret.context(tokens, w, p, width, self.decode, bos))

        return read

    def note(self) -> str:
        acts, tokens = self._data
        missing = ["no unembedding, so no logit lens"]
        if tokens is None:
            missing.insert(0, "no token ids, so no text contexts (rows are named by window and position)")
        elif self.tokenizer is None:
            missing.insert(0, "no tokenizer, so tokens are shown as ids (#1234); pass `tokenizer`")
        return "cached activations: " + "; ".join(missing + ["no model after the hook, so no causal tests"])

    def downstream(self, truth: GroundTruth | None, n_sequences: int, skip: int, device: str) -> None:
        return None


def _read_saelens_cache(folder: Path, hook_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Activations and token ids from a SAELens ``CacheActivationsRunner`` folder.

    Raises:
        DarkMatterError: not a saved dataset, or no column for the hook.
    """
    import datasets

    try:
        ds = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise DarkMatterError(f"`activations` {folder} is neither an .npy file nor a saved dataset "
                              f"(SAELens activation cache): {exc}") from exc
    except OSError as exc:  # a truncated or damaged arrow shard
        raise DarkMatterError(f"`activations` {folder}: the activation cache is damaged ({str(exc)[:120]}): "
                              "cache the activations again") from None
    if hook_name not in ds.column_names:
        raise DarkMatterError(f"the activation cache at {folder} has columns {ds.column_names}, none named "
                              f"{hook_name!r}: pass `hook_name` with the cached hook")
    try:
        ds = ds.with_format("numpy")
        acts = np.asarray(ds[hook_name], dtype=np.float32)
        tokens = np.asarray(ds["token_ids"]) if "token_ids" in ds.column_names else None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DarkMatterError(f"`activations` {folder}: the activation cache is damaged ({str(exc)[:120]}): "
                              "cache the activations again") from None
    return acts, tokens

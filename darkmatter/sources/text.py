"""Text sources and token windows.

Three sources of documents, picked by the config:

* ``--dataset NAME``: a Hugging Face dataset, streamed with ``datasets``;
* ``--text-files GLOB``: local files, one document each;
* neither: a named corpus (:mod:`darkmatter.sources.corpus`): ``mixed`` (the default: Python
  documentation, fortunes, the Jargon File, The Devil's Dictionary and FOLDOC, from Debian
  packages fetched at install time), ``mixed-large`` (plus GCIDE) or ``python-docs``: real
  English prose that ships with every Python install, the documentation topics in
  ``pydoc_data.topics`` followed by standard-library docstrings (read with :mod:`ast`, so
  nothing is imported or executed).

Documents are tokenised, joined with a BOS separator and cut into windows of
``context_size`` tokens with BOS prepended, as SAELens pretokenises
(``begin_batch_token="bos"``, ``sequence_separator_token="bos"``). A long document is
tokenised in pieces of at most :data:`MAX_CHARS` characters, cut before whitespace, so a
50 MB single-line file never reaches the tokenizer whole (its memory grows with the input).

Local files are checked before any model loads (:func:`text_paths`): the glob must match
files, not folders, and each must start as UTF-8 text (no NUL byte, valid UTF-8 in its first
:data:`SNIFF_BYTES`); a binary file is refused with its name rather than tokenised as noise.
"""

from __future__ import annotations

import ast
import codecs
import glob
import itertools
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from darkmatter.errors import DarkMatterError

#: Standard-library folders whose docstrings are code listings or test data rather than prose.
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__",
              "pydoc_data", "ensurepip", "tkinter"}


def python_docs() -> Iterator[str]:
    """The bundled corpus: every ``pydoc_data.topics`` entry, then each stdlib module's docstrings.

    Yields one document per pydoc topic and one per standard-library module
    (its module, class and function docstrings joined by blank lines), in a
    fixed order, so the corpus is identical on every machine with the same Python.
    """
    for _, text in python_doc_items():
        yield text


def python_doc_items() -> Iterator[tuple[str, str]]:
    """:func:`python_docs` with a stable key per document: ``("topic:<name>", text)`` for a pydoc
    topic, ``("module:<path under the stdlib>", text)`` for a module's docstrings (the keys
    :mod:`darkmatter.sources.corpus` hashes to interleave sources)."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield f"topic:{key}", topics[key]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if _SKIP_DIRS & set(rel.parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = [ast.get_docstring(node) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        text = "\n\n".join(d for d in docs if d and len(d.split()) >= 5)
        if text:
            yield f"module:{rel.as_posix()}", text


#: Characters handed to the tokenizer at once (a longer document is cut before whitespace).
MAX_CHARS = 1 << 16
#: Bytes of each local text file checked to be UTF-8 text before anything runs.
SNIFF_BYTES = 1 << 16


def text_paths(pattern: str) -> list[Path]:
    """The files ``pattern`` matches (sorted), each checked to be UTF-8 text.

    Raises:
        DarkMatterError: nothing matches, a match is a folder, or a file is unreadable or not
            UTF-8 text (a NUL byte or invalid UTF-8 in its first :data:`SNIFF_BYTES`); the message
            names the file.
    """
    paths = sorted(glob.glob(pattern, recursive=True))
    if not paths:
        raise DarkMatterError(f"`text_files` {pattern!r} matches no file: check the pattern (quote it in the shell)")
    for path in paths:
        if Path(path).is_dir():
            raise DarkMatterError(f"`text_files` {pattern!r} matches {path}, a folder, not a file: narrow the "
                                  "pattern to the text files (e.g. *.txt)")
        if not Path(path).is_file():  # a FIFO, socket or device: reading it could block forever
            raise DarkMatterError(f"`text_files` {pattern!r} matches {path}, not a regular file (a pipe or "
                                  "device?): narrow the pattern to the text files (e.g. *.txt)")
        try:
            with open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
            binary = b"\0" in head
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            binary = True
        except OSError as exc:
            raise DarkMatterError(f"`text_files`: cannot read {path} ({exc.strerror}): fix its permissions "
                                  "or narrow the pattern") from None
        if binary:
            raise DarkMatterError(f"`text_files`: {path} is not UTF-8 text (a binary file?): remove it or narrow "
                                  "the pattern")
    return [Path(p) for p in paths]


def local_files(pattern: str) -> Iterator[str]:
    """One document per file matching ``pattern`` (sorted; checked by :func:`text_paths`).

    Raises:
        DarkMatterError: see :func:`text_paths`.
    """
    for path in text_paths(pattern):
        yield path.read_text(encoding="utf-8", errors="replace")


def pieces(doc: str, limit: int = MAX_CHARS) -> Iterator[str]:
    """``doc`` in consecutive pieces of at most ``limit`` characters, each cut just before a
    whitespace character (space, newline, tab) in the second half of the piece where there is one,
    so words stay whole and a byte-level BPE tokenises the pieces as it would the whole."""
    start = 0
    while len(doc) - start > limit:
        space = max(doc.rfind(c, start + limit // 2, start + limit) for c in " \n\t\r")
        cut = space if space > start else start + limit
        yield doc[start:cut]
        start = cut
    yield doc[start:]


def hub_dataset(name: str, column: str) -> Iterator[str]:
    """Stream ``column`` of the ``train`` split of dataset ``name`` (``datasets.load_dataset``).

    Raises DarkMatterError with one line when the hub cannot be reached.
    """
    import datasets

    from darkmatter.sources.hub import hub_guard

    with hub_guard(f"dataset {name}"):
        ds = datasets.load_dataset(name, split="train", streaming=True)
        it = iter(ds)
        first = next(it)
    if column not in first:
        raise DarkMatterError(f"dataset {name} has no column {column!r}; pass `dataset_column`")
    yield first[column]
    for row in it:
        yield row[column]


def documents(text_files: str | None = None, dataset: str | None = None, column: str = "text",
              part: str = "analysis", split: bool = False, corpus: str = "mixed") -> Iterator[str]:
    """The document stream: ``text_files`` (a glob), else the hub ``dataset``, else the named
    ``corpus`` (see the module docstring).

    Args:
        part: ``"train"`` or ``"analysis"``.
        corpus: a name in :data:`darkmatter.sources.corpus.CORPORA`.
        split: keep SAE training and analysis on disjoint text: even-numbered documents are
            the ``"train"`` part, odd-numbered ones the ``"analysis"`` part. Without it every
            document is analysed (a pretrained or local SAE needs no training text).
    Raises:
        ValueError: unknown part.
        DarkMatterError: the glob matches nothing, the dataset cannot be loaded, or the corpus is
            not installed (the message gives the fix).
    """
    if part not in ("train", "analysis"):
        raise ValueError(f"part must be 'train' or 'analysis', not {part!r}")
    if text_files:
        docs = local_files(text_files)
    elif dataset:
        docs = hub_dataset(dataset, column)
    else:
        from darkmatter.sources.corpus import corpus_texts

        docs = corpus_texts(corpus)
    if not split:
        return docs
    return itertools.islice(docs, 0 if part == "train" else 1, None, 2)


def token_windows(docs: Iterator[str], tokenizer: Any, context_size: int, bos_id: int,
                  prepend_bos: bool = True) -> Iterator[np.ndarray]:
    """Cut a document stream into token windows.

    Args:
        docs: documents (str); each is tokenised in :func:`pieces` of at most :data:`MAX_CHARS`.
        tokenizer: a Hugging Face tokenizer (called without special tokens).
        context_size: tokens per window, BOS included.
        bos_id: BOS token id, also the separator between documents.
        prepend_bos: put BOS at position 0 of every window.

    Yields:
        int32[context_size] windows, in stream order.
    """
    body = context_size - 1 if prepend_bos else context_size
    buffer: list[int] = []

    def full() -> Iterator[np.ndarray]:
        while len(buffer) >= body:
            window = ([bos_id] if prepend_bos else []) + buffer[:body]
            del buffer[:body]
            yield np.asarray(window, dtype=np.int32)

    for doc in docs:
        if not doc.strip():
            continue
        for piece in pieces(doc):
            buffer.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
            yield from full()
        buffer.append(bos_id)
        yield from full()


def held_out_windows(docs: Iterator[str], tokenizer: Any, context_size: int, bos_id: int, skip: int,
                     n_windows: int, prepend_bos: bool = True,
                     per_document: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the documents that follow the first ``skip`` windows of the stream, each starting
    at a document start: the held-out text of the causal tests, in clusters of whole documents.

    The stream is the one :func:`token_windows` cuts (documents tokenised in :func:`pieces`, joined
    by a BOS separator). Its first ``skip`` windows cover ``skip × (context_size − 1)`` tokens (with
    ``prepend_bos``); documents starting inside them are passed over. From the first document that
    starts after them, each held-out window is BOS + the stream from a document start, running on
    into the following documents (BOS-separated) until the window is full, as the stream does. A
    document longer than one window gives its first ``per_document`` windows (consecutive), a
    shorter one one window; the next window starts at the first document start after the last
    window's end. So no two windows share a document unless they are one long document's
    consecutive windows, and each window's cluster id is the document it starts at.

    Args:
        docs: the document stream (str); empty documents are skipped, as :func:`token_windows` does.
        tokenizer: a Hugging Face tokenizer (called without special tokens).
        context_size: tokens per window, BOS included; bos_id: BOS, also the separator.
        skip: windows of the stream already read (step 02's ``tokens.npy``).
        n_windows: held-out windows wanted; per_document: the most windows one document gives.
        prepend_bos: BOS at position 0 of every window.
    Returns:
        (windows: int32[n_windows, context_size], document: int64[n_windows] the index, among the
        stream's non-empty documents, of the document each window starts at).
    Raises:
        DarkMatterError: the text runs out before ``n_windows`` windows.
    """
    body = context_size - 1 if prepend_bos else context_size
    consumed, at = skip * body, 0  # stream tokens step 02 read; stream offset of the next document
    head = [bos_id] if prepend_bos else []
    windows: list[np.ndarray] = []
    document: list[int] = []

    def tokens(doc: str, limit: int) -> list[int]:
        got: list[int] = []
        for piece in pieces(doc):
            got.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
            if len(got) >= limit:
                break
        return got

    stream = enumerate(d for d in docs if d.strip())
    n_docs = 0
    for i, doc in stream:
        if len(windows) >= n_windows:
            break
        if at < consumed:  # step 02 read (part of) this document
            at += len(tokens(doc, 1 << 62)) + 1
            continue
        first = tokens(doc, per_document * body + 1)
        n_w = min(per_document, max(1, -(-len(first) // body)))
        span = n_w * body
        buf = first[:span]
        while len(buf) < span:  # a short document: the window runs on into the next ones
            buf.append(bos_id)
            if len(buf) < span:
                nxt = next(stream, None)
                if nxt is None:
                    break
                buf.extend(tokens(nxt[1], span - len(buf)))
        if len(buf) < span:
            break
        n_docs += 1
        for w in range(min(n_w, n_windows - len(windows))):
            windows.append(np.asarray(head + buf[w * body:(w + 1) * body], dtype=np.int32))
            document.append(i)
    if len(windows) < n_windows:
        raise DarkMatterError(f"the text has {len(windows)} held-out windows ({n_docs} documents) after the "
                              f"{skip:,} windows step 02 read; the causal tests need {n_windows}: lower "
                              "`causal_windows` or give more text (`text_files`, `dataset`)")
    return np.stack(windows), np.asarray(document, dtype=np.int64)

"""Bundled text and token windows."""

import itertools

import numpy as np
import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.sources.text import documents, local_files, python_docs, token_windows


class CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_bundled_corpus_is_prose_and_deterministic():
    docs = list(itertools.islice(python_docs(), 100))
    assert docs == list(itertools.islice(python_docs(), 100))
    assert sum(len(d) for d in docs) > 100_000
    assert " the " in docs[0]


def test_windows_prepend_bos_and_separate_documents():
    windows = list(token_windows(iter(["abcde", "fgh"]), CharTokenizer(), 4, bos_id=0))
    assert [w.tolist() for w in windows] == [[0, 97, 98, 99], [0, 100, 101, 0], [0, 102, 103, 104]]
    assert all(w.dtype == np.int32 for w in windows)


def test_local_files_needs_a_match(tmp_path):
    with pytest.raises(DarkMatterError, match="matches no file"):
        list(local_files(str(tmp_path / "*.txt")))


def test_training_and_analysis_documents_are_disjoint(tmp_path):
    for i in range(6):
        (tmp_path / f"d{i}.txt").write_text(f"document {i}")
    files = str(tmp_path / "*.txt")
    assert list(documents(files, part="train", split=True)) == ["document 0", "document 2", "document 4"]
    assert list(documents(files, part="analysis", split=True)) == ["document 1", "document 3", "document 5"]
    assert len(list(documents(files, part="analysis", split=False))) == 6
    with pytest.raises(ValueError, match="part"):
        documents(files, part="test")


class CountingTokenizer(CharTokenizer):
    """Characters as tokens; remembers the longest text it was handed."""

    longest = 0

    def __call__(self, text, add_special_tokens=False):
        self.longest = max(self.longest, len(text))
        return super().__call__(text, add_special_tokens)


def test_a_long_single_line_document_is_tokenised_in_pieces(tmp_path):
    from darkmatter.sources.text import MAX_CHARS

    words = " ".join(f"w{i % 97}" for i in range(200_000))  # ~1 MB, one line, no newline
    (tmp_path / "long.txt").write_text(words)
    tok = CountingTokenizer()
    windows = token_windows(documents(str(tmp_path / "*.txt")), tok, 64, bos_id=0)
    first = list(itertools.islice(windows, 10))
    assert tok.longest <= MAX_CHARS  # the first windows need one piece, not the whole 1 MB
    rest = list(windows)
    assert tok.longest <= MAX_CHARS
    # the pieces join back into the document: the windows hold every character once, in order
    # (but the last partial window's)
    read = "".join(map(chr, np.concatenate([w[1:] for w in first + rest]).tolist()))
    assert words.startswith(read) and len(read) > len(words) - 64


def test_pieces_cut_before_whitespace():
    from darkmatter.sources.text import pieces

    doc = "abc def " * 20
    parts = list(pieces(doc, limit=16))
    assert "".join(parts) == doc and all(len(p) <= 16 for p in parts)
    assert all(p.startswith(" ") or p.startswith("d") or i == 0 for i, p in enumerate(parts))
    assert list(pieces("x" * 40, limit=16)) == ["x" * 16, "x" * 16, "x" * 8]  # no whitespace: hard cuts


@pytest.mark.parametrize("make, said", [
    (lambda d: (d / "sub").mkdir(), "a folder, not a file"),
    (lambda d: (d / "bin.txt").write_bytes(b"\x7fELF\x00\x01\x02"), "not UTF-8 text"),
    (lambda d: (d / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1")), "not UTF-8 text"),
])
def test_text_paths_refuses_what_is_not_text(tmp_path, make, said):
    from darkmatter.sources.text import text_paths

    (tmp_path / "ok.txt").write_text("fine text, ünïcode too")
    make(tmp_path)
    with pytest.raises(DarkMatterError, match=said):
        text_paths(str(tmp_path / "*"))
    assert text_paths(str(tmp_path / "ok.txt")) == [tmp_path / "ok.txt"]


def test_held_out_windows_start_at_document_starts_at_most_two_per_document():
    """Stream "abcde|fgh|ij|klmnopq|r|s|tuv" (| = BOS 0), windows of BOS + 3: the 2 windows step 02 read
    cover "abcde|", so held-out windows start at "fgh"; a long document gives two windows, a short one
    runs on into the next ("s"), which then starts none."""
    from darkmatter.sources.text import held_out_windows

    docs = ["abcde", "fgh", "", "ij", "klmnopq", "r", "s", "tuv"]
    windows, doc = held_out_windows(iter(docs), CharTokenizer(), 4, bos_id=0, skip=2, n_windows=6)
    assert ["".join(chr(t) if t else "|" for t in w) for w in windows] == [
        "|fgh", "|ij|", "|klm", "|nop", "|r|s", "|tuv"]
    assert doc.tolist() == [1, 2, 3, 3, 4, 6] and windows.dtype == np.int32 and windows.shape == (6, 4)
    # no skip: the first document gives two windows, the second of which ends where "fgh" starts
    windows, doc = held_out_windows(iter(docs), CharTokenizer(), 4, bos_id=0, skip=0, n_windows=3)
    assert ["".join(chr(t) if t else "|" for t in w) for w in windows] == ["|abc", "|de|", "|fgh"]
    assert doc.tolist() == [0, 0, 1]
    with pytest.raises(DarkMatterError, match="lower `causal_windows`"):
        held_out_windows(iter(docs), CharTokenizer(), 4, bos_id=0, skip=2, n_windows=7)

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

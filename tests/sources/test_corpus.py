"""The text corpora: dictd and fortune parsing, cleanup, the SHA-256 interleave, the fetch's checks,
the missing-corpus error, and the corpus installed by scripts/install.sh."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import random
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from darkmatter.errors import DarkMatterError
from darkmatter.sources import corpus
from darkmatter.sources.corpus import (
    CORPORA,
    Document,
    check_installed,
    clean_foldoc,
    clean_gcide,
    dictd_entries,
    dictd_number,
    fortune_entries,
    interleave,
)
from darkmatter.sources.text import documents, python_docs


# ------------------------------------------------------------------------------------ parsing
def _b64(n: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out, n = digits[n % 64] + out, n // 64
        if n == 0:
            return out


def write_dictd(folder: Path, name: str, entries: list[tuple[list[str], str]]) -> tuple[Path, Path]:
    """A dictd dictionary: ``entries`` of (headwords, text); every headword of an entry points at it."""
    data, lines = b"", []
    for heads, text in entries:
        raw = text.encode()
        lines += [f"{h}\t{_b64(len(data))}\t{_b64(len(raw))}" for h in heads]
        data += raw
    index, dz = folder / f"{name}.index", folder / f"{name}.dict.dz"
    index.write_text("\n".join(sorted(lines, key=str.lower)) + "\n")
    dz.write_bytes(gzip.compress(data))
    return index, dz


def test_dictd_numbers_are_base64_most_significant_first():
    assert [dictd_number(s) for s in ("A", "B", "/", "BA", "BdqM")] == [0, 1, 63, 64, 383628]
    with pytest.raises(ValueError, match="base-64"):
        dictd_number("A-")


def test_dictd_entries_skip_metadata_and_shared_entries(tmp_path):
    index, dz = write_dictd(tmp_path, "toy", [
        (["00-database-info"], "This file was converted ..."),
        (["00databaseurl"], "http://example.org"),
        (["hack", "Hack"], "hack\n n.\n\n    Originally, a quick job that produces what is needed. See {kludge}.\n"),
        (["kludge"], "kludge\n\n    A clever programming trick ‘{hack}’ of the crude kind.\n"),
        (["lint"], "lint\n\n    A tool that finds {kludge}s.\n"),
    ])
    entries = list(dictd_entries(index, dz))
    # two headwords of one entry: read once; offsets count bytes (‘ and ’ are 3 each in UTF-8)
    assert [k for k, _ in entries] == ["hack@45", "kludge@127", "lint@198"]
    assert entries[0][1].startswith("hack\n n.\n\n    Originally") and "‘{hack}’ of" in entries[1][1]
    assert entries[2][1] == "lint\n\n    A tool that finds {kludge}s.\n"


def test_fortune_files_split_on_percent_lines(tmp_path):
    (tmp_path / "wisdom").write_text("A clash of doctrine is not a disaster.\n%\n\n%\nShort.\n%\n"
                                     "A dream will always triumph over reality.\n\t\t-- Stanislaw Lem\n%\n")
    entries = list(fortune_entries(tmp_path / "wisdom"))
    assert [k for k, _ in entries] == ["wisdom#0", "wisdom#1", "wisdom#2", "wisdom#3", "wisdom#4"]
    assert entries[3][1] == "A dream will always triumph over reality.\n\t\t-- Stanislaw Lem"
    assert entries[1][1] == entries[4][1] == ""


def test_cleanup_of_dictd_markup():
    assert clean_foldoc("<language> A {systems\n   language} like {C}.%%%Leo") == \
        "<language> A systems language like C., Leo"
    gcide = ('Lapidescent \\Lap`i*des"cent\\, a. [L. lapidescens, fr. {lapis}\n'
             '   stone: cf. F. b[ae]c, caf[\'e].]\n'
             '   Undergoing the process of becoming stone. [Obs.]\n'
             '   [1913 Webster]\n\n'
             'Abacist  ([a^]b"[.a]*s[i^]st), n.\n'
             '   One who uses an abacus. [Webster 1913 Suppl. +PJC]\n')
    assert clean_gcide(gcide) == ("Lapidescent, a. [L. lapidescens, fr. lapis\n"
                                  "   stone: cf. F. bæc, café.]\n"
                                  "   Undergoing the process of becoming stone. [Obs.]\n\n"
                                  "Abacist, n.\n"
                                  "   One who uses an abacus.")


# ------------------------------------------------------------------------------------ order
def test_the_interleave_is_deterministic_and_mixes_sources():
    docs = [Document(s, f"k{i}", f"{s} {i}") for s in ("python-docs", "fortunes", "foldoc") for i in range(300)]
    out = interleave(docs)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert interleave(shuffled) == out  # the order depends on (source, key) alone
    assert [(d.source, d.key) for d in out[:3]] == [("foldoc", "k136"), ("foldoc", "k96"), ("foldoc", "k9")]
    quarters = [Counter(d.source for d in out[q * 225:(q + 1) * 225]) for q in range(4)]
    assert min(n for c in quarters for n in c.values()) == 65  # expected 75 each
    sub = interleave([d for d in docs if d.source != "foldoc"])
    assert sub == [d for d in out if d.source != "foldoc"]  # a corpus keeps its order inside a larger one


# ------------------------------------------------------------------------------------ fetching
def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fake_deb(files: dict[str, bytes]) -> bytes:
    """A minimal Debian binary package (ar: debian-binary, control.tar.gz, data.tar.gz)."""
    return _ar([("debian-binary", b"2.0\n"), ("control.tar.gz", _targz({"control": b"Package: fake\n"})),
                ("data.tar.gz", _targz(files))])


@pytest.fixture
def devil_deb(tmp_path, monkeypatch):
    """dict-devil pinned to a synthetic .deb; returns its bytes."""
    index, dz = write_dictd(tmp_path, "devil", [
        (["00databaseinfo"], "The Devil's Dictionary"),
        (["cynic"], "CYNIC, n.  A blackguard whose faulty vision sees things as they are, not as they ought to be."),
    ])
    deb = fake_deb({"usr/share/dictd/devil.index": index.read_bytes(), "usr/share/dictd/devil.dict.dz": dz.read_bytes(),
                    "usr/share/doc/dict-devil/copyright": b"public domain", "usr/share/doc/dict-devil/changelog": b"x"})
    pkg = dataclasses.replace(corpus.PACKAGES["dict-devil"], sha256=hashlib.sha256(deb).hexdigest())
    monkeypatch.setitem(corpus.PACKAGES, "dict-devil", pkg)
    return deb


def test_fetch_extracts_verifies_and_reuses(devil_deb, tmp_path):
    calls: list[str] = []

    def get(url):
        calls.append(url)
        return devil_deb

    root = tmp_path / "corpus"
    manifest = corpus.fetch(root, packages=("dict-devil",), get=get, log=lambda _: None)
    rec = manifest["packages"]["dict-devil"]
    assert calls == [corpus.PACKAGES["dict-devil"].url()] and rec["kind"] == corpus.DICTIONARY
    assert sorted(p.name for p in (root / "dict-devil").iterdir()) == ["copyright", "devil.dict.dz", "devil.index"]
    assert json.loads((root / "manifest.json").read_text()) == manifest and "public domain" in rec["licence"]
    docs = list(corpus.SOURCES["devil"].read(root))
    assert [k for k, _ in docs] == ["cynic@22"] and docs[0][1].startswith("CYNIC, n.")
    corpus.fetch(root, packages=("dict-devil",), get=get, log=lambda _: None)
    assert len(calls) == 1  # a verified copy is reused
    (root / "dict-devil" / "devil.index").write_text("tampered")
    corpus.fetch(root, packages=("dict-devil",), get=get, log=lambda _: None)
    assert len(calls) == 2 and (root / "dict-devil" / "devil.index").read_text().startswith("00databaseinfo")


def test_fetch_refuses_a_package_with_another_sha256(devil_deb, tmp_path):
    root = tmp_path / "corpus"
    with pytest.raises(DarkMatterError, match=r"SHA-256 [0-9a-f]{64} is not the pinned .*nothing of it was installed"):
        corpus.fetch(root, packages=("dict-devil",), get=lambda url: devil_deb + b"!", log=lambda _: None)
    assert not (root / "dict-devil").exists() and not (root / "manifest.json").exists()


def test_the_command_line_fetch_is_one_error_line(tmp_path, capsys, monkeypatch):
    def offline(url):
        raise DarkMatterError(f"cannot download {url} (no network)")

    monkeypatch.setattr(corpus, "download", offline)
    assert corpus.main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot download http://deb.debian.org/debian/pool/")


# ------------------------------------------------------------------------------------ reading
def test_a_missing_corpus_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(corpus.ENV, str(tmp_path / "nowhere"))
    for name in ("mixed", "mixed-large"):
        with pytest.raises(DarkMatterError, match=r"not installed in .*nowhere.*bash scripts/install.sh.*"
                                                  r"`corpus` python-docs"):
            documents(corpus=name)  # at the call, before any document is read
    from darkmatter.pipeline.config import Config
    from darkmatter.pipeline.inputs import check_sources

    with pytest.raises(DarkMatterError, match="`corpus` mixed: the text corpus is not installed"):
        check_sources(Config())  # step 01 stops before loading the model
    assert list(itertools.islice(documents(corpus="python-docs"), 3)) == list(itertools.islice(python_docs(), 3))


def test_the_corpus_choices_are_the_config_choices():
    from typing import get_args, get_type_hints

    from darkmatter.pipeline.config import SourceOptions

    assert set(get_args(get_type_hints(SourceOptions)["corpus"])) == set(CORPORA)
    assert set(CORPORA["mixed"]) < set(CORPORA["mixed-large"])


def test_the_text_spec_names_and_records_the_corpus():
    from darkmatter.sources.model_source import TextSpec

    assert TextSpec().describe().startswith("corpus mixed: Python documentation (pydoc_data topics + stdlib")
    assert TextSpec(text_files="t/*.txt").describe() == "t/*.txt"
    assert TextSpec(text_files="t/*.txt").record() == {"text_files": "t/*.txt"}
    assert TextSpec(dataset="d", column="c").record() == {"dataset": "d", "column": "c"}


def test_the_installed_corpus():
    """The corpus scripts/install.sh fetched (into the venv, or $DARKMATTER_CORPUS)."""
    folder = check_installed("mixed-large")
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, pkg in corpus.PACKAGES.items():
        rec = manifest["packages"][name]
        assert rec["sha256"] == pkg.sha256 and rec["licence"] == pkg.licence and rec["kind"]
        assert (folder / rec["copyright"]).stat().st_size > 500
    s = corpus.summary("mixed")
    assert s["documents"] >= 20_000 and len(s["kinds"]) == 3 and min(s["kinds"].values()) >= 500
    counts = {r["source"]: r["documents"] for r in s["sources"]}
    assert counts.pop("python-docs") >= 200  # depends on the Python version
    assert counts == {"fortunes": 11357, "jargon": 2283, "devil": 985, "foldoc": 11761}
    docs = corpus.corpus_documents("mixed")
    kind = {name: src.kind for name, src in corpus.SOURCES.items()}
    share = Counter(kind[d.source] for d in docs)
    for part in (docs[0::2], docs[1::2], docs[:2000]):  # SAE training, analysis, the first windows
        here = Counter(kind[d.source] for d in part)
        for k, n in share.items():
            assert abs(here[k] / len(part) - n / len(docs)) < 0.02, (k, here[k], len(part))

"""Named text corpora for the offline default: many short English documents of several kinds.

The Python documentation bundled with Python (:func:`darkmatter.sources.text.python_docs`) is a few
hundred documents (562 on Python 3.11, ~0.5M SmolLM2 tokens), too few for document-level
statistics. The named corpora add English prose shipped in pinned Debian packages (``bookworm``,
architecture ``all``), fetched once at install time:

==============  =====================================  ===============================  =============
source          package (version)                      kind                             licence
==============  =====================================  ===============================  =============
python-docs     none: Python's pydoc_data and stdlib   technical documentation          PSF-2.0
fortunes        fortunes (1:1.99.1-7.3)                quotations, verse and humour     BSD
jargon          dict-jargon (4.4.7-3.1)                dictionary and glossary entries  public domain
devil           dict-devil (1.0-13.1)                  dictionary and glossary entries  public domain
foldoc          dict-foldoc (20230119-1)               dictionary and glossary entries  GFDL-1.1+
gcide           dict-gcide (0.48.5+nmu2)               dictionary and glossary entries  GPL-2+
==============  =====================================  ===============================  =============

Corpora (:data:`CORPORA`): ``python-docs`` is :func:`~darkmatter.sources.text.python_docs`
unchanged; ``mixed`` is Python documentation + fortunes + the Jargon File + The Devil's Dictionary
+ FOLDOC (one document per pydoc topic, stdlib module, fortune or dictionary entry); ``mixed-large``
adds GCIDE (the 1913 Webster + WordNet), for runs that read millions of tokens.

**Order.** Every document of a mixed corpus is sorted by the SHA-256 of ``source \\0 key`` (the key
names the document inside its source: a pydoc topic, a module path, ``file#n`` of a fortune,
``headword@offset`` of a dictionary entry), so the stream is the same on every machine and each
source is spread evenly through it: the pipeline's even-numbered documents (SAE training), odd ones
(analysis) and the windows after them (causal tests) all hold every kind in proportion. A corpus is
a subset of a larger one in the same relative order (``mixed`` inside ``mixed-large``).

**Cleanup** is light: dictd cross-reference braces (``{word}`` → ``word``), FOLDOC's ``%%%``
synonym separators, and in GCIDE the pronunciations (``\\Lay"man\\``, ``(l[=a]"m[a^]n)``), source
tags (``[1913 Webster]``, ``[WordNet 1.5]``, ``[PJC]``) and the commonest accent codes (``['e]`` →
é, ``[ae]`` → æ; a rarer one-letter code keeps its letter, others stay as they are). Documents
under :data:`MIN_WORDS` words are skipped. Fortune files that are not English prose, are chat
logs, or are built on ethnic or sexist stereotypes are not read (:data:`FORTUNE_SKIPPED`).

**Fetching** (:func:`fetch`, ``python -m darkmatter.sources.corpus``, run by
``scripts/install.sh``): each ``.deb`` is downloaded from the Debian mirror, its SHA-256 checked
against the pin, and only the text files read here plus the package's ``copyright`` file are
extracted (``debian.debfile.DebFile`` from ``python-debian``) into :func:`corpus_root`
(``<sys.prefix>/share/ica-dark-matter/corpus``, or ``$DARKMATTER_CORPUS``), with a
``manifest.json`` (package, version, URL, SHA-256, licence, kind, files and their SHA-256). A second
fetch reuses the files whose hashes still match.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import unicodedata
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from darkmatter.errors import DarkMatterError

MIRROR = "http://deb.debian.org/debian"
#: Environment variable naming the corpus folder (default: :func:`corpus_root`).
ENV = "DARKMATTER_CORPUS"
MANIFEST = "manifest.json"
#: Documents of a Debian source with fewer words are skipped (empty fortunes, bare cross-references).
MIN_WORDS = 5
#: Seconds before a download gives up.
TIMEOUT_S = 120

DOCS, QUOTES, DICTIONARY = "technical documentation", "quotations, verse and humour", "dictionary and glossary entries"

#: Fortune files read (``/usr/share/games/fortunes/<name>``).
FORTUNE_FILES = ("art", "computers", "cookie", "definitions", "disclaimer", "drugs", "education", "food", "goedel",
                 "humorists", "kids", "law", "love", "magic", "medicine", "miscellaneous", "news", "paradoxum",
                 "people", "pets", "platitudes", "politics", "pratchett", "science", "songs-poems", "sports",
                 "startrek", "tao", "wisdom", "work")
#: Fortune files of the package not read, and why.
FORTUNE_SKIPPED = {
    "ethnic": "jokes on ethnic stereotypes", "men-women": "jokes on sexist stereotypes",
    "ascii-art": "pictures, not prose", "translate-me": "mostly not English",
    "zippy": "Zippy the Pinhead non sequiturs",
    "debian": "Debian IRC chat logs", "knghtbrd": "IRC chat logs", "linux": "IRC chat logs",
    "linuxcookie": "IRC chat logs", "perl": "Perl one-liners and code-heavy quotes",
}


@dataclass(frozen=True)
class Package:
    """A pinned Debian package and the files read from it.

    Attributes:
        name, version: Debian's (``version`` with its epoch, as ``apt`` shows it).
        pool: path of the ``.deb`` under the mirror.
        sha256: of the ``.deb``.
        licence: of the text (from the package's ``copyright`` file).
        members: files read, as paths inside the package's data archive.
    """

    name: str
    version: str
    pool: str
    sha256: str
    licence: str
    members: tuple[str, ...]

    def url(self, mirror: str = MIRROR) -> str:
        return f"{mirror.rstrip('/')}/{self.pool}"

    @property
    def copyright(self) -> str:
        return f"usr/share/doc/{self.name}/copyright"


def _dictd(name: str) -> tuple[str, ...]:
    return (f"usr/share/dictd/{name}.index", f"usr/share/dictd/{name}.dict.dz")


PACKAGES: dict[str, Package] = {p.name: p for p in (
    Package("fortunes", "1:1.99.1-7.3", "pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb",
            "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
            "BSD (fortune-mod, Regents of the University of California; see copyright)",
            tuple(f"usr/share/games/fortunes/{f}" for f in FORTUNE_FILES)),
    Package("dict-jargon", "4.4.7-3.1", "pool/main/d/dict-jargon/dict-jargon_4.4.7-3.1_all.deb",
            "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1",
            "public domain (The Jargon File 4.4.7)", _dictd("jargon")),
    Package("dict-devil", "1.0-13.1", "pool/main/d/dict-devil/dict-devil_1.0-13.1_all.deb",
            "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154",
            "public domain (Ambrose Bierce, The Devil's Dictionary, 1911; copyright expired)", _dictd("devil")),
    Package("dict-foldoc", "20230119-1", "pool/main/d/dict-foldoc/dict-foldoc_20230119-1_all.deb",
            "745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3",
            "GFDL-1.1+ (Free On-line Dictionary of Computing, Denis Howe; see copyright)", _dictd("foldoc")),
    Package("dict-gcide", "0.48.5+nmu2", "pool/main/d/dict-gcide/dict-gcide_0.48.5+nmu2_all.deb",
            "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
            "GPL-2+ (GNU Collaborative International Dictionary of English 0.48)", _dictd("gcide")),
)}


# ---------------------------------------------------------------------------------- fetching
def corpus_root(root: str | Path | None = None) -> Path:
    """The corpus folder: ``root``, else ``$DARKMATTER_CORPUS``, else
    ``<sys.prefix>/share/ica-dark-matter/corpus`` (inside the virtual environment)."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV)
    return Path(env) if env else Path(sys.prefix) / "share" / "ica-dark-matter" / "corpus"


def download(url: str) -> bytes:
    """The bytes at ``url``. Raises DarkMatterError (one line) when it cannot be fetched."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return bytes(response.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DarkMatterError(f"cannot download {url} ({reason}): check the network, or pass another Debian "
                              f"mirror (--mirror), or set {ENV} to a folder holding a fetched corpus") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def read_manifest(root: Path) -> dict[str, Any] | None:
    """``manifest.json`` of a corpus folder, or None when absent or unreadable."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("packages"), dict) else None


def _verified(root: Path, pkg: Package, entry: Any) -> bool:
    """``entry`` (a manifest record) is ``pkg`` at its pinned hash, with every file present and intact."""
    if not isinstance(entry, dict) or entry.get("sha256") != pkg.sha256 or entry.get("version") != pkg.version:
        return False
    files = entry.get("files")
    wanted = {_local(pkg, m) for m in (*pkg.members, pkg.copyright)}
    return isinstance(files, dict) and set(files) == wanted and \
        all(_file_sha256(root / rel) == digest for rel, digest in files.items())


def _local(pkg: Package, member: str) -> str:
    """Where a member of ``pkg`` lands, relative to the corpus folder: ``<package>/<file name>``."""
    return f"{pkg.name}/{member.rsplit('/', 1)[-1]}"


def extract(pkg: Package, deb: bytes, root: Path) -> dict[str, str]:
    """Write ``pkg``'s members and copyright file from the ``.deb`` bytes into ``root/<package>/``.

    Returns:
        ``{path relative to root: sha256}`` of the files written.
    Raises:
        DarkMatterError: the package lacks a member (a different package behind the pinned name).
    """
    from debian.debfile import DebFile

    wanted = {m: _local(pkg, m) for m in (*pkg.members, pkg.copyright)}
    found: dict[str, bytes] = {}
    with DebFile(fileobj=io.BytesIO(deb)) as debfile:
        tar = debfile.data.tgz()
        for info in tar.getmembers():
            name = info.name.removeprefix("./")
            if name in wanted and info.isfile():
                fh = tar.extractfile(info)
                assert fh is not None
                found[name] = fh.read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DarkMatterError(f"{pkg.name} {pkg.version} has no {', '.join(missing)}: the pinned package changed "
                              "shape; update darkmatter/sources/corpus.py")
    staging = root / f".{pkg.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for member, rel in wanted.items():
        (staging / rel.split("/", 1)[1]).write_bytes(found[member])
    shutil.rmtree(root / pkg.name, ignore_errors=True)
    staging.rename(root / pkg.name)
    return {rel: _sha256(found[member]) for member, rel in sorted(wanted.items(), key=lambda kv: kv[1])}


def fetch(root: str | Path | None = None, packages: tuple[str, ...] | None = None, mirror: str = MIRROR,
          get: Callable[[str], bytes] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Download, check and extract the corpus packages into :func:`corpus_root`; write its manifest.

    Args:
        root: the corpus folder (default :func:`corpus_root`).
        packages: names in :data:`PACKAGES` (default all).
        mirror: a Debian mirror.
        get: ``url -> bytes`` (default :func:`download`; a stand-in in tests).
        log: one line per package.
    Returns:
        The manifest written (``{"format", "mirror", "packages": {name: record}}``).
    Raises:
        DarkMatterError: a download fails, a ``.deb``'s SHA-256 is not the pinned one (nothing of it
            is written), or the folder cannot be written; one line each.
    """
    folder = corpus_root(root)
    names = tuple(PACKAGES) if packages is None else packages
    get = get or download
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DarkMatterError(f"cannot create the corpus folder {folder} ({exc.strerror}): set {ENV} to a "
                              "writable folder") from None
    old = (read_manifest(folder) or {}).get("packages", {})
    records = {k: v for k, v in old.items() if k in PACKAGES}
    for name in names:
        pkg = PACKAGES[name]
        if _verified(folder, pkg, records.get(name)):
            log(f"corpus: {name} {pkg.version} already in {folder} (verified)")
            continue
        url = pkg.url(mirror)
        deb = get(url)
        digest = _sha256(deb)
        if digest != pkg.sha256:
            raise DarkMatterError(f"{url}: SHA-256 {digest} is not the pinned {pkg.sha256}; nothing of it was "
                                  "installed (a broken download or mirror: retry, or try another --mirror)")
        try:
            files = extract(pkg, deb, folder)
        except OSError as exc:
            raise DarkMatterError(f"cannot write {pkg.name} into {folder} ({exc}): set {ENV} to a writable "
                                  "folder") from None
        source = next(s for s in SOURCES.values() if s.package == name)
        records[name] = {"package": name, "version": pkg.version, "url": url, "sha256": pkg.sha256,
                         "licence": pkg.licence, "source": source.name, "kind": source.kind,
                         "copyright": _local(pkg, pkg.copyright), "files": files}
        _write_manifest(folder, mirror, records)  # after each package: a later failure keeps this one
        log(f"corpus: {name} {pkg.version} fetched and verified ({len(deb) / 1e6:.1f} MB) into {folder}")
    return _write_manifest(folder, mirror, records)


def _write_manifest(folder: Path, mirror: str, records: dict[str, Any]) -> dict[str, Any]:
    manifest = {"format": 1, "mirror": mirror, "packages": dict(sorted(records.items()))}
    tmp = folder / f".{MANIFEST}.partial"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(folder / MANIFEST)
    return manifest


# ---------------------------------------------------------------------------------- parsing
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
#: dictd metadata headwords: 00-database-info, 00databaseinfo (dict-devil), 00-gcide-long, ...
_DICTD_META = re.compile(r"00[-a-z]")


def dictd_number(text: str) -> int:
    """A dictd index number (base 64, alphabet ``A-Za-z0-9+/``, most significant digit first).

    Raises:
        ValueError: a character outside the alphabet.
    """
    n = 0
    for c in text:
        if c not in _B64:
            raise ValueError(f"{text!r} is not a dictd base-64 number")
        n = n * 64 + _B64[c]
    return n


def dictd_entries(index: Path, data: Path) -> Iterator[tuple[str, str]]:
    """The entries of a dictd dictionary, in index order, each once.

    Args:
        index: the ``.index`` file, lines ``headword \\t offset \\t length`` (dictd base 64, byte
            offsets into the uncompressed data).
        data: the ``.dict.dz`` (gzip-readable; dictzip is gzip with a seek table) or a plain ``.dict``.
    Yields:
        ``(key, text)``: ``key`` is ``headword@offset`` of the first headword pointing at the entry
        (several headwords can share one); metadata entries (``00-database-*``) are skipped.
    """
    raw = gzip.open(data).read() if data.suffix == ".dz" else data.read_bytes()
    seen: set[tuple[int, int]] = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or _DICTD_META.match(parts[0]):
            continue
        span = dictd_number(parts[1]), dictd_number(parts[2])
        if span in seen:
            continue
        seen.add(span)
        yield f"{parts[0]}@{span[0]}", raw[span[0]:span[0] + span[1]].decode("utf-8", errors="replace")


def fortune_entries(path: Path) -> Iterator[tuple[str, str]]:
    """The fortunes of a fortune file (entries separated by lines ``%``), each ``(file#n, text)``
    with trailing whitespace dropped; ``n`` counts every entry, empty ones included."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for n, entry in enumerate(re.split(r"^%[ \t]*\n", text, flags=re.M)):
        yield f"{path.name}#{n}", entry.rstrip()


_BRACES = re.compile(r"\{([^{}]*)\}")


def plain_braces(text: str) -> str:
    """dictd cross-references ``{word}`` → ``word`` (a reference broken over lines is joined)."""
    return _BRACES.sub(lambda m: " ".join(m.group(1).split()), text)


def clean_foldoc(text: str) -> str:
    """FOLDOC: cross-reference braces dropped, ``%%%`` synonym separators become commas."""
    return plain_braces(text).replace("%%%", ", ")


_GCIDE_PRON = re.compile(r"\\[^\\\n]{0,120}\\")
#: a parenthesised word in pronunciation markup: (l[=a]"m[a^]n), (f[imac]t)
_GCIDE_PRON_PAREN = re.compile(r"[ \t]*\((?=[^)\s]*[\"*`\[])[^)\s]*\)")
_GCIDE_TAG = re.compile(r"[ \t]*\[(?:(?:1913 Webster|Webster 1913 Suppl\.|WordNet [\d.]+|WordNet sense \d+|PJC\.?|"
                        r"AS|RDH|Century Dict\. \d+)\s*\+?\s*)+\]")
_GCIDE_CODE = re.compile(r"\[([a-zA-Z]{2,5}|['`\"=~^,.][a-zA-Z]|[a-zA-Z]\^|-[a-zA-Z]|[a-zA-Z][\^~]?)\]")
_GCIDE_NAMED = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "deg": "°", "aum": "ä",
                "oum": "ö", "uum": "ü", "imac": "ī", "ng": "ng", "th": "th", "root": "√", "sect": "§",
                "frac12": "½", "frac13": "⅓", "frac14": "¼", "frac34": "¾", "hand": "☞", "cent": "¢", "pound": "£"}
_GCIDE_MARK = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "=": "\u0304", "~": "\u0303", "^": "\u0302",
               ",": "\u0327", ".": "\u0307"}


def _gcide_code(m: re.Match[str]) -> str:
    code = m.group(1)
    if code in _GCIDE_NAMED:
        return _GCIDE_NAMED[code]
    if len(code) == 2 and code[0] in _GCIDE_MARK and code[1].isalpha():
        return unicodedata.normalize("NFC", code[1] + _GCIDE_MARK[code[0]])
    if len(code) == 2 and code[1] == "^" and code[0].isalpha():
        return unicodedata.normalize("NFC", code[0] + "\u0306")  # breve: the short vowels of 1913 Webster
    if len(code) <= 2 and code.strip("-^~").isalpha():
        return code.strip("-^~")
    return m.group(0)  # a word in brackets ([Obs.], [saints]) stays


def clean_gcide(text: str) -> str:
    """GCIDE: pronunciations and source tags dropped (and the lines they leave empty); braces and
    accent codes made plain (see the module docstring)."""
    out = []
    for line in plain_braces(text).split("\n"):
        new = _GCIDE_TAG.sub("", _GCIDE_PRON_PAREN.sub("", _GCIDE_PRON.sub("", line)))
        new = _GCIDE_CODE.sub(_gcide_code, new).rstrip()
        if new or not line.strip():
            out.append(new)
    return re.sub(r"[ \t]+,", ",", "\n".join(out)).strip()


# ---------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """One source of documents: its kind, the package it comes from (None: Python itself), and a
    reader ``folder -> (key, text)`` in a fixed order."""

    name: str
    title: str
    kind: str
    package: str | None
    licence: str
    read: Callable[[Path], Iterator[tuple[str, str]]]


def _python_docs(_: Path) -> Iterator[tuple[str, str]]:
    from darkmatter.sources.text import python_doc_items

    return python_doc_items()


def _fortunes(folder: Path) -> Iterator[tuple[str, str]]:
    for name in FORTUNE_FILES:
        yield from fortune_entries(folder / "fortunes" / name)


def _dictionary(package: str, name: str, clean: Callable[[str], str]) -> Callable[[Path], Iterator[tuple[str, str]]]:
    def read(folder: Path) -> Iterator[tuple[str, str]]:
        for key, text in dictd_entries(folder / package / f"{name}.index", folder / package / f"{name}.dict.dz"):
            yield key, clean(text).strip()

    return read


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("python-docs", "Python documentation (pydoc_data topics + stdlib docstrings)", DOCS, None,
           "PSF-2.0 (bundled with Python)", _python_docs),
    Source("fortunes", "fortune-mod's fortunes", QUOTES, "fortunes", PACKAGES["fortunes"].licence, _fortunes),
    Source("jargon", "The Jargon File", DICTIONARY, "dict-jargon", PACKAGES["dict-jargon"].licence,
           _dictionary("dict-jargon", "jargon", plain_braces)),
    Source("devil", "The Devil's Dictionary", DICTIONARY, "dict-devil", PACKAGES["dict-devil"].licence,
           _dictionary("dict-devil", "devil", plain_braces)),
    Source("foldoc", "Free On-line Dictionary of Computing", DICTIONARY, "dict-foldoc",
           PACKAGES["dict-foldoc"].licence, _dictionary("dict-foldoc", "foldoc", clean_foldoc)),
    Source("gcide", "GNU Collaborative International Dictionary of English", DICTIONARY, "dict-gcide",
           PACKAGES["dict-gcide"].licence, _dictionary("dict-gcide", "gcide", clean_gcide)),
)}

#: corpus name → its sources (the choices of ``--corpus``).
CORPORA: dict[str, tuple[str, ...]] = {
    "mixed": ("python-docs", "fortunes", "jargon", "devil", "foldoc"),
    "python-docs": ("python-docs",),
    "mixed-large": ("python-docs", "fortunes", "jargon", "devil", "foldoc", "gcide"),
}


def _check_name(name: str) -> tuple[str, ...]:
    if name not in CORPORA:
        raise DarkMatterError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)}")
    return CORPORA[name]


def check_installed(name: str, root: str | Path | None = None) -> Path:
    """The corpus folder, after checking it holds every package corpus ``name`` reads.

    Raises:
        DarkMatterError: unknown name, or the folder, its manifest or a package's files are missing
            (the message gives the fix).
    """
    folder = corpus_root(root)
    needed = [p for p in (SOURCES[s].package for s in _check_name(name)) if p is not None]
    if not needed:
        return folder
    records = (read_manifest(folder) or {}).get("packages", {})
    missing = [p for p in needed if p not in records
               or not all((folder / rel).is_file() for rel in records[p].get("files", {}))]
    if missing:
        raise DarkMatterError(
            f"`corpus` {name}: the text corpus is not installed in {folder} (missing {', '.join(missing)}): run "
            f"bash scripts/install.sh (it fetches the Debian packages {', '.join(needed)}), or "
            f"python -m darkmatter.sources.corpus, or pass `corpus` python-docs")
    return folder


@dataclass(frozen=True)
class Document:
    """One document of a corpus: its source, its key inside the source, and its text."""

    source: str
    key: str
    text: str


def _order(doc: Document) -> bytes:
    return hashlib.sha256(f"{doc.source}\0{doc.key}".encode()).digest()


def interleave(docs: list[Document]) -> list[Document]:
    """``docs`` sorted by the SHA-256 of ``source \\0 key``: the same order on every machine, each
    source spread evenly through it (see the module docstring)."""
    return sorted(docs, key=_order)


def corpus_documents(name: str, root: str | Path | None = None) -> tuple[Document, ...]:
    """Every document of corpus ``name``, in stream order (``python-docs``: Python's own order;
    a mixed corpus: :func:`interleave`). The last two corpora read are kept in memory (``mixed-large``
    is ~44 M characters and takes ~6 s to read on one core).

    Raises:
        DarkMatterError: unknown name or missing corpus (:func:`check_installed`).
    """
    return _read(name, check_installed(name, root))


@functools.lru_cache(maxsize=2)
def _read(name: str, folder: Path) -> tuple[Document, ...]:
    docs = []
    for source in CORPORA[name]:
        src = SOURCES[source]
        for key, text in src.read(folder):
            if src.package is None or len(text.split()) >= MIN_WORDS:
                docs.append(Document(source, key, text))
    return tuple(docs if name == "python-docs" else interleave(docs))


def corpus_texts(name: str, root: str | Path | None = None) -> Iterator[str]:
    """The texts of :func:`corpus_documents`; ``python-docs`` streams
    (:func:`darkmatter.sources.text.python_docs`) without reading ahead.

    Raises:
        DarkMatterError: see :func:`corpus_documents` (at the call, not at the first ``next``).
    """
    if name == "python-docs":
        from darkmatter.sources.text import python_docs

        return python_docs()
    return (doc.text for doc in corpus_documents(name, root))


def describe(name: str) -> str:
    """One line naming corpus ``name`` and its sources (for reports and ``HookInfo.text``)."""
    titles = ", ".join(SOURCES[s].title for s in _check_name(name))
    return f"corpus {name}: {titles}" + ("" if name == "python-docs" else "; documents interleaved by SHA-256")


def summary(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """What corpus ``name`` holds, for a run's record: per source its kind, package, version,
    SHA-256, licence, documents and characters; totals per kind.

    Raises:
        DarkMatterError: see :func:`corpus_documents`.
    """
    docs = corpus_documents(name, root)
    records = (read_manifest(corpus_root(root)) or {}).get("packages", {}) if name != "python-docs" else {}
    n_docs: Counter[str] = Counter(d.source for d in docs)
    n_chars: Counter[str] = Counter()
    for d in docs:
        n_chars[d.source] += len(d.text)
    sources = []
    for s in CORPORA[name]:
        src, rec = SOURCES[s], records.get(SOURCES[s].package or "", {})
        sources.append({"source": s, "title": src.title, "kind": src.kind, "licence": src.licence,
                        "package": src.package, "version": rec.get("version"), "sha256": rec.get("sha256"),
                        "url": rec.get("url"), "documents": n_docs[s], "characters": n_chars[s]})
    kinds: Counter[str] = Counter()
    for record in sources:
        kinds[record["kind"]] += record["documents"]
    return {"corpus": name, "folder": str(corpus_root(root)) if records else None, "documents": len(docs),
            "characters": sum(n_chars.values()), "order": "sha256(source, key)" if name != "python-docs" else
            "Python's own", "kinds": dict(kinds), "sources": sources}


def main(argv: list[str] | None = None) -> int:
    """``python -m darkmatter.sources.corpus [--root DIR] [--mirror URL]``: fetch the corpus; a
    problem is one ``error:`` line and exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m darkmatter.sources.corpus",
                                     description="Fetch the Debian packages of the text corpora the pipeline reads.")
    parser.add_argument("--root", default=None, help=f"corpus folder (default ${ENV}, else "
                                                     "<sys.prefix>/share/ica-dark-matter/corpus)")
    parser.add_argument("--mirror", default=MIRROR, help="Debian mirror")
    args = parser.parse_args(argv)
    try:
        manifest = fetch(args.root, mirror=args.mirror)
    except DarkMatterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"corpus: {len(manifest['packages'])} packages in {corpus_root(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

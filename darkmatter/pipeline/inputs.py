"""What a step reads from outside and inside the outputs folder, checked before any work.

Outside: the model folder, the SAE folder, the text files and cached activations. Step 01 (and
step 02, which reads them again) checks them up front, before the slow model load
(:func:`check_sources`), and each step records their **fingerprints** in ``config.json`` under
``"inputs"`` (:func:`fingerprints`): one entry per input, with the step that first reads it and a
hash of its files. Every later step recomputes them; an input that changed since an earlier step
read it stops the step with one line naming the file and the step to rerun
(:func:`inputs_for`). The fingerprints of inputs read by steps 1..N enter step N's ``run_id``
(:func:`darkmatter.pipeline.resolve.run_id`), so ``run_pipeline.py`` redoes the steps whose
inputs changed instead of skipping them, and files made from the old inputs are refused.

A file's fingerprint (:func:`file_digest`) is the SHA-256 of its content when it is at most
:data:`FULL_HASH_BYTES`; a larger file hashes its size, its mtime (ns) and its first and last MiB
(fast, and a rewrite of the middle keeping size and mtime goes unnoticed). Model and SAE folders
hash their small JSON files in full and the weights by that rule. Hub names (a TransformerLens
model, ``--sae-release``, ``--dataset``) are in the config already and have no fingerprint here:
the hub's revision is whatever its cache holds.

Inside: every ``.npy`` a step reads is opened (header and size) and its shape checked against the
run (:func:`check_arrays`), so a truncated, foreign or hand-edited array is one line naming the
step that writes it before the step computes anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import source_kinds, table
from darkmatter.pipeline.config import Config
from darkmatter.pipeline.flags import flag
from darkmatter.pipeline.storage.store import OutputStore

FULL_HASH_BYTES = 2 << 20
EDGE_BYTES = 1 << 20


# ------------------------------------------------------------------------------------ outside
def check_sources(cfg: Config) -> None:
    """The model folder, SAE folder and text files (or installed corpus) of ``cfg``, checked without
    loading anything.

    Raises:
        DarkMatterError: the first problem, naming the file and the flag to fix.
    """
    s, kind = cfg.source, source_kinds.of(cfg)
    if kind.check_local is not None:
        kind.check_local(cfg)
    if s.sae_path is not None and not kind.brings_sae:
        from darkmatter.sources.saes import check_folder

        check_folder(s.sae_path, "check --sae-path (a folder written by SAELens's save_model)")


def file_digest(path: Path) -> str:
    """``size:hash`` of one file (see the module docstring for the fast rule of big files)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= FULL_HASH_BYTES:
            h.update(fh.read())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            h.update(fh.read(EDGE_BYTES))
            fh.seek(-EDGE_BYTES, 2)
            h.update(fh.read(EDGE_BYTES))
    return f"{st.st_size}:{h.hexdigest()[:16]}"


def _files(paths: list[Path], root: Path | None = None) -> dict[str, str]:
    out = {}
    for p in sorted(paths):
        key = str(p.relative_to(root)) if root else str(p)
        try:
            out[key] = file_digest(p)
        except OSError:
            out[key] = "unreadable"
    return out


def _folder(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {str(folder): "missing"} if not folder.is_file() else _files([folder])
    return _files([p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")], folder)


def fingerprints(cfg: Config) -> dict[str, dict[str, Any]]:
    """The run's local inputs: ``{name: {"flag", "path", "step", "hash", "files"}}``; ``step`` is the
    number of the first step that reads it (text read only by step 02 when the SAE is not trained
    here). Unreadable or missing files are recorded as such (so their return counts as a change)."""
    s, out = cfg.source, {}
    first, collect = table.steps()[0].number, (table.owner("collect") or table.steps()[0]).number

    def add(name: str, flag_text: str, path: str, step: int, files: dict[str, str]) -> None:
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        out[name] = {"flag": flag_text, "path": path, "step": step, "hash": digest, "files": files}

    kind = source_kinds.of(cfg)
    for name, path in kind.local_inputs(cfg) if kind.local_inputs is not None else []:
        if name == "text_files":  # a glob, read by step 02 unless step 01 trains the SAE on it
            import glob

            paths = [Path(p) for p in glob.glob(path, recursive=True)]
            add(name, flag(name), path, first if cfg.trains_sae else collect,
                _files([p for p in paths if p.is_file()]) | {str(p): "folder" for p in paths if p.is_dir()})
        else:
            add(name, flag(name), path, first, _folder(Path(path)))
    if s.sae_path is not None and not kind.brings_sae:
        add("sae", "--sae-path", s.sae_path, first, _folder(Path(s.sae_path)))
    return out


def _change(old: dict[str, str], new: dict[str, str]) -> str:
    for key in sorted(set(old) | set(new)):
        if key not in new:
            return f"{key} is gone"
        if key not in old:
            return f"{key} is new"
        if old[key] != new[key]:
            return f"{key} differs"
    return "its files differ"


def inputs_for(step: table.Step, cfg: Config, store: OutputStore) -> dict[str, dict[str, Any]]:
    """The fingerprints step ``step`` runs with (its ``run_id`` includes them), after checking them.

    Step 01 checks the inputs (:func:`check_sources`) and fingerprints them afresh; a later step
    compares today's fingerprints with those recorded in config.json: an input first read by an
    earlier step must be unchanged, one this step is the first to read is checked and
    fingerprinted afresh. Inputs config.json does not record (a run of an older version) are not
    compared.

    Raises:
        DarkMatterError: an input changed since an earlier step read it (names the file and the
            step to rerun), or one this step reads is unusable.
    """
    now = fingerprints(cfg)
    if step.number == table.steps()[0].number:
        check_sources(cfg)
        return now
    recorded = recorded_inputs(store)
    if any(v["step"] == step.number for v in now.values()):
        check_sources(cfg)
    for name, entry in now.items():
        old = recorded.get(name)
        if old is None or entry["step"] >= step.number or old.get("hash") == entry["hash"]:
            continue
        reader = table.step(entry["step"]).script
        raise DarkMatterError(
            f"{entry['flag']} {entry['path']} changed since scripts/{reader} read it "
            f"({_change(old.get('files') or {}, entry['files'])}): rerun scripts/{reader} and the steps after "
            f"it (run_pipeline.py redoes them), or restore the file")
    return {k: v for k, v in now.items() if k in recorded or v["step"] >= step.number}


def recorded_inputs(store: OutputStore) -> dict[str, dict[str, Any]]:
    """config.json's ``"inputs"`` (empty when it has none)."""
    try:
        recorded = store.read_json("config.json")
    except DarkMatterError:
        return {}
    got = recorded.get("inputs") if isinstance(recorded, dict) else None
    return {k: v for k, v in got.items() if isinstance(v, dict)} if isinstance(got, dict) else {}


def current_inputs(step: table.Step, cfg: Config, store: OutputStore) -> dict[str, dict[str, Any]]:
    """Today's fingerprints as :func:`inputs_for` would hand them to ``step``, without checks."""
    now = fingerprints(cfg)
    if step.number == table.steps()[0].number:
        return now
    recorded = recorded_inputs(store)
    return {k: v for k, v in now.items() if k in recorded or v["step"] >= step.number}


# ------------------------------------------------------------------------------------- inside
def check_arrays(step: table.Step, cfg: Config, store: OutputStore) -> None:
    """Every ``.npy`` that ``step`` reads: readable (header and size) and of the run's shape.

    Raises:
        DarkMatterError: the array, what is wrong, and the script that writes it.
    """
    dims = _dims(cfg, store)
    for name in step.reads:
        if not name.endswith(".npy") or not store.exists(name):
            continue
        arr = store.load_npy(name)
        want = _EXPECT.get(name)
        if want is None:
            continue
        kind, shape = want
        expect = tuple(dims.get(d) if isinstance(d, str) else d for d in shape)
        fix = f"rerun scripts/{table.producer(name)}"
        if kind is not None and arr.dtype != kind:
            raise DarkMatterError(f"{store.path(name)} is {arr.dtype}, not {np.dtype(kind)}: {fix}")
        if arr.ndim != len(expect) or any(e is not None and a != e for a, e in zip(arr.shape, expect)):
            shown = "(" + ", ".join("?" if e is None else str(e) for e in expect) + ("," * (len(expect) == 1)) + ")"
            said = "; ".join(f"{d} = {dims[d]} {_WHERE[d]}" for d in shape if isinstance(d, str) and dims.get(d))
            raise DarkMatterError(f"{store.path(name)} has shape {arr.shape} but this run expects {shown} "
                                  f"({said}): {fix}")


#: name → (dtype or None for any, shape in the run's dims: n tokens, d model, k components, r PCs)
_EXPECT: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "activations.npy": (np.float32, ("n", "d")), "residuals.npy": (np.float32, ("n", "d")),
    "token_index.npy": (np.int32, ("n", 2)), "residual_mean.npy": (None, ("d",)),
    "pca_eigenvalues.npy": (None, ("r",)), "pca_components.npy": (None, ("r", "d")),
    "ica_directions.npy": (None, ("k", "d")), "ica_unmixing.npy": (None, ("k", "d")),
    "ica_mixing.npy": (None, ("d", "k")), "ica_activations.npy": (np.float32, ("n", "k")),
    "sae_feature_moments.npy": (None, (None, None)),
}


_WHERE = {"n": "(--n-tokens)", "d": "from setup.json", "k": "from ica.json", "r": "from pca_eigenvalues.npy"}


def _dims(cfg: Config, store: OutputStore) -> dict[str, int | None]:
    """n from the config; d from setup.json, k from ica.json, r from pca_eigenvalues.npy where
    those are readable (else not checked here: the step's own reading reports them)."""
    dims: dict[str, int | None] = {"n": cfg.collect.n_tokens}

    def field(name: str, *keys: str) -> int | None:
        try:
            value: Any = store.read_json(name) if store.exists(name) else None
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
        except DarkMatterError:
            return None
        return value if type(value) is int else None

    dims["d"] = field("setup.json", "hook", "d_model")
    dims["k"] = field("ica.json", "k")
    try:
        eig = store.load_npy("pca_eigenvalues.npy") if store.exists("pca_eigenvalues.npy") else None
        dims["r"] = len(eig) if eig is not None and eig.ndim == 1 else None
    except DarkMatterError:
        dims["r"] = None
    return dims

"""The hostile-input matrix: one table of things a person (or a disk, or a second run) does to a
run's inputs, each checked the same way.

Every case breaks one thing in a copy of a small planted run (built once per module) or passes a
bad flag / a broken model, SAE or text input, runs one step in this process, and must give: exit
code 2; exactly one ``error:`` line naming the fix (the case's words); no traceback; and no new,
partial or destroyed file anywhere under the case's folder (names, sizes and mtimes of every file,
hidden staged ``.x.tmpPID.npy`` files included, are the same before and after).
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from darkmatter.pipeline import cli, table
from darkmatter.pipeline.storage.store import OutputStore

from helpers import TINY_HOOK, save_sae

SMALL = ["--preset", "planted", "--planted-d-model", "16", "--planted-features", "24", "--planted-withheld", "4",
         "--n-tokens", "6000", "--stability-splits", "1", "--causal-windows", "4", "--control", "false",
         "--completeness-runs", "0"]
#: The tiny local model run: model, hook, SAE folder and text (the conftest fixtures).
MODEL = ["--model", "{model}", "--hook-name", TINY_HOOK, "--sae-path", "{sae}", "--text-files", "{text}",
         "--context-size", "32", "--n-tokens", "800"]
LOCK_FILES = (".lock", ".lock.pid")


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile_small")
    assert cli.run_all([*SMALL, "--outputs", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` (the writer's lock files aside): a file's size and mtime,
    a folder's presence (its mtime moves when the lock file comes and goes)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if name in LOCK_FILES:
                continue
            st = path.lstat()
            out[str(path.relative_to(folder))] = (-1, 0) if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------------- breaking things
def npy(name: str, how: str) -> Callable[[Path], None]:
    """Break ``name`` in the run: truncated, random bytes, float16, wrong shape, NaN, missing."""
    def breaks(out: Path) -> None:
        path = out / name
        if how == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif how == "random":
            path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))
        elif how == "float16":
            np.save(path, np.load(path).astype(np.float16))
        elif how == "shape":
            a = np.load(path)
            np.save(path, np.zeros((a.shape[0], a.shape[1] + 1), dtype=a.dtype))
        elif how == "rows":
            np.save(path, np.load(path)[: len(np.load(path)) // 2])
        elif how == "nan":
            a = np.load(path)
            a[123, 4] = np.nan
            np.save(path, a)
        elif how == "missing":
            path.unlink()
    return breaks


def edit_json(name: str, edit: Callable[[object], object]) -> Callable[[Path], None]:
    def breaks(out: Path) -> None:
        path = out / name
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return breaks


def write_text(name: str, text: str) -> Callable[[Path], None]:
    def breaks(out: Path) -> None:
        (out / name).write_text(text)
    return breaks


def truncate_text(name: str) -> Callable[[Path], None]:
    def breaks(out: Path) -> None:
        text = (out / name).read_text()
        (out / name).write_text(text[: len(text) // 2])
    return breaks


def halve(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def remove(name: str) -> Callable[[Path], None]:
    return lambda out: (out / name).unlink()


def set_key(section: str | None, key: str, value: object) -> Callable[[object], object]:
    def edit(d):
        (d[section] if section else d)[key] = value
        return d
    return edit


def del_key(key: str) -> Callable[[object], object]:
    def edit(d):
        del d[key]
        return d
    return edit


def sae_cfg(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Copy the tiny SAE to ``<case>/sae`` and edit its cfg.json."""
    def breaks(case: Path) -> None:
        cfg = case / "sae" / "cfg.json"
        cfg.write_text(json.dumps(edit(json.loads(cfg.read_text()))))
    return breaks


def text_folder_with(extra: Callable[[Path], None]) -> Callable[[Path], None]:
    """Put something extra into the text folder (``<case>/text``)."""
    return lambda case: extra(case / "text")


# ---------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """One hostile input: ``breaks(case_folder)`` runs first (the run's copy is ``case/out``), then
    ``step`` with ``argv`` ({out}, {case}, {model}, {sae}, {text} filled in) must fail with ``words``
    in its one error line."""

    id: str
    step: int
    argv: tuple[str, ...]
    words: tuple[str, ...]
    breaks: Callable[[Path], None] | None = None
    #: the run's copy is broken (None: ``breaks`` gets the case folder)
    in_run: bool = True
    #: the step must fail before any model is loaded
    before_model: bool = False
    #: tiny model, SAE and text are copied into the case folder
    model: bool = False


OUT = ("--outputs", "{out}")
RERUN_02 = "rerun scripts/02_collect_activations.py"
RERUN_01 = "01_setup_and_load.py"
RERUN_04 = "rerun scripts/04_run_ica.py"

CASES = [
    # ---- arrays of step 02 / 04, read by later steps
    Case("npy_truncated", 3, OUT, ("residuals.npy", "{out}", RERUN_02), npy("residuals.npy", "truncate")),
    Case("npy_random_bytes", 3, OUT, ("residuals.npy", "not a readable .npy", RERUN_02),
         npy("residuals.npy", "random")),
    Case("npy_float16", 3, OUT, ("residuals.npy is float16", RERUN_02), npy("residuals.npy", "float16")),
    Case("npy_wrong_shape", 3, OUT, ("residuals.npy has shape (6000, 17)", RERUN_02), npy("residuals.npy", "shape")),
    Case("npy_nan", 3, OUT, ("NaN", RERUN_02), npy("residuals.npy", "nan")),
    Case("npy_missing", 3, OUT, ("residuals.npy is missing", "{out}", "run scripts/02_collect_activations.py"),
         npy("residuals.npy", "missing")),
    Case("npy_activations_rows", 3, OUT, ("activations.npy has shape (3000, 16)", RERUN_02),
         npy("activations.npy", "rows")),
    Case("npy_token_index_truncated", 4, OUT, ("token_index.npy", RERUN_02), npy("token_index.npy", "truncate")),
    Case("npy_ica_directions_k", 5, OUT, ("ica_directions.npy has shape", RERUN_04), npy("ica_directions.npy", "rows")),
    Case("npy_ica_activations_random", 7, OUT, ("ica_activations.npy", RERUN_04),
         npy("ica_activations.npy", "random")),
    Case("npy_pca_components_shape", 4, OUT, ("pca_components.npy", "rerun scripts/03_diagnostics.py"),
         npy("pca_components.npy", "shape")),
    # ---- config.json
    Case("config_not_json", 3, OUT, ("config.json is not valid JSON", "{out}", RERUN_01),
         write_text("config.json", "{not json")),
    Case("config_n_tokens_string", 3, OUT, ("collect.n_tokens", "'6000'", RERUN_01),
         edit_json("config.json", set_key("collect", "n_tokens", "6000"))),
    Case("config_missing", 3, OUT, ("config.json is missing", "run scripts/01_setup_and_load.py"),
         remove("config.json")),
    Case("config_list", 4, OUT, ("config.json", RERUN_01), write_text("config.json", "[1, 2]")),
    Case("config_missing_section", 5, OUT, ("config.json", "ica", RERUN_01), edit_json("config.json", del_key("ica"))),
    # ---- results JSON
    Case("ica_json_truncated", 5, OUT, ("ica.json is not valid JSON", RERUN_04), truncate_text("ica.json")),
    Case("ica_json_k_edited", 5, OUT, ("k = 20", RERUN_04), edit_json("ica.json", set_key(None, "k", 20))),
    Case("results_json_list", 4, OUT, ("diagnostics.json is not a results object", "rerun scripts/03_diagnostics.py"),
         write_text("diagnostics.json", "[1, 2, 3]")),
    Case("results_json_wrong_type", 6, OUT, ("similarity.json", "rerun scripts/05_compare_sae.py"),
         edit_json("similarity.json", lambda d: {**d, **{k: "x" for k in list(d)[2:4]}})),
    Case("setup_json_other_run", 3, OUT, ("setup.json was written by a differently configured run",
                                          "rerun scripts/01_setup_and_load.py"),
         edit_json("setup.json", set_key(None, "run_id", "0123456789ab"))),
    Case("sae_stats_other_schema", 3, OUT, ("sae_stats.json", "another version", RERUN_02),
         edit_json("sae_stats.json", set_key(None, "schema_version", 1))),
    Case("flag_contradicts_owner", 4, (*OUT, "--n-tokens", "7000"),
         ("--n-tokens 7000 contradicts", "{out}/config.json",
          "rerun scripts/02_collect_activations.py --n-tokens 7000")),
    # ---- --outputs
    Case("outputs_is_a_file_01", 1, (*SMALL, "--outputs", "{case}/afile"), ("is a file, not a folder", "{case}/afile"),
         write_text("afile", "x"), in_run=False),
    Case("outputs_is_a_file_03", 3, ("--outputs", "{case}/afile"), ("is a file, not a folder",),
         write_text("afile", "x"), in_run=False),
    Case("outputs_missing_03", 3, ("--outputs", "{case}/nowhere"),
         ("{case}/nowhere/config.json is missing", "run scripts/01_setup_and_load.py")),
    # ---- flags
    Case("n_tokens_5", 1, (*SMALL, "--n-tokens", "5", *OUT), ("--n-tokens", "≥ 80")),
    Case("n_tokens_5_at_02", 2, (*OUT, "--n-tokens", "5"), ("--n-tokens", "≥ 80")),
    Case("ica_max_tokens_10", 4, (*OUT, "--ica-max-tokens", "10"), ("--ica-max-tokens", "≥ 80")),
    Case("stability_splits_0", 4, (*OUT, "--stability-splits", "0"), ("--stability-splits must be at least 1",)),
    Case("n_top_contexts_negative", 6, (*OUT, "--n-top-contexts", "-3"), ("--n-top-contexts must be positive",)),
    Case("device_tpu", 1, (*SMALL, "--device", "tpu", *OUT), ("--device 'tpu'", "cpu")),
    Case("device_cuda_missing", 1, (*SMALL, "--device", "cuda:7", *OUT), ("--device cuda:7", "--device cpu")),
    Case("unknown_flag", 4, (*OUT, "--n-tokenz", "5"), ("unrecognized arguments: --n-tokenz",)),
    Case("bad_choice", 4, (*OUT, "--ica-backend", "jax"), ("invalid choice", "jax")),
    Case("bad_int", 2, (*OUT, "--n-tokens", "many"), ("--n-tokens", "many")),
    Case("unknown_preset", 1, ("--preset", "gpt5", *OUT), ("invalid choice", "gpt5")),
    # ---- the model, its SAE and its text (fresh outputs folder <case>/out; the run's copy is not used)
    Case("unknown_hook", 1, (*MODEL, "--hook-name", "blocks.6.hook_resid_mid_typo", *OUT),
         ("unknown hook", "blocks.6.hook_resid_mid_typo"), model=True, in_run=False),
    Case("hook_not_per_block", 1, (*MODEL, "--hook-name", "hook_embed", *OUT), ("not a per-block hook",),
         model=True, in_run=False, before_model=True),
    Case("sae_cfg_empty", 1, (*MODEL, *OUT), ("{case}/sae", "cfg.json", "d_in", "--sae-path"),
         sae_cfg(lambda c: {}), model=True, in_run=False, before_model=True),
    Case("sae_cfg_not_json", 1, (*MODEL, *OUT), ("{case}/sae", "cfg.json", "--sae-path"),
         lambda case: (case / "sae" / "cfg.json").write_text("{oops"), model=True, in_run=False, before_model=True),
    Case("sae_cfg_d_in_edited", 1, (*MODEL, *OUT), ("{case}/sae", "d_in", "--sae-path"),
         sae_cfg(lambda c: {**c, "d_in": 48}), model=True, in_run=False, before_model=True),
    Case("sae_weights_truncated", 1, (*MODEL, *OUT), ("{case}/sae", "sae_weights.safetensors", "--sae-path"),
         lambda case: halve(case / "sae" / "sae_weights.safetensors"),
         model=True, in_run=False, before_model=True),
    Case("sae_missing", 1, (*MODEL, "--sae-path", "{case}/nowhere", *OUT), ("no SAE at {case}/nowhere", "--sae-path"),
         model=True, in_run=False, before_model=True),
    Case("sae_wrong_width", 1, (*MODEL, "--sae-path", "{case}/sae48", *OUT), ("(96, 48)", "32 wide", "--sae-path"),
         lambda case: save_sae(case / "sae48", 48, 96), model=True, in_run=False),
    Case("text_glob_matches_a_folder", 1, (*MODEL, "--text-files", "{case}/text/*", *OUT),
         ("{case}/text/subdir", "not a file", "--text-files"),
         text_folder_with(lambda t: (t / "subdir").mkdir()), model=True, in_run=False, before_model=True),
    Case("text_glob_matches_nothing", 1, (*MODEL, "--text-files", "{case}/text/*.md", *OUT),
         ("matches no file", "--text-files"), model=True, in_run=False, before_model=True),
    Case("text_binary_file", 1, (*MODEL, "--text-files", "{case}/text/*", *OUT),
         ("{case}/text/ls.txt", "not UTF-8 text", "--text-files"),
         text_folder_with(lambda t: shutil.copy("/bin/ls", t / "ls.txt")), model=True, in_run=False,
         before_model=True),
    Case("text_unreadable_01_trains", 1, (*MODEL, "--sae-path", "none", "--text-files", "{case}/text/*", *OUT),
         ("{case}/text/ls.txt", "not UTF-8 text", "--text-files"),
         text_folder_with(lambda t: shutil.copy("/bin/ls", t / "ls.txt")), model=True, in_run=False,
         before_model=True),
    Case("model_folder_missing", 1, (*MODEL, "--model", "{case}/nomodel", "--model-source", "local_hooked", *OUT),
         ("{case}/nomodel", "--model"), model=True, in_run=False, before_model=True),
]



def symlinked_dashboard(out: Path) -> None:
    """dashboard/ moved beside the run and replaced by a symbolic link to it."""
    os.replace(out / "dashboard", out.parent / "dashboard_elsewhere")
    (out / "dashboard").symlink_to(out.parent / "dashboard_elsewhere")


def timings_folder(out: Path) -> None:
    (out / "timings.json").unlink()
    (out / "timings.json").mkdir()


def cached_activations(tokens: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """acts.npy (40 windows × 16 positions × 32) and toks.npy (edited by ``tokens``) in the case folder."""
    def breaks(case: Path) -> None:
        rng = np.random.default_rng(0)
        np.save(case / "acts.npy", rng.standard_normal((40, 16, 32)).astype(np.float32))
        np.save(case / "toks.npy", tokens(rng.integers(1, 400, size=(40, 16)).astype(np.int32)))
    return breaks


def damaged_arrow_cache(case: Path) -> None:
    """A SAELens activation cache (save_to_disk) whose arrow shard is cut in half."""
    from datasets import Dataset

    rng = np.random.default_rng(0)
    Dataset.from_dict({"hook": rng.standard_normal((40, 16 * 4)).astype(np.float32).tolist()}).save_to_disk(
        str(case / "cache"))
    halve(next((case / "cache").glob("*.arrow")))


def fifo_in(folder: Path) -> None:
    os.mkfifo(folder / "pipe.txt")


def user_folder(case: Path) -> None:
    (case / "thesis").mkdir()
    (case / "thesis" / "notes.txt").write_text("mine")


CACHED = ("--activations", "{case}/acts.npy", "--activation-tokens", "{case}/toks.npy", "--tokenizer", "{model}",
          "--hook-name", "cached", "--max-norm-ratio", "none", "--n-tokens", "300", *OUT)
CASES += [
    # ---- the trust review's 14 bad cases that are inputs (7-14) and its harmless ones
    Case("timings_json_is_a_folder", 3, OUT, ("timings.json", "nothing was changed"), timings_folder),
    Case("dashboard_is_a_symlink", 8, OUT, ("dashboard", "symbolic link", "nothing was changed"),
         symlinked_dashboard),
    Case("context_size_above_n_ctx", 1, (*MODEL[:-4], "--n-tokens", "800", "--context-size", "100", *OUT),
         ("--context-size 100", "n_ctx 64"), model=True, in_run=False),
    Case("negative_token_ids", 1, CACHED, ("token ids", "-1", "0 or more"),
         cached_activations(lambda t: np.where(t == t[3, 5], -1, t)), model=True, in_run=False),
    Case("token_ids_beyond_the_vocabulary", 1, CACHED, ("9999", "--tokenizer"),
         cached_activations(lambda t: np.where(t == t[3, 5], 9999, t)), model=True, in_run=False),
    Case("truncated_arrow_shard", 1, ("--activations", "{case}/cache", "--hook-name", "hook", *OUT),
         ("{case}/cache", "damaged", "cache the activations again"), damaged_arrow_cache, model=True, in_run=False),
    Case("n_tokens_beyond_the_disk", 2, (*OUT, "--n-tokens", "1000000000000"), ("no room", "MiB free")),
    Case("text_glob_matches_a_fifo", 1, (*MODEL, "--text-files", "{case}/text/*", *OUT),
         ("{case}/text/pipe.txt", "not a regular file", "--text-files"),
         text_folder_with(fifo_in), model=True, in_run=False, before_model=True),
    Case("null_draws_1", 5, (*OUT, "--null-draws", "1"), ("--null-draws 1", "at least 2 draws")),
    Case("causal_null_draws_1", 6, (*OUT, "--causal-null-draws", "1"), ("--causal-null-draws 1", "at least 2")),
    Case("outputs_empty", 1, (*SMALL, "--outputs", ""), ("--outputs is empty",)),
    Case("outputs_a_users_folder", 1, (*SMALL, "--outputs", "{case}/thesis"),
         ("{case}/thesis", "not a run's", "notes.txt"), user_folder, in_run=False),
    Case("outputs_new_nested_folders", 3, ("--outputs", "{case}/a/b/c"), ("config.json is missing",)),
]

#: Every numeric flag and a value out of its range: (flag, value, the step that owns it).
NUMERIC = [
    ("--context-size", "1", 1), ("--context-size", "-4", 1), ("--max-norm-ratio", "0.5", 1), ("--seed", "-1", 1),
    ("--sae-expansion", "0", 1), ("--sae-l0", "0", 1), ("--sae-train-tokens", "0", 1),
    ("--sae-train-samples", "-5", 1), ("--sae-lr", "0", 1), ("--sae-lr", "-0.1", 1), ("--sae-batch-size", "0", 1),
    ("--planted-d-model", "0", 1), ("--planted-features", "-1", 1), ("--planted-withheld", "-1", 1),
    ("--planted-p-fire", "0", 1), ("--planted-p-fire", "1.5", 1), ("--planted-magnitude-sigma", "-1", 1),
    ("--planted-noise", "-0.1", 1), ("--planted-threshold", "-1", 1), ("--planted-doc-length", "1", 1),
    ("--planted-doc-length", "-5", 1), ("--planted-doc-scale-sigma", "-1", 1), ("--planted-token-scale-sigma", "-1", 1),
    ("--planted-topic-share", "0", 1), ("--planted-topic-share", "1.5", 1), ("--planted-positional-features", "-1", 1),
    ("--n-tokens", "0", 2), ("--n-tokens", "-100", 2),
    ("--n-components", "1", 4), ("--n-components", "-2", 4), ("--max-components", "1", 4),
    ("--samples-per-parameter", "0", 4), ("--stability-splits", "0", 4), ("--ica-max-iter", "0", 4),
    ("--ica-tol", "0", 4), ("--ica-max-tokens", "-1", 4), ("--ica-resample", "0", 4), ("--ica-resample", "1.5", 4),
    ("--stable-cos", "0", 4), ("--stable-cos", "2", 4), ("--stable-frequency", "0", 4),
    ("--stable-frequency", "1.5", 4),
    ("--completeness-runs", "-1", 7), ("--causal-max-components", "0", 6),
    ("--null-draws", "0", 5),
    ("--n-top-contexts", "0", 6), ("--context-window", "-1", 6), ("--causal-windows", "-1", 6),
    ("--causal-null-draws", "0", 6),
    ("--batch-size", "0", 3), ("--sae-chunk-size", "0", 3), ("--sae-chunk-size", "-1", 5),
    ("--memory-gb", "-1", 4),
    ("--samples-per-parameter", "nan", 4), ("--samples-per-parameter", "inf", 4), ("--ica-tol", "nan", 4),
    ("--planted-noise", "nan", 1), ("--max-norm-ratio", "inf", 1),
]
CASES += [Case(f"range{flag}={value}", step, ((*SMALL,) if step == 1 else ()) + (flag, value, *OUT), (flag,))
          for flag, value, step in NUMERIC]


def _ids(cases):
    return [c.id for c in cases]


def check_one_error(code: int, out: str, err: str, words: tuple[str, ...]) -> str:
    """Exit 2, one ``error:`` line holding ``words``, no traceback; returns the line."""
    lines = [x for x in (out + "\n" + err).replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert code == 2, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture()
def case_folder(request, tmp_path, planted_run):
    """``tmp_path`` with ``out`` (the run's copy) and, for model cases, the tiny model's SAE and text."""
    shutil.copytree(planted_run, tmp_path / "out", symlinks=True)
    return tmp_path


def _prepare(case: Case, folder: Path, request) -> dict[str, str]:
    paths = {"out": str(folder / "out"), "case": str(folder)}
    if case.model:
        model = request.getfixturevalue("tiny_model_dir")
        sae = request.getfixturevalue("tiny_sae_dir")
        text_glob = request.getfixturevalue("text_glob")
        shutil.copytree(sae, folder / "sae")
        shutil.copytree(Path(text_glob).parent, folder / "text")
        paths.update(model=str(model), sae=str(folder / "sae"), text=str(folder / "text" / "*.txt"))
        shutil.rmtree(folder / "out")  # a fresh run
    if case.breaks is not None:
        case.breaks(folder / "out" if case.in_run else folder)
    return paths


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_hostile_input(case: Case, case_folder: Path, request, capsys, monkeypatch):
    paths = _prepare(case, case_folder, request)
    if case.before_model:
        def no_model(*args, **kwargs):
            raise AssertionError("the model was loaded before the inputs were checked")
        monkeypatch.setattr("darkmatter.sources.model_source.load_model", no_model)
    argv = [a.format(**paths) for a in case.argv]
    before = snapshot(case_folder)
    try:
        code = cli.main(case.step, argv)
    except SystemExit as exc:  # argparse's errors
        code = exc.code  # type: ignore[assignment]
    said = capsys.readouterr()
    check_one_error(code, said.out, said.err, tuple(w.format(**paths) for w in case.words))
    assert snapshot(case_folder) == before


def test_the_matrix_has_forty_cases_and_every_numeric_flag():
    from darkmatter.pipeline.config import FIELD_SECTION, Config, get

    assert len(CASES) >= 40
    numeric = {f"--{n.replace('_', '-')}" for n in FIELD_SECTION
               if isinstance(get(Config(), n), (int, float)) and not isinstance(get(Config(), n), bool)}
    numeric |= {"--n-components", "--max-components", "--ica-max-tokens", "--max-norm-ratio"}
    assert numeric <= {flag for flag, _, _ in NUMERIC}


# ------------------------------------------------------------------------ what a case table cannot do
def test_a_full_disk(planted_run, tmp_path, monkeypatch, capsys):
    """ENOSPC when step 02 reserves its memmaps, and when step 04 writes its JSON."""
    out = tmp_path / "out"
    shutil.copytree(planted_run, out)
    before = snapshot(tmp_path)

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    code = cli.main(2, ["--outputs", str(out)])
    said = capsys.readouterr()
    check_one_error(code, said.out, said.err, ("no room for activations.npy", "MiB free", str(out)))
    monkeypatch.undo()

    def no_space(self, name, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(OutputStore, "write_json", no_space)
    code = cli.main(4, ["--outputs", str(out)])
    said = capsys.readouterr()
    check_one_error(code, said.out, said.err, ("No space left on device", str(out), "pass another --outputs"))
    assert snapshot(tmp_path) == before


def _hold(folder: str, ready, release) -> None:
    with OutputStore(folder).lock("holder"):
        ready.set()
        release.wait(60)


def test_a_second_writer_holding_the_lock(planted_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(planted_run, out)
    before = snapshot(tmp_path)
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        code = cli.main(3, ["--outputs", str(out)])
        said = capsys.readouterr()
        check_one_error(code, said.out, said.err, ("being written by another run", f"pid {holder.pid}",
                                                   "pass another --outputs"))
    finally:
        release.set()
        holder.join(30)
    assert snapshot(tmp_path) == before


@contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process: chmod 555, or, for root (who ignores
    permissions), the immutable attribute (``chattr +i``: no entry can be added, removed or renamed)."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("step", [2, 3])
def test_a_read_only_outputs_folder(planted_run, tmp_path, capsys, step):
    out = tmp_path / "out"
    shutil.copytree(planted_run, out)
    before = snapshot(tmp_path)
    with read_only(out):
        code = cli.main(step, ["--outputs", str(out)])
        said = capsys.readouterr()
        after = snapshot(tmp_path)
    check_one_error(code, said.out, said.err, (str(out), "permission", "--outputs"))
    assert after == before


def test_messages_name_the_folder_read_not_the_one_config_json_recorded(planted_run, tmp_path, capsys, monkeypatch):
    """A run folder moved to ./outputs (the default) and read without --outputs: every message and
    every read is about ./outputs, never the folder config.json recorded when the run was made."""
    shutil.copytree(planted_run, tmp_path / "outputs")
    (tmp_path / "outputs" / "residuals.npy").unlink()
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code = cli.main(3, [])
    said = capsys.readouterr()
    line = check_one_error(code, said.out, said.err, ("outputs/residuals.npy is missing",
                                                      "run scripts/02_collect_activations.py"))
    assert str(planted_run) not in line
    assert snapshot(tmp_path) == before


def test_ranks_given_other_flags_are_refused_in_one_line(planted_run, tmp_path, monkeypatch, capsys):
    """Under torchrun a rank given another --n-components used to abort in C++ (exit 134): every rank's
    configuration is compared with rank 0's first."""
    from darkmatter import distributed

    out = tmp_path / "out"
    shutil.copytree(planted_run, out)
    before = snapshot(tmp_path)

    class TwoRanks(distributed.Comm):
        def gather_ints(self, values, watch=True):  # rank 1 reports another configuration's fingerprint
            return np.array([values, [v + 1 for v in values]], dtype=np.int64)

    monkeypatch.setattr("darkmatter.distributed.init_from_env", lambda device: TwoRanks(rank=0, world=2))
    code = cli.run_step(cli.table.step(4), {"outputs": str(out), "n_components": 5})
    said = capsys.readouterr()
    assert code == 2
    check_one_error(code, said.out, said.err, ("rank(s) 1 were given other flags than rank 0",))
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------- the trust review's harmless ones (not exit 2)
def _copy_run(planted_run: Path, tmp_path: Path) -> Path:
    """The run's copy, its config pointing at the copy (run_pipeline.py reuses it)."""
    out = tmp_path / "out"
    shutil.copytree(planted_run, out)
    path = out / "config.json"
    st = path.stat()
    cfg = json.loads(path.read_text())
    cfg["run"]["outputs"] = str(out)
    path.write_text(json.dumps(cfg))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as old as before: the steps stay current
    return out


def test_a_deleted_or_changed_output_is_not_current(planted_run, tmp_path, capsys):
    """run_pipeline.py checks each skipped step's files against its commit's manifest, not only the stamps."""
    run = _copy_run(planted_run, tmp_path)
    (run / "pca_components.npy").unlink()
    (run / "dashboard" / "index.html").write_text("EDITED BY HAND")
    assert cli.run_all([*SMALL, "--outputs", str(run)]) == 0
    said = capsys.readouterr().out
    skipped = [s.number for s in table.steps() if f"{s.script}: skipped" in said]
    assert skipped == [1, 2]  # 03 wrote pca_components.npy: it and every later step rerun
    assert (run / "pca_components.npy").exists()
    assert "EDITED BY HAND" not in (run / "dashboard" / "index.html").read_text()


def test_run_pipeline_on_a_run_folder_without_flags_reuses_its_configuration(planted_run, tmp_path, capsys):
    run = _copy_run(planted_run, tmp_path)
    assert cli.run_all(["--outputs", str(run)]) == 0
    said = capsys.readouterr().out
    assert f"reusing the configuration recorded in {run / 'config.json'} (preset planted" in said
    assert said.count("skipped, its outputs are current") == len(table.steps())


def test_a_second_ctrl_c_or_a_hangup_still_exits_130(planted_run, tmp_path, monkeypatch, capsys):
    run = _copy_run(planted_run, tmp_path)
    step = table.step(5)
    real = step.function()

    def interrupted_twice(ctx):
        with ctx.store.transaction():
            ctx.store.write_text("similarity.json", "half")
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)
            finally:  # the clean-up is interrupted again
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)

    before = snapshot(run)
    monkeypatch.setattr(table.Step, "function", lambda self: interrupted_twice if self.number == 5 else real)
    assert cli.run_step(step, {"outputs": str(run)}) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted: 05_compare_sae.py" in err
    assert snapshot(run) == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outputs_may_hold_version_control_placeholders(tmp_path):
    """The repository's own outputs/ holds .gitkeep: a folder with only such files counts as empty."""
    from darkmatter.pipeline.storage.folder_lock import claim

    for name in (".gitkeep", ".gitignore", ".DS_Store"):
        (tmp_path / name).write_text("")
    claim(tmp_path)  # no error
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(cli.DarkMatterError, match="notes.txt"):
        claim(tmp_path)


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bad_checkpoint_interval_is_one_line(planted_run, tmp_path, monkeypatch, capsys, value):
    out = tmp_path / "out"
    shutil.copytree(planted_run, out)
    before = snapshot(tmp_path)
    monkeypatch.setenv("DARKMATTER_CHECKPOINT_ROUNDS", value)
    code = cli.main(2, ["--outputs", str(out)])
    said = capsys.readouterr()
    check_one_error(code, said.out, said.err, ("DARKMATTER_CHECKPOINT_ROUNDS", "positive whole number"))
    assert snapshot(tmp_path) == before

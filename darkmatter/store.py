"""The outputs folder: the only code that knows file names, memmaps and atomic writes.

Steps share state only through files here. Every write goes to a temporary
name first and is renamed into place when the whole step succeeds, so a crash
never leaves a half-written or half-updated set of outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from darkmatter.errors import DarkMatterError

#: Each output file and the script that writes it (for "run X first" messages).
PRODUCER: dict[str, str] = {
    "config.json": "01_setup_and_load.py",
    "setup.json": "01_setup_and_load.py",
    "sae": "01_setup_and_load.py",
    "sae_training.json": "01_setup_and_load.py",
    "sae_history.json": "01_setup_and_load.py",
    "sae_best": "01_setup_and_load.py",
    "planted_directions.npy": "01_setup_and_load.py",
    "activations.npy": "02_collect_activations.py",
    "residuals.npy": "02_collect_activations.py",
    "tokens.npy": "02_collect_activations.py",
    "token_index.npy": "02_collect_activations.py",
    "sae_stats.json": "02_collect_activations.py",
    "sae_feature_moments.npy": "02_collect_activations.py",
    "diagnostics.json": "03_diagnostics.py",
    "residual_mean.npy": "03_diagnostics.py",
    "pca_eigenvalues.npy": "03_diagnostics.py",
    "pca_components.npy": "03_diagnostics.py",
    "residual_kurtosis.png": "03_diagnostics.py",
    "residual_pca.png": "03_diagnostics.py",
    "ica.json": "04_run_ica.py",
    "ica_directions.npy": "04_run_ica.py",
    "ica_activations.npy": "04_run_ica.py",
    "ica_mixing.npy": "04_run_ica.py",
    "ica_unmixing.npy": "04_run_ica.py",
    "similarity.json": "05_compare_sae.py",
    "groundtruth.json": "05_compare_sae.py",
    "groundtruth_recovery.png": "05_compare_sae.py",
    "ica_sae_similarity.png": "05_compare_sae.py",
    "interpretations.json": "06_interpret.py",
    "components.md": "06_interpret.py",
    "statistics.json": "07_statistics.py",
    "ica_vs_sae_kurtosis.png": "07_statistics.py",
    "ica_dark_matter_results.json": "08_save_report.py",
    "report.md": "08_save_report.py",
    "timings.json": "any numbered script",
    "layers_summary.json": "run_pipeline.py --layers",
    "layers_summary.md": "run_pipeline.py --layers",
    "planted_sweep.json": "sweep_planted.py",
    "planted_sweep.md": "sweep_planted.py",
    "planted_sweep.png": "sweep_planted.py",
}

PLOT_DPI = 150


class OutputStore:
    """Read and write the files of one run in ``root``.

    Writes made inside :meth:`transaction` land together when it exits
    cleanly and are deleted when it raises.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self._pending: list[tuple[Path, Path]] | None = None

    # ---- paths -----------------------------------------------------------------
    def path(self, name: str) -> Path:
        if name not in PRODUCER:
            raise KeyError(f"{name} is not a known output file")
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def require(self, *names: str) -> None:
        """Raise DarkMatterError naming the script to run when any input is missing."""
        for name in names:
            if not self.exists(name):
                raise DarkMatterError(
                    f"{self.path(name)} is missing: run scripts/{PRODUCER[name]} first "
                    f"(with --outputs {self.root})")

    # ---- transactions ----------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[OutputStore]:
        """Stage every write; rename all into place on success, delete all on error."""
        if self._pending is not None:
            raise RuntimeError("transactions do not nest")
        self.root.mkdir(parents=True, exist_ok=True)
        self._pending = []
        self._discarded: list[Path] = []
        try:
            yield self
            self._commit()
        finally:
            for tmp, _ in self._pending:
                _remove(tmp)
            self._pending = None

    def _commit(self) -> None:
        assert self._pending is not None
        for path in self._discarded:
            _remove(path)
        while self._pending:
            tmp, final = self._pending[0]
            if final.is_dir() and not final.is_symlink():
                old = final.with_name(f".{final.name}.old{os.getpid()}")
                os.replace(final, old)  # a directory cannot be replaced in one rename
                os.replace(tmp, final)
                _remove(old)
            else:
                os.replace(tmp, final)
            self._pending.pop(0)

    def discard(self, name: str) -> None:
        """Delete ``name`` when the transaction commits (an output this run no longer makes)."""
        if self._pending is None:
            raise RuntimeError("discard must happen inside store.transaction()")
        self._discarded.append(self.path(name))

    def _staged(self, name: str) -> Path:
        final = self.path(name)
        stem, dot, ext = final.name.partition(".")
        tmp = final.with_name(f".{stem}.tmp{os.getpid()}{dot}{ext}")
        _remove(tmp)
        if self._pending is None:
            raise RuntimeError("writes must happen inside store.transaction()")
        self._pending.append((tmp, final))
        return tmp

    # ---- writers ---------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        self._staged(name).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")

    def write_text(self, name: str, text: str) -> None:
        self._staged(name).write_text(text)

    def save_npy(self, name: str, array: np.ndarray) -> None:
        with open(self._staged(name), "wb") as fh:
            np.save(fh, array)

    def open_npy(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        """A writable memmap of ``shape``; it becomes ``name`` when the transaction commits."""
        return open_memmap(self._staged(name), mode="w+", dtype=dtype, shape=shape)

    def save_figure(self, name: str, fig: Any) -> None:
        """Save a matplotlib figure at 150 DPI and close it."""
        import matplotlib.pyplot as plt

        fig.savefig(self._staged(name), dpi=PLOT_DPI, bbox_inches="tight", format="png")
        plt.close(fig)

    def staged_dir(self, name: str) -> Path:
        """A fresh folder that replaces ``name`` (e.g. ``sae``) on commit."""
        tmp = self._staged(name)
        tmp.mkdir(parents=True)
        return tmp

    def record_timing(self, script: str, entry: dict[str, float]) -> None:
        """Set ``script``'s entry in timings.json (atomic read-modify-write, outside transactions)."""
        path = self.path("timings.json")
        timings = json.loads(path.read_text()) if path.exists() else {}
        timings[script] = entry
        tmp = path.with_name(f".timings.tmp{os.getpid()}.json")
        tmp.write_text(json.dumps(dict(sorted(timings.items())), indent=2) + "\n")
        os.replace(tmp, path)

    # ---- readers ---------------------------------------------------------------
    def read_json(self, name: str) -> Any:
        self.require(name)
        return json.loads(self.path(name).read_text())

    def load_npy(self, name: str, mmap: bool = True) -> np.ndarray:
        """The array in ``name``, memory-mapped read-only unless ``mmap`` is False."""
        self.require(name)
        return np.load(self.path(name), mmap_mode="r" if mmap else None)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")

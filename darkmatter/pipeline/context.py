"""What a step gets: the config, the store, its table row, and checked access to earlier results.

:class:`StepContext` is the glue every ``sNN_*.run(ctx)`` uses: typed results read back with
their ``run_id`` checked against the current config (stale files are refused with the script
to rerun), writes stamped with this step's ``run_id``, the run's source of activations and its
SAE, and memmapped arrays checked against the recorded shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import source_kinds, table
from darkmatter.pipeline.config import Config
from darkmatter.pipeline.resolve import run_id
from darkmatter.pipeline.results import RESULT_FILES, SCHEMA_VERSION
from darkmatter.pipeline.storage.store import OutputStore
from darkmatter.sources.base import ActivationSource

T = TypeVar("T")
STAMPS = ("schema_version", "run_id")


def open_source(cfg: Config, device: str) -> ActivationSource:
    """The run's source of activations, built by its registered kind
    (:mod:`darkmatter.pipeline.source_kinds`); nothing heavy is loaded until the source needs it."""
    return source_kinds.of(cfg).open(cfg, device)


@dataclass
class StepContext:
    """One step's view of the run."""

    cfg: Config
    store: OutputStore
    step: table.Step
    #: fingerprints of the local inputs (:func:`darkmatter.pipeline.inputs.inputs_for`); in run_id
    inputs: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def device(self) -> str:
        return self.cfg.resolved_device()

    @cached_property
    def source(self) -> ActivationSource:
        return open_source(self.cfg, self.device)

    # ---- typed results --------------------------------------------------------------------
    def read(self, cls: type[T], name: str | None = None) -> T:
        """The typed result of an earlier step, checked against the current config.

        Args:
            cls: the result's dataclass; name: its file (default: :data:`RESULT_FILES`).
        Raises:
            DarkMatterError: missing, from another version of the tool, or written by a
                differently configured run (the message names the script to rerun).
        """
        name = name or RESULT_FILES[cls]
        result, stamps = self.store.read_result(name, cls, STAMPS)
        producer = table.producer_step(name)
        if stamps.get("schema_version") != SCHEMA_VERSION:
            raise DarkMatterError(f"{self.store.path(name)} was written by another version of this tool "
                                  f"(schema {stamps.get('schema_version')}, now {SCHEMA_VERSION}): rerun "
                                  f"scripts/{producer.script} and the steps after it")
        if stamps.get("run_id") != run_id(self.cfg, producer.number, self.inputs):
            raise DarkMatterError(f"{self.store.path(name)} was written by a differently configured run: "
                                  f"rerun scripts/{producer.script} and the steps after it")
        if name == "ica.json":
            self._check_ica_arrays(result.k)  # type: ignore[attr-defined]
        return result

    def _check_ica_arrays(self, k: int) -> None:
        """Step 04's arrays must have the k its ica.json records (a hand-edited or mixed-up file
        would otherwise flow into every later figure)."""
        expect = {"ica_directions.npy": 0, "ica_unmixing.npy": 0, "ica_mixing.npy": 1, "ica_activations.npy": 1}
        for name, axis in expect.items():
            if self.store.exists(name):
                shape = self.store.load_npy(name).shape
                if len(shape) != 2 or shape[axis] != k:
                    raise DarkMatterError(f"{self.store.path(name)} has shape {shape} but ica.json records k = {k}: "
                                          f"rerun scripts/{table.producer('ica.json')}")

    def write(self, result: Any, name: str | None = None) -> None:
        """Stage a typed result (a dataclass) as ``name`` (default: :data:`RESULT_FILES`), stamped
        with the schema version and this step's run_id."""
        self.store.write_result(name or RESULT_FILES[type(result)], result, schema_version=SCHEMA_VERSION,
                                run_id=run_id(self.cfg, self.step.number, self.inputs))

    def exists(self, cls: type, name: str | None = None) -> bool:
        return self.store.exists(name or RESULT_FILES[cls])

    def __post_init__(self) -> None:
        if self.step.records_config:  # config.json lands with the step's outputs when it changed
            self.store.config_record = self.config_record()

    def config_record(self) -> dict[str, Any]:
        """config.json's content: the config's sections and the inputs' fingerprints (``"inputs"``)."""
        return {**self.cfg.to_dict(), "inputs": self.inputs}

    def discard_unless(self, made: set[str], *names: str) -> None:
        """Inside a transaction: delete outputs ``names`` this run did not make (left by an
        earlier, differently configured run)."""
        for name in names:
            if name not in made and self.store.exists(name):
                self.store.discard(name)

    # ---- the SAE ----------------------------------------------------------------------------
    def sae(self, staged: Path | None = None) -> Any:
        """The run's SAE: pretrained (``--sae-release``), a folder (``--sae-path``) or the run's own
        ``sae/`` (trained or brought by the source; ``staged`` while step 01 writes it)."""
        from darkmatter.sources.saes import load_sae

        s = self.cfg.source
        if s.sae_release is not None:
            return load_sae(self.device, release=s.sae_release, sae_id=s.sae_id)
        if s.sae_path is not None:
            return load_sae(self.device, path=s.sae_path,
                            missing_fix="check --sae-path (a folder written by SAE.save_model)")
        return load_sae(self.device, path=staged or self.store.path("sae"),
                        missing_fix=f"run scripts/{table.producer('sae')} first")

    def sae_source(self) -> str:
        """The SAE's name for reports: its release/id, or its folder relative to the working
        directory where it lies below it (never a machine's absolute path where avoidable)."""
        s = self.cfg.source
        if s.sae_release:
            return f"{s.sae_release}/{s.sae_id}"
        import os

        path = Path(s.sae_path) if s.sae_path else self.store.path("sae")
        try:
            rel = os.path.relpath(path)
        except ValueError:  # another drive (Windows)
            rel = "../.."
        return rel if not rel.startswith(f"..{os.sep}..") and rel != "../.." else f"{path.parent.name}/{path.name}"

    def units(self) -> tuple[np.ndarray, str]:
        """The resampling unit of every analysed row (``"document"``, else ``"window"`` or ``"row"``), as
        the source reads step 02's ``token_index.npy`` and ``tokens.npy`` (``ActivationSource.units``)."""
        tokens = self.store.load_npy("tokens.npy", mmap=False) if self.store.exists("tokens.npy") else None
        return self.source.units(self.store.load_npy("token_index.npy", mmap=False), tokens)

    # ---- arrays -----------------------------------------------------------------------------
    def arrays(self, *names: str, d_model: int) -> list[np.ndarray]:
        """Memmaps of step 02's float arrays, checked to be [n_tokens, d_model].

        Raises:
            DarkMatterError: missing, or of another shape (rerun step 02).
        """
        out = [self.store.load_npy(name) for name in names]
        n = self.cfg.collect.n_tokens
        for name, arr in zip(names, out):
            if arr.dtype != np.float32:
                raise DarkMatterError(f"{self.store.path(name)} is {arr.dtype}, not float32: rerun "
                                      f"scripts/{table.producer(name)}")
            if arr.shape != (n, d_model):
                raise DarkMatterError(f"{self.store.path(name)} has shape {arr.shape} but this run expects "
                                      f"({n}, {d_model}): rerun scripts/{table.producer(name)}")
        return out

    def moments(self, array: Any, name: str, chunk: int, with_cov: bool = True) -> Any:
        """Streamed moments of ``array`` (summed over the ranks of a sharded run); NaN/inf becomes a
        DarkMatterError naming its producer."""
        from darkmatter.analysis import stats
        from darkmatter.distributed import SINGLE, current

        comm = current() if self.step.sharded else SINGLE
        try:
            return stats.streaming_moments(array, chunk, with_cov=with_cov, desc=f"moments of {name}", comm=comm)
        except ValueError as exc:
            fix = f"rerun scripts/{table.producer(name)}" if name in table.known_files() else "report a bug"
            raise DarkMatterError(f"{name} is unusable ({exc}): {fix} and check the model/SAE") from exc

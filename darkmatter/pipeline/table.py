"""The step table: every pipeline step declared once.

A :class:`Step` names its number, script, module, what it reads and writes, and the config
sections it owns. Everything that lists steps derives from :func:`steps`: the command line of
each script (its help and the flag-ownership rule), the store's map from file to producing
script (the "run X first" messages), the ``run_id`` stamps, ``run_pipeline.py``, the report's
step table and the end-to-end test. Adding a step is one module with a ``run(ctx)`` function,
one :func:`register` call (a row below) and a three-line script in ``scripts/``.

This module imports nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    Attributes:
        number: position in the pipeline (1-based).
        name: the script is ``f"{number:02d}_{name}.py"``.
        module: importable module with ``run(ctx: StepContext) -> None``.
        summary: one line: what the step does (its ``--help`` description).
        reads: files of earlier steps it always needs; a missing one stops the step before any
            work with the script that writes it.
        writes: files and folders it writes (optional ones included).
        owns: config sections it owns (see :mod:`darkmatter.pipeline.config`): it may change
            their fields; a later step refuses a contradicting value. A step that owns a section
            rewrites ``config.json`` when one of its fields changed (:attr:`records_config`).
        sharded: its row passes are spread over the ranks of a torchrun world; rank 0 runs the
            other steps alone.
        resumable: an interrupted run resumes from its last checkpoint.
    """

    number: int
    name: str
    module: str
    summary: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    owns: tuple[str, ...] = ()
    sharded: bool = False
    resumable: bool = False

    @property
    def script(self) -> str:
        return f"{self.number:02d}_{self.name}.py"

    @property
    def records_config(self) -> bool:
        """The step writes ``config.json``: the first step creates it, an owner of a section
        rewrites it when one of the section's fields changed."""
        return bool(self.owns) or self is first()

    def function(self) -> Callable[[Any], None]:
        """The step's ``run(ctx)`` (imported on first use)."""
        return importlib.import_module(self.module).run


_STEPS: dict[int, Step] = {}
#: the run's recorded config, written by the first step and rewritten by the owners of sections
CONFIG_FILE = "config.json"
#: every step's wall clock and peak memory, committed with the step
TIMINGS_FILE = "timings.json"

#: Files written outside the numbered steps, and what writes them.
OTHER_PRODUCERS: dict[str, str] = {
    TIMINGS_FILE: "any numbered script",
    "autointerp.json": "autointerp.py (optional)",
    "layers_summary.json": "run_pipeline.py --layers",
    "layers_summary.md": "run_pipeline.py --layers",
    "layers_summary.png": "run_pipeline.py --layers",
    "planted_sweep.json": "sweep_planted.py",
    "planted_sweep.md": "sweep_planted.py",
    "planted_sweep.png": "sweep_planted.py",
}


def register(step: Step) -> Step:
    """Add a step. Raises ValueError if its number, name or an output is already taken."""
    taken = {f for s in _STEPS.values() for f in s.writes}
    if step.number in _STEPS or any(s.name == step.name for s in _STEPS.values()):
        raise ValueError(f"step {step.number} ({step.name}) is already registered")
    if taken & set(step.writes) or set(OTHER_PRODUCERS) & set(step.writes):
        raise ValueError(f"step {step.script} writes files another producer owns: "
                         f"{sorted((taken | set(OTHER_PRODUCERS)) & set(step.writes))}")
    _STEPS[step.number] = step
    return step


@contextmanager
def registered(step: Step) -> Iterator[Step]:
    """Register ``step`` for the duration of a block (tests and plug-ins)."""
    register(step)
    try:
        yield step
    finally:
        del _STEPS[step.number]


def steps() -> list[Step]:
    """Every step, in order."""
    return [_STEPS[n] for n in sorted(_STEPS)]


def first() -> Step:
    """The first step: it starts a run from the preset and the flags (later steps from config.json)."""
    return _STEPS[min(_STEPS)]


def last() -> Step:
    """The last step."""
    return _STEPS[max(_STEPS)]


def sharded_steps() -> list[Step]:
    """Steps whose row passes are spread over the ranks of a torchrun world; rank 0 runs the others alone."""
    return [s for s in steps() if s.sharded]


def step(number: int) -> Step:
    """Step ``number``. Raises KeyError if there is none."""
    return _STEPS[number]


def producer(name: str) -> str:
    """The script that writes output ``name``. Raises KeyError for an unknown file."""
    for s in _STEPS.values():
        if name in s.writes:
            return s.script
    return OTHER_PRODUCERS[name]


def producer_step(name: str) -> Step:
    """The step that writes output ``name``. Raises KeyError if no step does."""
    for s in _STEPS.values():
        if name in s.writes:
            return s
    raise KeyError(f"no step writes {name}")


def owner(section: str) -> Step | None:
    """The step that owns config section ``section`` (None: shared by every step)."""
    for s in _STEPS.values():
        if section in s.owns:
            return s
    return None


def known_files() -> set[str]:
    """Every output file or folder any producer writes."""
    return {f for s in _STEPS.values() for f in s.writes} | set(OTHER_PRODUCERS)


# ------------------------------------------------------------------------------------- the table
register(Step(
    1, "setup_and_load", "darkmatter.pipeline.steps.s01_setup",
    "Report the environment, open the source of activations, load or train the SAE, check the hook "
    "and W_dec shapes; write config.json and setup.json.",
    reads=(),
    writes=(CONFIG_FILE, "setup.json", "sae", "sae_best", "sae_training.json", "sae_history.json",
            "planted_directions.npy"),
    owns=("source", "training", "planted")))
register(Step(
    2, "collect_activations", "darkmatter.pipeline.steps.s02_collect",
    "Activations at the hook → SAE reconstruction in chunks → residual, streamed to memmaps.",
    reads=("config.json", "setup.json"),
    writes=("activations.npy", "residuals.npy", "tokens.npy", "token_index.npy", "sae_stats.json",
            "sae_feature_moments.npy", "shards.json", "shards"),
    owns=("collect",), sharded=True, resumable=True))
register(Step(
    3, "diagnostics", "darkmatter.pipeline.steps.s03_diagnostics",
    "FVU, per-dimension excess kurtosis against a Gaussian surrogate with the document design effect, "
    "the full PCA spectrum of the residual; the decision-point verdict.",
    reads=("config.json", "setup.json", "sae_stats.json", "activations.npy", "residuals.npy", "token_index.npy"),
    writes=("diagnostics.json", "amplitude.json", "residual_mean.npy", "pca_eigenvalues.npy", "pca_components.npy",
            "residual_kurtosis.png", "residual_pca.png"),
    sharded=True))
register(Step(
    4, "run_ica", "darkmatter.pipeline.steps.s04_ica",
    "The k sweep; at each k, PCA-whitening, FastICA over seeds (restarts on disjoint document halves), "
    "matching across document splits, the matched control (norm-matched elliptical surrogate) with the same "
    "optimisation and the noise-floor test; sources for "
    "every token at the chosen k; artifact flags.",
    reads=("config.json", "setup.json", "sae_stats.json", "diagnostics.json", "residuals.npy",
           "residual_mean.npy", "pca_eigenvalues.npy", "pca_components.npy", "token_index.npy"),
    writes=("ica.json", "ica_directions.npy", "ica_activations.npy", "ica_mixing.npy", "ica_unmixing.npy"),
    owns=("ica",), sharded=True))
register(Step(
    5, "compare_sae", "darkmatter.pipeline.steps.s05_compare",
    "Max |cos| of the ICA directions and every baseline to the SAE decoder rows, raw and projected into "
    "the whitened subspace, against the matched null (random rotations there); the candidate rule; "
    "ground truth where the source has one.",
    reads=("config.json", "setup.json", "ica.json", "ica_directions.npy", "pca_components.npy",
           "pca_eigenvalues.npy"),
    writes=("similarity.json", "ica_sae_similarity.png", "groundtruth.json", "groundtruth_recovery.png"),
    owns=("compare",)))
register(Step(
    6, "interpret", "darkmatter.pipeline.steps.s06_interpret",
    "The linear/nonlinear split of the residual (Engels et al. 2024) and ICA of its nonlinear part; causal "
    "tests on held-out text (splice, add back against PCA and the matched null at equal variance, ablation, "
    "logit effect); the feature bank (examples one per document, histogram, logit lens, nearest SAE "
    "features, verdicts, causal figures) and its index components.md.",
    reads=("config.json", "setup.json", "sae_stats.json", "ica.json", "similarity.json",
           "activations.npy", "residuals.npy", "token_index.npy", "ica_activations.npy",
           "ica_directions.npy", "ica_unmixing.npy", "ica_mixing.npy", "residual_mean.npy", "pca_components.npy",
           "pca_eigenvalues.npy"),
    writes=("linear_split.json", "causal.json", "causal_topm.png", "feature_bank.json", "components.md",
            "components.csv", "components.parquet"),
    owns=("interpret",)))
register(Step(
    7, "statistics", "darkmatter.pipeline.steps.s07_statistics",
    "Excess kurtosis of ICA sources against SAE features like for like, beside the matched control; the "
    "detection limit (injection–recovery).",
    reads=("config.json", "setup.json", "sae_stats.json", "ica.json", "ica_activations.npy", "sae_feature_moments.npy",
           "activations.npy", "residuals.npy", "residual_mean.npy", "pca_eigenvalues.npy", "pca_components.npy",
           "token_index.npy"),
    writes=("statistics.json", "ica_vs_sae_kurtosis.png", "completeness.json", "completeness.png"),
    owns=("completeness",)))
register(Step(
    8, "save_report", "darkmatter.pipeline.steps.s08_report",
    "Aggregate every step's results into ica_dark_matter_results.json and report.md; the static dashboard "
    "(dashboard/index.html); the ICA components as an SAELens SAE of the residual (ica_sae/).",
    reads=("config.json", "setup.json", "sae_stats.json", "diagnostics.json", "ica.json", "similarity.json",
           "feature_bank.json", "statistics.json", "ica_unmixing.npy", "ica_mixing.npy", "residual_mean.npy",
           "activations.npy"),
    writes=("ica_dark_matter_results.json", "report.md", "dashboard", "ica_sae")))

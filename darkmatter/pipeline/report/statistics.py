"""The registry of key statistics: each figure the report states, beside the same figure on its null.

A :class:`Statistic` reads the results document (:class:`~darkmatter.pipeline.results.document.Results`)
and gives its value on this run, the value on its null (or reference) and which null that is, in
words. ``report.md``'s "Key figures against their nulls" table and the dashboard's list are
:func:`rows` of the registry; neither names a statistic. A new statistic is one
:func:`register_statistic` call (here, or in a module that imports this one) and its test
(``tests/pipeline/test_statistics_registry.py`` registers a dummy and finds it in both pages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from darkmatter.analysis.directions import ICA
from darkmatter.pipeline.results.document import Results


@dataclass(frozen=True)
class Statistic:
    """One key figure.

    Attributes:
        name: a unique key.
        label: what is measured, in words (the table's first column).
        value: ``Results -> str | None``: the run's figure, formatted (None: not measured in this run).
        null: ``Results -> str | None``: the same figure on its null or reference (None: none ran;
            "—": the figure has no null of its own, and ``null_name`` says how to read it).
        null_name: ``Results -> str``: which null, in words (same subspace, sample size, optimisation).
    """

    name: str
    label: str
    value: Callable[[Results], str | None]
    null: Callable[[Results], str | None]
    null_name: Callable[[Results], str]


@dataclass(frozen=True)
class Row:
    """A statistic as shown: label, this run's value, the null's value, which null."""

    name: str
    label: str
    value: str
    null: str
    null_name: str


_STATISTICS: dict[str, Statistic] = {}


def register_statistic(stat: Statistic) -> Statistic:
    """Add ``stat`` (shown after those registered before it). Raises ValueError when its name is taken."""
    if stat.name in _STATISTICS:
        raise ValueError(f"statistic {stat.name!r} is already registered")
    _STATISTICS[stat.name] = stat
    return stat


@contextmanager
def registered_statistic(stat: Statistic) -> Iterator[Statistic]:
    """Register ``stat`` for the duration of a ``with`` block (tests)."""
    register_statistic(stat)
    try:
        yield stat
    finally:
        del _STATISTICS[stat.name]


def statistics() -> list[Statistic]:
    """Every registered statistic, in order."""
    return list(_STATISTICS.values())


def rows(r: Results) -> list[Row]:
    """The registered statistics of ``r`` that the run measured (a None value is left out)."""
    shown = []
    for s in statistics():
        value = s.value(r)
        if value is not None:
            null = s.null(r)
            shown.append(Row(s.name, s.label, value, "not run" if null is None else null, s.null_name(r)))
    return shown


# ------------------------------------------------------------------------------ the built-in ones
def _effective(r: Results) -> str:
    d = r.diagnostics
    return (f"a Gaussian at the effective sample size ({d.effective_tokens:,.0f} tokens, design effect "
            f"{d.design_effect:.2f} of the residual's per-dimension kurtosis; the ICA sources' own, "
            f"{r.ica.design_effect:.2f}, serves their floor test): ±2 SE")


def _control(r: Results) -> str:
    return ("the matched control: a norm-matched elliptical surrogate of the whitened residual (each token keeps "
            "its norm and document, its direction is random) through the same FastICA seeds and restarts"
            + ("" if r.noise_floor is not None else " (not run)"))


def _null_set(r: Results) -> str:
    return (f"the matched null: random rotations in the same whitened {r.similarity.k}-subspace "
            f"({r.similarity.null_draws} draws)")


register_statistic(Statistic(
    "residual_kurtosis", "median per-dimension excess kurtosis of the residual",
    value=lambda r: f"{r.diagnostics.residual_excess_kurtosis.median:.3f}",
    null=lambda r: f"±{2 * r.diagnostics.kurtosis_standard_error_effective:.3f}",
    null_name=_effective))
register_statistic(Statistic(
    "stable_components", "stable ICA components (of k)",
    value=lambda r: f"{r.ica.n_stable} of {r.ica.k}",
    null=lambda r: None if r.noise_floor is None else f"{r.noise_floor.control_n_stable} of {r.ica.k}",
    null_name=_control))
register_statistic(Statistic(
    "max_source_kurtosis", "largest |excess kurtosis| of a settled ICA source",
    value=lambda r: (f"{max(abs(c.excess_kurtosis) for c in r.components if c.settled):.3f}"
                     if any(c.settled for c in r.components) else None),
    null=lambda r: (None if r.noise_floor is None
                    else f"{r.noise_floor.control_max_abs_source_excess_kurtosis:.3f}"),
    null_name=_control))
register_statistic(Statistic(
    "mean_max_cos", "mean max |cos| of the ICA directions to the SAE decoder rows",
    value=lambda r: f"{r.similarity.sets[ICA].mean_max_abs_cos:.3f}" if ICA in r.similarity.sets else None,
    null=lambda r: f"{r.similarity.against_null.null_mean:.3f}",
    null_name=_null_set))
register_statistic(Statistic(
    "candidates", "dark-matter candidates",
    value=lambda r: str(len(r.candidate_dark_matter_components)),
    null=lambda r: "—",
    null_name=lambda r: "none: the candidate rule compares every component with the matched null and the "
    "control; read the count against the " + (r.detection_limit or "detection limit (not measured)")))

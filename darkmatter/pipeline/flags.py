"""The command line: one parser per script, built by simple_parsing from the config sections.

:func:`parse` returns only the flags the user typed (flat field name → value); how they
resolve into a :class:`~darkmatter.pipeline.config.Config` is :mod:`darkmatter.pipeline.resolve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from simple_parsing import ArgumentParser, DashVariant

from darkmatter.pipeline import table
from darkmatter.pipeline.config import FIELD_SECTION, SECTIONS, Config


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Parser(ArgumentParser):
    """simple_parsing's parser with one-line errors, titled groups and other steps' flags hidden."""

    hidden: tuple[str, ...] = ()
    titles: dict[str, str] = {}

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def format_help(self) -> str:
        self._preprocessing(args=[], namespace=None)  # simple_parsing adds its actions lazily
        for group in self._action_groups:
            dest = next((d for d in SECTIONS if f"['{d}']" in (group.title or "")), None)
            if dest is None:
                continue
            if dest in self.hidden:
                for action in group._group_actions:
                    action.help = argparse.SUPPRESS
                group.title = group.description = None
            else:
                group.title = self.titles.get(dest, group.title)
                group.description = None
        return super().format_help()


@dataclass(frozen=True)
class PipelineOptions:
    """Options of run_pipeline.py only."""

    layers: str | None = None
    """comma-separated block indices (e.g. 0,6,11): one run per layer into <outputs>/layer_LL, tabulated
    in layers_summary.md"""
    force: bool = False
    """rerun every step, also those whose outputs are current (same run_id, newer than their inputs)"""


def _section_title(section: str) -> str:
    owner = table.owner(section)
    doc = (SECTIONS[section].__doc__ or section).strip().rstrip(".")
    return f"{doc} — " + (f"owned by {owner.script}" if owner else "shared by every step")


def build_parser(step: table.Step | None, prog: str | None = None) -> _Parser:
    """The parser of one script (``step``), or of ``run_pipeline.py`` (``step=None``).

    Help shows the sections ``step`` owns first, then the shared ``run`` section; other steps'
    flags are accepted but hidden (step 01 and run_pipeline.py show every section).
    """
    steps = table.steps()
    description = step.summary if step else (
        "Run steps " + ", ".join(s.script for s in steps) + " in order with the same flags; stop at the "
        "first failure.")
    own = step.owns if step else ()
    order = list(own) + ["run"] + [s for s in SECTIONS if s not in own and s != "run"]
    shows_all = step is None or step.number == 1
    epilog = None if shows_all else (
        "Flags owned by other steps are accepted too and checked against <outputs>/config.json: a value "
        "that contradicts an earlier step's stops with the script to rerun. scripts/run_pipeline.py --help "
        "lists every flag.")
    parser = _Parser(prog=prog or (step.script if step else "run_pipeline.py"), description=description,
                     epilog=epilog, add_option_string_dash_variants=DashVariant.DASH, add_config_path_arg=False,
                     allow_abbrev=False)
    parser.hidden = () if shows_all else tuple(s for s in SECTIONS if s not in own and s != "run")
    parser.titles = {s: _section_title(s) for s in SECTIONS}
    defaults = Config()
    for section in order:
        parser.add_arguments(SECTIONS[section], dest=section, default=getattr(defaults, section))
    if step is None:
        parser.add_arguments(PipelineOptions, dest="pipeline")
    return parser


def _typed(argv: list[str]) -> set[str]:
    """Flat names of the config fields the user typed (``--x v``, ``--x=v``, ``--nox``)."""
    names = {}
    for name in FIELD_SECTION:
        names[flag(name)] = name
        names["--no" + name.replace("_", "-")] = name
    typed = set()
    for token in argv:
        if token == "--":
            break
        key = token.split("=", 1)[0]
        if key in names:
            typed.add(names[key])
    return typed


@dataclass(frozen=True)
class Parsed:
    """A parsed command line: the config fields typed (flat name → value) and run_pipeline's options."""

    given: dict[str, Any]
    pipeline: PipelineOptions = dataclasses.field(default_factory=PipelineOptions)


def parse(argv: list[str], step: table.Step | None, prog: str | None = None) -> Parsed:
    """Parse ``argv`` for ``step`` (None: run_pipeline.py). Exits 2 with one line on a bad flag."""
    parser = build_parser(step, prog)
    ns = parser.parse_args(argv)
    given = {name: getattr(getattr(ns, FIELD_SECTION[name]), name) for name in _typed(argv)}
    return Parsed(given=given, pipeline=getattr(ns, "pipeline", PipelineOptions()))

"""The command line: one parser per script, built by simple_parsing from the config sections.

:func:`parse` returns only the flags the user typed (flat field name → value); how they
resolve into a :class:`~darkmatter.pipeline.config.Config` is :mod:`darkmatter.pipeline.resolve`.

Only simple_parsing's and argparse's public API is used: each section is added with
``ArgumentParser.add_arguments(cls, dest=section, dataclass_wrapper_class=...)`` (the documented
hook for how a dataclass's group is generated: here its title), and ``--help`` is printed by
``print_help`` (where simple_parsing adds a dataclass's arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from simple_parsing import ArgumentParser, DashVariant
from simple_parsing.wrappers import DataclassWrapper

from darkmatter.pipeline import table
from darkmatter.pipeline.config import FIELD_SECTION, SECTIONS, Config


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class ScriptParser(ArgumentParser):
    """simple_parsing's parser whose errors are one line: ``error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


@dataclass(frozen=True)
class PipelineOptions:
    """Options of run_pipeline.py only."""

    layers: str | None = None
    """comma-separated block indices (e.g. 0,6,11): one run per layer into <outputs>/layer_LL, tabulated
    in layers_summary.md"""
    force: bool = False
    """rerun every step, also those whose outputs are current (same run_id, newer than their inputs)"""
    until: int | None = None
    """the last step to run (e.g. 4: collect and decompose, no report yet); default: every step"""


PIPELINE = "pipeline"
"""Destination of :class:`PipelineOptions` in run_pipeline.py's namespace."""


def section_title(section: str) -> str:
    """The --help title of a section's group: its docstring and the step that owns it."""
    if section == PIPELINE:
        return (PipelineOptions.__doc__ or section).strip().rstrip(".")
    owner = table.owner(section)
    doc = (SECTIONS[section].__doc__ or section).strip().rstrip(".")
    return f"{doc} — " + (f"owned by {owner.script}" if owner else "shared by every step")


class SectionGroup(DataclassWrapper):
    """A section's argument group titled by :func:`section_title`, with no description under it.

    simple_parsing's default title is the class name and destination (``ICAOptions ['ica']``) with the
    class docstring below; ``add_arguments(..., dataclass_wrapper_class=SectionGroup)`` replaces both.
    """

    @property
    def title(self) -> str:
        return section_title(self.name)

    @property
    def description(self) -> str | None:  # type: ignore[override]  # argparse: None = no description
        return None


def _section_parser(sections: Sequence[str], prog: str, *, description: str | None, epilog: str | None,
                    add_help: bool, pipeline: bool) -> ScriptParser:
    """A parser with one group per section in ``sections`` (+ run_pipeline's options when ``pipeline``)."""
    parser = ScriptParser(prog=prog, description=description, epilog=epilog, add_help=add_help,
                          add_option_string_dash_variants=DashVariant.DASH, add_config_path_arg=False,
                          allow_abbrev=False)
    defaults = Config()
    for section in sections:
        parser.add_arguments(SECTIONS[section], dest=section, default=getattr(defaults, section),
                             dataclass_wrapper_class=SectionGroup)
    if pipeline:
        parser.add_arguments(PipelineOptions, dest=PIPELINE, dataclass_wrapper_class=SectionGroup)
    return parser


class _PrintOwnHelp(argparse.Action):
    """``-h/--help`` of a parser that accepts every section: print the help of the step's own ones, exit 0."""

    def __init__(self, option_strings: list[str], dest: str, shown: ScriptParser, help: str | None = None) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)
        self.shown = shown

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        self.shown.print_help()
        parser.exit()


@dataclass(frozen=True)
class CommandLine:
    """One script's command line.

    ``shown`` holds the sections the step owns, then the shared ``run`` section: its ``--help`` is
    the script's. ``accepted`` holds every section (other steps' flags are accepted and checked
    against config.json by :mod:`darkmatter.pipeline.resolve`); its ``-h/--help`` prints ``shown``'s
    help. The first step and run_pipeline.py show every section: the two are one parser.
    """

    shown: ScriptParser
    accepted: ScriptParser

    def format_help(self) -> str:
        """The text ``--help`` prints."""
        out = io.StringIO()
        self.shown.print_help(file=out)
        return out.getvalue()

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        """Namespace with one dataclass instance per section (``ns.ica.n_components``); exits 2 with one
        line on a bad flag, 0 after printing --help."""
        return self.accepted.parse_args(list(argv))


def build_parser(step: table.Step | None, prog: str | None = None) -> CommandLine:
    """The command line of one script (``step``), or of ``run_pipeline.py`` (``step=None``).

    Help shows the sections ``step`` owns first, then the shared ``run`` section; other steps'
    flags are accepted but not shown (the first step and run_pipeline.py show every section).
    """
    steps = table.steps()
    prog = prog or (step.script if step else "run_pipeline.py")
    description = step.summary if step else (
        "Run steps " + ", ".join(s.script for s in steps) + " in order with the same flags; stop at the "
        "first failure.")
    own = list(step.owns) if step else []
    order = own + ["run"] + [s for s in SECTIONS if s not in own and s != "run"]
    if step is None or step.number == table.first().number:
        parser = _section_parser(order, prog, description=description, epilog=None, add_help=True,
                                 pipeline=step is None)
        return CommandLine(shown=parser, accepted=parser)
    epilog = ("Flags owned by other steps are accepted too and checked against <outputs>/config.json: a value "
              "that contradicts an earlier step's stops with the script to rerun. scripts/run_pipeline.py --help "
              "lists every flag.")
    shown = _section_parser(own + ["run"], prog, description=description, epilog=epilog, add_help=True,
                            pipeline=False)
    accepted = _section_parser(order, prog, description=description, epilog=epilog, add_help=False,
                               pipeline=False)
    accepted.add_argument("-h", "--help", action=_PrintOwnHelp, shown=shown, help="show this help message and exit")
    return CommandLine(shown=shown, accepted=accepted)


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
    ns = build_parser(step, prog).parse_args(argv)
    given = {name: getattr(getattr(ns, FIELD_SECTION[name]), name) for name in _typed(argv)}
    return Parsed(given=given, pipeline=getattr(ns, PIPELINE, PipelineOptions()))

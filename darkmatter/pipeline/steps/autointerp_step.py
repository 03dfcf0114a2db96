"""Optional auto-interpretation (``scripts/autointerp.py``): explain each component from its top
examples in feature_bank.json (step 06) and score the explanation by detection
(:mod:`darkmatter.analysis.autointerp`; Bills et al. 2023, Paulo et al. 2024). Writes autointerp.json.

The explainer and judge are an LLM chosen by ``DARKMATTER_LLM`` (:mod:`darkmatter.sources.llm`; off by
default) or, with ``--baseline``, the deterministic token baseline (not an LLM). Not a numbered step:
nothing else requires it; the report may show autointerp.json when it exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from darkmatter.analysis.autointerp import (
    NULL_OTHER,
    NULL_WORDS,
    ComponentExamples,
    Context,
    Interpretation,
    Interpreter,
    TokenBaseline,
    interpret_components,
    mean_balanced_accuracy,
)
from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import table
from darkmatter.pipeline.config import as_flags
from darkmatter.sources.llm import ENV, client_from_env

FILE = "autointerp.json"
BANK = "feature_bank.json"
#: Version of autointerp.json's layout.
SCHEMA_VERSION = 1
METHOD = ("detection (Paulo et al. 2024, EleutherAI delphi) of explanations from top-activating examples "
          "(Bills et al. 2023): even-rank top examples explained, odd-rank held out as activating; "
          "non-activating = quantile samples at q <= 0.5, then other components' top examples, as many")


@dataclass(frozen=True)
class AutoInterpResult:
    """autointerp.json: each component's explanation and detection score.

    Attributes:
        run_id: of the feature bank it read (None if the bank has none).
        interpreter: who explained and judged (``token_baseline``, ``openai:<model>``, ``module:callable``);
            is_llm: False for the token baseline.
        method: the scoring, in words; null: what each component's null is, in words; seed: of the shuffles.
        n_scored: components scored; mean_balanced_accuracy, mean_null_balanced_accuracy: over them.
        n_above: scored components whose balanced accuracy is at least ``threshold`` (0.75).
        components: one per component interpreted, in component order.
    """

    run_id: str | None
    interpreter: str
    is_llm: bool
    method: str
    null: str
    seed: int
    n_scored: int
    mean_balanced_accuracy: float | None
    mean_null_balanced_accuracy: float | None
    threshold: float
    n_above: int
    components: list[Interpretation]


def _context(example: Mapping[str, Any]) -> Context:
    tokens, values = example.get("tokens"), example.get("values")
    return Context(context=str(example["context"]), activation=float(example["activation"]),
                   token=str(example.get("token", "")), unit=example.get("unit"), quantile=example.get("quantile"),
                   tokens=None if tokens is None else tuple(tokens), values=None if values is None else tuple(values),
                   at=example.get("at"))


def read_bank(outputs: Path) -> tuple[str | None, list[ComponentExamples]]:
    """The run_id and each component's examples from ``outputs/feature_bank.json``.

    Raises:
        DarkMatterError: it is missing or not a feature bank.
    """
    path = Path(outputs) / BANK
    if not path.is_file():
        raise DarkMatterError(f"no {BANK} in {outputs}: run scripts/{table.producer(BANK)} first")
    try:
        bank = json.loads(path.read_text())
        entries = [ComponentExamples(component=int(c["component"]), candidate=bool(c.get("candidate", False)),
                                     top=tuple(_context(e) for e in c["top"]),
                                     quantiles=tuple(_context(e) for e in c.get("quantiles") or ()))
                   for c in bank["components"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DarkMatterError(f"{path} is not a feature bank ({type(exc).__name__}: {exc}): "
                              f"rerun scripts/{table.producer(BANK)}") from None
    return bank.get("run_id"), entries


def choose(bank: Sequence[ComponentExamples], max_components: int | None) -> list[int]:
    """Positions in ``bank`` to interpret: candidates first, then the rest, each in component order;
    the first ``max_components`` of them (all when None), returned in component order."""
    order = sorted(range(len(bank)), key=lambda i: (not bank[i].candidate, bank[i].component))
    picked = order if max_components is None else order[:max_components]
    return sorted(picked, key=lambda i: bank[i].component)


def run(outputs: Path, client: Interpreter, max_components: int | None = None, seed: int = 0,
        threshold: float = 0.75, log: Callable[[str], None] | None = None) -> AutoInterpResult:
    """Explain and score the components of ``outputs/feature_bank.json`` with ``client``; write
    ``outputs/autointerp.json`` atomically (a temporary file in the folder, then ``os.replace``).

    Raises:
        DarkMatterError: no feature bank, a bad ``max_components``, or the client's own errors.
    """
    if max_components is not None and max_components < 1:
        raise DarkMatterError(f"--max-components {max_components}: give at least 1")
    run_id, bank = read_bank(outputs)
    found = interpret_components(bank, client, choose(bank, max_components), seed, log)
    scored = [c for c in found if c.detection is not None]
    accuracies = [c.detection.balanced_accuracy for c in scored if c.detection is not None]
    nulls = {c.null_kind for c in scored}
    result = AutoInterpResult(
        run_id=run_id, interpreter=client.name, is_llm=bool(client.is_llm), method=METHOD,
        null="; ".join(NULL_WORDS[k] for k in sorted(nulls)) or "none", seed=seed, n_scored=len(scored),
        mean_balanced_accuracy=mean_balanced_accuracy(accuracies),
        mean_null_balanced_accuracy=mean_balanced_accuracy([c.null_balanced_accuracy for c in scored]),
        threshold=threshold, n_above=sum(a is not None and a >= threshold for a in accuracies), components=found)
    write_atomic(Path(outputs) / FILE, {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(result)})
    return result


def write_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary_line(result: AutoInterpResult | Mapping[str, Any]) -> str:
    """One line for the report: who interpreted, the mean detection balanced accuracy and its null
    (``result``: the dataclass, or autointerp.json as read)."""
    d = dataclasses.asdict(result) if isinstance(result, AutoInterpResult) else result
    who = d["interpreter"] + ("" if d["is_llm"] else " (not an LLM)")
    kind = ("other components' explanations" if any(c["null_kind"] == NULL_OTHER for c in d["components"])
            else "chance")
    return (f"auto-interpretation by {who}: {d['n_scored']} component(s) scored by detection, mean balanced "
            f"accuracy {_fmt(d['mean_balanced_accuracy'])} (null, {kind}: "
            f"{_fmt(d['mean_null_balanced_accuracy'])}); {d['n_above']} at or above {d['threshold']:.2f}")


def read_current(outputs: Path, run_id: str | None = None) -> dict[str, Any] | None:
    """``outputs/autointerp.json`` as read, or None when it is missing, unreadable, or (given
    ``run_id``) made from another run's feature bank."""
    path = Path(outputs) / FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError):
        return None
    if not isinstance(data, dict) or (run_id is not None and data.get("run_id") != run_id):
        return None
    return data


def read_summary(outputs: Path, run_id: str | None = None) -> str | None:
    """:func:`summary_line` of ``outputs/autointerp.json``; None when it is missing, unreadable, or
    (given ``run_id``) from another run's feature bank."""
    data = read_current(outputs, run_id)
    try:
        return None if data is None else summary_line(data)
    except (KeyError, TypeError, AttributeError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/autointerp.py``; returns the exit code (0 ok or no client, 2 user error)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"Choose the LLM with {ENV}=openai (DARKMATTER_LLM_URL, "
                                     "DARKMATTER_LLM_MODEL, DARKMATTER_LLM_API_KEY or OPENAI_API_KEY) or "
                                     f"{ENV}=module:callable; unset, nothing runs unless --baseline.")
    parser.add_argument("--outputs", default="outputs", help="the run's outputs folder (default: outputs)")
    parser.add_argument("--max-components", type=int, default=None,
                        help="interpret at most this many components, candidates first (default: all)")
    parser.add_argument("--baseline", action="store_true",
                        help="use the deterministic token baseline (not an LLM) instead of DARKMATTER_LLM")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        client = TokenBaseline() if args.baseline else client_from_env()
        if client is None:
            print(f"autointerp: no LLM client ({ENV} is unset; set it to openai or module:callable, or pass "
                  "--baseline for the token baseline): nothing written")
            return 0
        result = run(Path(args.outputs), client, args.max_components,
                     log=None if not client.is_llm else lambda line: print(line, flush=True))
    except DarkMatterError as exc:
        print(f"error: {as_flags(str(exc))}", file=sys.stderr)
        return 2
    print(summary_line(result))
    print(f"wrote {Path(args.outputs) / FILE}")
    return 0

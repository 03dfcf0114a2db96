"""Markdown tables and escaping (report.md, components.md, the README's generated blocks).

Text that comes from data (contexts, tokens, paths, folder names, descriptions) goes through
:func:`esc` or :func:`code`, so no corpus can put live HTML or markdown into a page: the probe
``<img src=x onerror=alert(1)>`` renders as those characters in any CommonMark renderer.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any


def _one_line(text: Any) -> str:
    return " ".join(str(text).replace("\r", "\n").split("\n"))


def esc(text: Any) -> str:
    """``text`` as markdown text that renders literally: one line, ``& < >`` as entities,
    markdown punctuation backslash-escaped."""
    return re.sub(r"([\\`*_\[\]|~!<>#])", r"\\\1", html.escape(_one_line(text), quote=False).replace("&lt;", "\x00")
                  .replace("&gt;", "\x01")).replace("\x00", "&lt;").replace("\x01", "&gt;")


def code(text: Any) -> str:
    """An inline code span of ``text`` that no backtick inside it can close (CommonMark: a longer
    fence), on one line, with table pipes escaped; HTML inside a code span is never live."""
    t = _one_line(text).replace("|", "\\|")
    run = max((len(m) for m in re.findall(r"`+", t)), default=0)
    fence = "`" * (run + 1)
    pad = " " if run or t.startswith(" ") or t.endswith(" ") else ""
    return f"{fence}{pad}{t}{pad}{fence}"


def token(text: str) -> str:
    """A model token as an inline code span in double quotes (JSON escapes), so a leading space,
    a newline or a tab is visible: ``" the"``, ``"\\n"``."""
    return code(json.dumps(text, ensure_ascii=False))


def _cell(x: Any) -> str:
    """A table cell: pipes inside it (|cos|) escaped unless they already are."""
    return re.sub(r"(?<!\\)\|", r"\\|", str(x))


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)

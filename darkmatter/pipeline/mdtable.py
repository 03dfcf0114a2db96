"""Markdown tables (report.md, components.md, the README's generated blocks)."""

from __future__ import annotations

import re
from typing import Any


def _cell(x: Any) -> str:
    """A table cell: pipes inside it (|cos|) escaped unless they already are."""
    return re.sub(r"(?<!\\)\|", r"\\|", str(x))


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)

"""What step 08 (and a rerun of the pipeline that found every step current) prints last: the
headline, then the verdict, then the paths to open, so the paths are the last lines on screen."""

from __future__ import annotations

from pathlib import Path

from darkmatter.pipeline.results.document import Results

OPEN = (("report", "report.md"), ("dashboard", "dashboard/index.html"), ("components table", "components.csv"),
        ("ICA components as an SAELens SAE", "ica_sae"))
"""What a reader opens, by the file's name in the run folder (shown only where it exists)."""


def path_lines(results: Results, root: Path) -> list[str]:
    """One ``"<what>: <path>"`` line per existing output of :data:`OPEN`, then the plots."""
    width = max(len(what) for what, _ in OPEN)
    lines = [f"{what + ':':<{width + 1}} {root / name}" for what, name in OPEN if (root / name).exists()]
    plots = [p for p in results.plots if (root / p).exists()]
    if plots:
        lines.append(f"{'plots:':<{width + 1}} {root}/{{{','.join(plots)}}}")
    return lines


def closing_lines(results: Results, root: Path, headline: bool = True) -> list[str]:
    """The console's last lines for a finished run.

    Args:
        results: the run's results document (ica_dark_matter_results.json).
        root: the run folder (``--outputs``); headline: also print the headline's figures first.
    Returns:
        list[str]: the headline (indented), a blank line, the verdict lines, a blank line, then one
        ``"<what>: <path>"`` line per existing output and the plots.
    """
    lines = [f"  {line}" for line in results.headline] + [""] if headline else []
    lines += [*results.answer, ""] if results.answer else []
    return lines + path_lines(results, root)

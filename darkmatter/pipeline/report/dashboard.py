"""Step 08's static dashboard: ``outputs/dashboard/index.html`` and one page per component.

Built from the feature bank (and the causal table) with jinja2 templates
(``darkmatter/pipeline/report/templates``); CSS and the few lines of JavaScript (table sorting) are
inlined into every page, so it opens from disk with no server and no network. The layout follows
sae_dashboard's and Neuronpedia's feature pages: histogram, logit tables, top/bottom/quantile
contexts with the active token marked and every token's value on hover, nearest SAE features.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from darkmatter.pipeline.results import BankEntry, CausalResult, Example, FeatureBank, Histogram

if TYPE_CHECKING:
    from darkmatter.pipeline.report.statistics import Row

TEMPLATES = Path(__file__).with_name("templates")
#: Neuronpedia feature pages (``{id}`` = "<model>/<sae set>/<feature>").
NEURONPEDIA = "https://www.neuronpedia.org/{id}"


def histogram_bars(h: Histogram, width: int = 340, height: int = 150) -> dict[str, Any]:
    """SVG geometry of a histogram with a log₁₀(count + 1) height (heavy tails stay visible).

    Returns:
        {"bars": [(x, y, w, h, lo, hi, count)], "width", "height", "ticks": [(x, label)], "zero": x of 0 or None}.
    """
    lo, hi = h.edges[0], h.edges[-1]
    span = (hi - lo) or 1.0
    top = max(math.log10(c + 1) for c in h.counts) or 1.0
    bw = width / len(h.counts)
    bars = []
    for i, c in enumerate(h.counts):
        bh = height * math.log10(c + 1) / top
        bars.append((round(i * bw, 2), round(height - bh, 2), round(bw, 2), round(bh, 2),
                     h.edges[i], h.edges[i + 1], c))
    ticks = [(round(width * (v - lo) / span, 1), f"{v:.1f}") for v in (lo, (lo + hi) / 2, hi)]
    zero = round(width * (0 - lo) / span, 1) if lo < 0 < hi else None
    return {"bars": bars, "width": width, "height": height, "ticks": ticks, "zero": zero}


def token_spans(e: Example, scale: float) -> list[dict[str, Any]]:
    """One span per context token: text, hover title, background colour (orange above 0, blue below,
    opacity ∝ |value| / ``scale``) and whether it is the marked token."""
    if e.tokens is None or e.values is None:
        return [{"text": e.context, "title": "", "style": "", "active": False}]
    out = []
    for i, (tok, v) in enumerate(zip(e.tokens, e.values)):
        if v is None:
            style, title = "", f"{tok!r}: not analysed (BOS or massive activation)"
        else:
            a = min(abs(v) / scale, 1.0) if scale > 0 else 0.0
            rgb = "255,140,0" if v >= 0 else "30,110,255"
            style, title = f"background: rgba({rgb},{a:.2f})", f"{tok!r}: {v:+.3f}"
        out.append({"text": tok.replace("\n", "↵"), "title": title, "style": style, "active": i == e.at})
    return out


def _scale(c: BankEntry) -> float:
    vals = [abs(e.activation) for e in c.top + c.bottom]
    return max(vals) if vals else 1.0


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v, d=1: "–" if v is None or v != v else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=2: "–" if v is None or v != v else f"{v:.{d}f}"
    env.filters["sortkey"] = lambda v: "" if v is None or v != v else f"{v:.6g}"
    env.filters["tok"] = lambda t: json.dumps(t, ensure_ascii=False)  # quoted, whitespace visible
    return env


def render(bank: FeatureBank, causal: CausalResult | None, headline: list[str], title: str,
           autointerp: dict[str, Any] | None = None, key_figures: list[Row] | None = None) -> dict[str, str]:
    """Every page of the dashboard: {relative path: HTML}.

    Args:
        headline: the report's one-line findings (shown on the index); title: the run, in words.
        autointerp: autointerp.json as read (``scripts/autointerp.py``), or None.
        key_figures: the registered statistics beside their nulls (:func:`statistics.rows`), on the index.
    """
    explained = {c["component"]: c for c in autointerp["components"]} if autointerp else {}
    env = _environment()
    css = (TEMPLATES / "dashboard.css").read_text()
    js = (TEMPLATES / "dashboard.js").read_text()
    pages = {"index.html": env.get_template("index.html.j2").render(
        bank=bank, causal=causal, headline=headline, title=title, css=css, js=js, key_figures=key_figures)}
    for i, c in enumerate(bank.components):
        scale = _scale(c)
        sections = [(name, [(e, token_spans(e, scale)) for e in examples])
                    for name, examples in (("Top activations (one per document)", c.top),
                                           ("Bottom activations (one per document)", c.bottom),
                                           ("Quantile samples", c.quantiles))]
        links = {f.feature: NEURONPEDIA.format(id=f.neuronpedia) for f in c.nearest_sae_features if f.neuronpedia}
        pages[f"components/{c.component}.html"] = env.get_template("component.html.j2").render(
            bank=bank, c=c, causal=causal, sections=sections, hist=histogram_bars(c.histogram), links=links,
            prev=bank.components[i - 1].component if i > 0 else None,
            next=bank.components[i + 1].component if i + 1 < len(bank.components) else None,
            title=title, css=css, js=js, auto=autointerp, explained=explained.get(c.component))
    return pages

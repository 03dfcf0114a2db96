"""Step 08's static dashboard: ``outputs/dashboard/index.html`` and one page per component.

Built from the feature bank (and the causal table) with jinja2 templates
(``darkmatter/pipeline/report/templates``); CSS and the few lines of JavaScript (table sorting, the
search box and the candidates-only filter) are inlined into every page, so it opens from disk with no
server and no network. The index opens with the run's verdict. The layout follows sae_dashboard's and
Neuronpedia's feature pages: histogram (log counts with a Gaussian of the same mean and s.d.), logit
tables, top/bottom/quantile contexts with the active token marked and every token's value on hover,
nearest SAE features. Tokens show spaces, newlines and undecodable bytes as labels (:func:`token_text`);
every page ends with the abbreviations and symbols it shows (:func:`glossary`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from html import unescape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from darkmatter.pipeline.report.verdict import label_and_text
from darkmatter.pipeline.results import BankEntry, CausalResult, Example, FeatureBank, Histogram

if TYPE_CHECKING:
    from darkmatter.pipeline.report.statistics import Row

TEMPLATES = Path(__file__).with_name("templates")
#: Neuronpedia feature pages (``{id}`` = "<model>/<sae set>/<feature>").
NEURONPEDIA = "https://www.neuronpedia.org/{id}"


def _nice_step(span: float, target: int = 6) -> float:
    """A round tick step (1, 2 or 5 × 10ⁿ) that cuts ``span`` into about ``target`` pieces."""
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _count_label(v: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if v >= size:
            return f"{v // size}{suffix}"
    return str(v)


def histogram_moments(h: Histogram) -> tuple[float, float]:
    """(mean, s.d.) of the histogram's tokens from the bin midpoints, the variance less Sheppard's
    correction w²/12 for the grouping (bins of width w; the uncorrected one where that leaves nothing).
    The sources have mean 0 and s.d. 1, which this recovers to about 0.01."""
    n = sum(h.counts) or 1
    mids = [(a + b) / 2 for a, b in zip(h.edges, h.edges[1:])]
    mean = sum(c * m for c, m in zip(h.counts, mids)) / n
    var = sum(c * (m - mean) ** 2 for c, m in zip(h.counts, mids)) / n
    w = (h.edges[-1] - h.edges[0]) / len(h.counts)
    corrected = var - w * w / 12
    return mean, math.sqrt(corrected if corrected > 0 else var)


def histogram_bars(h: Histogram, width: int = 340, height: int = 150) -> dict[str, Any]:
    """SVG geometry of a histogram (bins of equal width) on a log scale, log₁₀(count + 1), so that heavy
    tails stay visible, with a Gaussian of the same mean and s.d. drawn over it: the expected count
    per bin, N · w · φ((x − mean) / s.d.) / s.d., on the same scale.

    The y axis runs to the next power of ten above the largest count (or the Gaussian's peak).

    Returns:
        {"bars": [(x, y, w, h, lo, hi, count)], "width", "height" (of the plot area),
        "ticks": [(x, label)] (x axis, round values), "yticks": [(y, label)] (0, 1, 10, 100, … tokens),
        "gauss": the Gaussian's SVG path, "mean", "sd", "n": tokens, "zero": x of 0 or None}.
    """
    lo, hi = h.edges[0], h.edges[-1]
    span = (hi - lo) or 1.0
    n = sum(h.counts)
    mean, sd = histogram_moments(h)
    bin_width = span / len(h.counts)

    def expected(x: float) -> float:  # the Gaussian's count per bin at x
        if sd <= 0:
            return 0.0
        return n * bin_width * math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))

    peak = max(max(h.counts), expected(mean) if lo <= mean <= hi else 0.0, 1.0)
    decades = max(1, math.ceil(math.log10(peak) - 1e-9))
    top = math.log10(10 ** decades + 1)

    def y(count: float) -> float:
        return round(height - height * math.log10(count + 1) / top, 2)

    def x(v: float) -> float:
        return round(width * (v - lo) / span, 1)

    bw = width / len(h.counts)
    bars = []
    for i, c in enumerate(h.counts):
        bars.append((round(i * bw, 2), y(c), round(bw, 2), round(height - y(c), 2), h.edges[i], h.edges[i + 1], c))
    step = _nice_step(span)
    first = math.ceil(lo / step - 1e-9)
    values = [round(v * step, 10) for v in range(first, math.floor(hi / step + 1e-9) + 1)]
    ticks = [(x(v), f"{v:g}") for v in values]
    every = max(1, math.ceil((decades + 1) / 6))  # at most about six labelled decades
    yticks = [(y(0), "0")] + [(y(10 ** d), _count_label(10 ** d)) for d in range(0, decades + 1, every)]
    points = [lo + span * i / 240 for i in range(241)]
    gauss = "M" + " L".join(f"{x(v)},{y(expected(v))}" for v in points)
    zero = x(0) if lo < 0 < hi else None
    return {"bars": bars, "width": width, "height": height, "ticks": ticks, "yticks": yticks, "gauss": gauss,
            "mean": round(mean, 2) + 0.0, "sd": sd, "n": n, "zero": zero}  # + 0.0: no "-0.00"


#: How characters that would be invisible or unreadable are shown in a token (the exact string is in its tooltip).
SHOWN = {"\n": "↵", "\t": "⇥", "\ufffd": "<0x??>"}


def _char(ch: str) -> str:
    o = ord(ch)
    if ch in SHOWN:
        return SHOWN[ch]
    if o < 32 or o == 127 or 0x80 <= o < 0xA0:  # control characters: their byte
        return f"<0x{o:02X}>"
    return ch


def token_text(tok: str, standalone: bool = True) -> tuple[str, bool]:
    """A token as shown: newline ↵, tab ⇥, another control character as its byte (``<0x08>``), and
    U+FFFD, what a tokenizer's single-token decode gives for a byte of a multi-byte UTF-8 character
    (byte-level BPE), as ``<0x??>`` (the source's ``decode`` keeps no byte value). ``standalone`` (a token
    on its own, as in the logit tables): leading and trailing spaces as ␣ and the empty token as ∅; in a
    context spaces stay spaces.

    Returns:
        (text, special: whether it shows a byte label).
    """
    text = "".join(_char(ch) for ch in tok)
    special = any(_char(ch).startswith("<0x") for ch in tok)
    if standalone:
        body = text.strip(" ")
        lead, trail = len(text) - len(text.lstrip(" ")), len(text) - len(text.rstrip(" "))
        text = "␣" * lead + body + "␣" * (trail if body else 0) if text else "∅"
    return text, special


def token_title(tok: str) -> str:
    """The hover text of a token: its exact string, escaped (``" Basic"``, ``"\\n"``), the code points of
    characters beyond Latin (a font may lack them: ``U+679C``), and what a byte label or planted marker means."""
    title = json.dumps(tok, ensure_ascii=False)
    wide = [f"U+{ord(ch):04X}" for ch in tok if ord(ch) > 0x24F and ch not in SHOWN]
    if wide:
        title += " · " + " ".join(wide)
    if re.fullmatch(r"f\d+\*", tok):
        title += f" · {DARK}"
    elif re.fullmatch(r"f\d+@", tok):
        title += f" · {POSITIONAL}"
    if "\ufffd" in tok:
        title += (" · <0x??>: a byte of a multi-byte UTF-8 character; decoded alone it is U+FFFD and the "
                  "source keeps no byte value")
    return title


def token_html(tok: str) -> Any:
    """A standalone token as a boxed span (the ``tok`` filter): text as :func:`token_text` shows it,
    its exact string on hover."""
    from markupsafe import Markup, escape

    text, special = token_text(tok)
    cls = "tk sp" if special else "tk"
    return Markup(f'<span class="{cls}" title="{escape(token_title(tok))}">{escape(text)}</span>')


def token_spans(e: Example, scale: float) -> list[dict[str, Any]]:
    """One span per context token: text (:func:`token_text` in a context), hover title, background colour
    (orange above 0, blue below, opacity ∝ |value| / ``scale``), whether it is the marked token and
    whether it holds a byte label."""
    if e.tokens is None or e.values is None:
        return [{"text": e.context, "title": "", "style": "", "active": False, "special": False}]
    out = []
    for i, (tok, v) in enumerate(zip(e.tokens, e.values)):
        name = token_title(tok)
        if v is None:
            style, title = "", f"{name}: not analysed (BOS or massive activation)"
        else:
            a = min(abs(v) / scale, 1.0) if scale > 0 else 0.0
            rgb = "255,140,0" if v >= 0 else "30,110,255"
            style, title = f"background: rgba({rgb},{a:.2f})", f"{name}: {v:+.3f}"
        text, special = token_text(tok, standalone=False)
        out.append({"text": text, "title": title, "style": style, "active": i == e.at, "special": special})
    return out


def _scale(c: BankEntry) -> float:
    vals = [abs(e.activation) for e in c.top + c.bottom]
    return max(vals) if vals else 1.0


#: Abbreviations and symbols, each explained once at the foot of every page that shows it:
#: (what is shown, a pattern that finds it in the page's prose, what it means). Tokens and contexts
#: (class ``tk`` / ``ctx``) are not searched: a token "p" is no p-value.
GLOSSARY: tuple[tuple[str, str, str], ...] = (
    ("ICA", r"\bICA\b", "independent component analysis (FastICA), here on the SAE's residual x − SAE(x)"),
    ("SAE", r"\bSAE\b", "sparse autoencoder; SAE(x) = x̂ is its reconstruction of the activation x at the hook"),
    ("FVU", r"\bFVU\b", "fraction of variance unexplained by the SAE's reconstruction"),
    ("L0", r"\bL0\b", "mean number of active SAE latents per token"),
    ("PCA", r"\bPCA\b", "principal component analysis"),
    ("k", r"\bk ?=|\bk sweep\b|\bk ≤|-subspace|\bof k\b",
     "the number of ICA components (the dimension of the whitened subspace)"),
    ("n_eff", r"\bn_eff\b", "effective sample size: tokens / design effect (tokens of one unit are dependent)"),
    ("s.d.", r"\bs\.d\.", "standard deviation (the sources have unit variance, so their values are in s.d.)"),
    ("±", r"±|\bSE\b",
     "one standard error, SE (over the resampling unit named beside it), unless a range is given"),
    ("KL", r"\bKL\b", "Kullback–Leibler divergence KL(clean ‖ edited) of the next-token distribution"),
    ("cos", r"\bcos\b", "cosine similarity; |cos| its absolute value"),
    ("p", r"\bp\b", "one-sided p-value"),
    ("z", r"\bz =", "z-score: the difference divided by its standard error"),
    ("m", r"\bm\b", "how many components (or equal-variance baseline parts) are put back at once"),
    ("Holm", r"\bHolm", "Holm's step-down correction for testing several components at once"),
    ("BOS", r"\bBOS\b", "beginning-of-sequence token (never analysed)"),
    ("W_U", r"\bW U\b", "the model's unembedding matrix; the logit lens is direction · W_U"),
    ("q", r"\bq\d\.\d\d\b", "q0.90: the quantile of the source this sample stands for"),
    ("✓", r"✓", "closes at least the minimum share of the gap and beats its matched null after Holm's correction"),
    ("μ, σ", r"μ = ", "mean and standard deviation of the histogram's tokens"),
)
#: What a planted source's rows and tokens are called (``PlantedSource.row_contexts``): "f17*:1.52".
DARK = "a dark feature, one the SAE does not know (it lands in the residual)"
POSITIONAL = "a positional feature (fires on fixed positions: an artifact, not dark matter)"
#: Token labels (:func:`token_text`) and planted feature names, searched in tokens and contexts too.
TOKEN_LABELS: tuple[tuple[str, str, str], ...] = (
    ("␣", "␣", "a leading or trailing space of a token shown on its own (in contexts spaces are plain)"),
    ("×n", r" ×\d", "after a token in a list: how often it is the token at the component's top activations"),
    ("↵", "↵", "a newline"), ("⇥", "⇥", "a tab"), ("∅", "∅", "the empty token"),
    ("<0x08>", r"<0x[0-9A-F]{2}>", "a control character, as its byte"),
    ("<0x??>", r"<0x\?\?>", "a byte of a multi-byte UTF-8 character: decoded alone the token is U+FFFD, and the "
                            "source keeps no byte value (hover for the exact string)"),
    ("f17", r"\bf\d+[*@]?(:\d| ×\d)",
     "planted true feature 17; in a row's context f17:1.52 means it is active at magnitude 1.52 (largest first)"),
    ("f17*", r"\bf\d+\*(:\d| ×\d)", f"* after a planted feature: {DARK}"),
    ("f17@", r"\bf\d+@(:\d| ×\d)", f"@ after a planted feature: {POSITIONAL}"),
)
_UNSEARCHED = re.compile(r'<(style|script)\b.*?</\1>|<span class="tk[^"]*"[^>]*>.*?</span>'
                         r'|<(td|div) class="ctx"[^>]*>.*?</\2>', re.S)


def glossary(html: str) -> list[tuple[str, str]]:
    """The abbreviations, symbols and token labels a rendered page shows, with their meanings
    (:data:`GLOSSARY`, then :data:`TOKEN_LABELS`)."""
    text = unescape(re.sub(r"<[^>]+>", " ", _UNSEARCHED.sub(" ", html)))
    found = [(term, meaning) for term, pattern, meaning in GLOSSARY if re.search(pattern, text)]
    shown = unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)))
    return found + [(label, meaning) for label, pattern, meaning in TOKEN_LABELS if re.search(pattern, shown)]


def _with_glossary(html: str) -> str:
    from markupsafe import escape

    items = "; ".join(f"<b>{escape(term)}</b> {escape(meaning)}" for term, meaning in glossary(html))
    block = (f'<div class="card glossary" id="glossary"><h2>Abbreviations and symbols</h2><p>{items}.</p></div>'
             if items else "")
    return html.replace("<!--glossary-->", block)


def example_unit(bank: FeatureBank) -> str:
    """What the bank's examples are one per: ``"row"`` when every example's unit is its row (a source
    with no documents or windows), ``"window"`` when it is its window, else ``"document"``."""
    examples = [e for c in bank.components for e in (*c.top, *c.bottom, *c.quantiles) if e.unit is not None]
    if examples and all(e.row is not None and e.unit == e.row for e in examples):
        return "row"
    if examples and all(e.window is not None and e.unit == e.window for e in examples):
        return "window"
    return "document"


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v, d=1: "–" if v is None or v != v else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=2: "–" if v is None or v != v else f"{v:.{d}f}"
    env.filters["sortkey"] = lambda v: "" if v is None or v != v else f"{v:.6g}"
    env.filters["tok"] = token_html  # a boxed span; spaces, newlines and bytes visible
    return env


def render(bank: FeatureBank, causal: CausalResult | None, headline: list[str], title: str,
           autointerp: dict[str, Any] | None = None, key_figures: list[Row] | None = None,
           verdict: Sequence[str] = (), unit: str | None = None) -> dict[str, str]:
    """Every page of the dashboard: {relative path: HTML}.

    Args:
        headline: the report's one-line findings (shown on the index); title: the run, in words.
        autointerp: autointerp.json as read (``scripts/autointerp.py``), or None.
        key_figures: the registered statistics beside their nulls (:func:`statistics.rows`), on the index.
        verdict: the run's answer in a few sentences (the results document's ``verdict``), the first
            thing on the index, under the title.
        unit: what the run resamples (ica.json's ``resampling_unit``: ``"document"``, ``"window"`` or
            ``"row"``); None: read from the bank's examples (:func:`example_unit`). Top and bottom
            examples are one per unit, and the pages say "document" only where there are documents.
    """
    unit = unit or example_unit(bank)
    per = {"document": " (one per document)", "window": " (one per window)"}.get(unit, "")
    has_text = any(e.tokens for c in bank.components for e in c.top)
    explained = {c["component"]: c for c in autointerp["components"]} if autointerp else {}
    env = _environment()
    css = (TEMPLATES / "dashboard.css").read_text()
    js = (TEMPLATES / "dashboard.js").read_text()
    # the causal tests' held-out sequences and their clusters: documents, windows, else each sequence alone
    common = {"bank": bank, "causal": causal, "title": title, "css": css, "js": js, "unit": unit,
              "sequences": "windows" if has_text else "sequences",
              "cluster": unit if unit in ("document", "window") else "sequence"}
    pages = {"index.html": env.get_template("index.html.j2").render(
        headline=headline, key_figures=key_figures, verdict=[label_and_text(line) for line in verdict],
        n_candidates=sum(c.candidate for c in bank.components), **common)}
    for i, c in enumerate(bank.components):
        scale = _scale(c)
        sections = [(name, [(e, token_spans(e, scale)) for e in examples])
                    for name, examples in ((f"Top activations{per}", c.top), (f"Bottom activations{per}", c.bottom),
                                           ("Quantile samples", c.quantiles))]
        links = {f.feature: NEURONPEDIA.format(id=f.neuronpedia) for f in c.nearest_sae_features if f.neuronpedia}
        pages[f"components/{c.component}.html"] = env.get_template("component.html.j2").render(
            c=c, sections=sections, hist=histogram_bars(c.histogram), links=links,
            prev=bank.components[i - 1].component if i > 0 else None,
            next=bank.components[i + 1].component if i + 1 < len(bank.components) else None,
            auto=autointerp, explained=explained.get(c.component), **common)
    return {path: _with_glossary(html) for path, html in pages.items()}

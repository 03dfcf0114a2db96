"""The static dashboard in a real headless browser (Playwright driving the system chromium):
load the index, sort by a column, follow a link to a component page, find a highlighted
context and the histogram, take screenshots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from darkmatter.pipeline.report import dashboard
from darkmatter.pipeline.results import BankEntry, Example, FeatureBank, Histogram, LogitLens

#: Playwright adds --headless and a fresh temporary --user-data-dir itself.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine (.ci/run installs it with apt-get where it can)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_the_dashboard_is_static_and_offline(tiny_run):
    pages = list((tiny_run / "dashboard").rglob("*.html"))
    assert len(pages) == 1 + json.loads((tiny_run / "feature_bank.json").read_text())["k"]
    for page in pages:
        html = page.read_text()
        assert "http://" not in html.replace("http://www.w3.org", "") and "<script src" not in html
        assert "<link" not in html  # CSS inlined


def test_browse_sort_follow_and_read_a_component(tiny_run, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tiny_run / "dashboard" / "index.html").as_uri())
    rows = page.locator("#components tbody tr")
    assert rows.count() == 6

    def column(i: int) -> list[float]:
        return [float(v) for v in page.eval_on_selector_all(
            "#components tbody tr", f"rows => rows.map(r => r.cells[{i}].dataset.v)")]

    page.click("#components th:nth-child(3)")  # excess kurtosis: first click sorts descending
    kurt = column(2)
    assert kurt == sorted(kurt, reverse=True)
    page.click("#components th:nth-child(3)")
    assert column(2) == sorted(kurt)
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    first = page.locator("#components tbody tr").first.locator("a")
    target = int(first.inner_text())
    first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"components/{target}.html")
    assert page.locator("h1").inner_text().startswith(f"Component {target}")
    assert page.locator("#histogram svg rect.bar").count() == 60
    active = page.locator(".contexts span.tok.active").first
    assert active.is_visible() and "background" in (active.get_attribute("style") or "")
    assert ":" in (active.get_attribute("title") or "")  # the token's value on hover
    assert page.locator("#causal").is_visible() and page.locator("#logit-lens").is_visible()
    histogram = page.locator("#histogram svg")
    assert histogram.locator("path.gauss").count() == 1  # the Gaussian reference
    labels = histogram.locator("text").all_text_contents()
    assert "tokens per bin (log scale)" in labels and "source value (s.d. units)" in labels and "100" in labels
    assert page.locator("#glossary").is_visible() and "s.d." in page.locator("#glossary").inner_text()
    page.screenshot(path=str(tmp_path / "component.png"), full_page=True)
    assert (tmp_path / "index.png").stat().st_size > 10_000 and (tmp_path / "component.png").stat().st_size > 10_000
    assert not errors


def test_search_and_candidates_only_filter_the_rows_and_sorting_keeps_them(tiny_run, browser):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tiny_run / "dashboard" / "index.html").as_uri())

    def visible() -> list[str]:
        return page.eval_on_selector_all("#components tbody tr",
                                         "rows => rows.filter(r => !r.hidden).map(r => r.cells[0].dataset.v)")

    assert len(visible()) == 6
    page.fill("#search", "zzz-no-such-row")
    assert visible() == [] and page.locator("#shown").inner_text() == "0 of 6 rows shown"
    page.fill("#search", "")
    candidates = page.eval_on_selector_all("#components tbody tr.candidate",
                                           "rows => rows.map(r => r.cells[0].dataset.v)")
    page.check("#candidates-only")
    assert sorted(visible()) == sorted(candidates)
    page.click("#components th:nth-child(3)")  # sorting moves rows; the filter still holds
    assert sorted(visible()) == sorted(candidates)
    page.uncheck("#candidates-only")
    page.fill("#search", "no:")  # the candidate column's reasons
    assert len(visible()) == 6 - len(candidates)
    assert not errors


def _example(token: str, unit: int, **kw) -> Example:
    return Example(token=token, context=f"[[{token}]]", activation=1.0, unit=unit, **kw)


def _bank(unit: str, tokens: list[str]) -> FeatureBank:
    """A one-component bank whose examples are one per ``unit`` ("document": unit ids of their own;
    "row": each example's unit is its row), with ``tokens`` in the logit lens and the top example."""
    def ex(i: int) -> Example:
        if unit == "row":
            return Example(token="f3*", context=f"f3*:1.{i}0 f7:0.50", activation=3.0 - i, row=100 + i, unit=100 + i)
        return Example(token=tokens[0], context="a[[b]]c", activation=3.0 - i, window=i, position=1, unit=7 * i + 1,
                       tokens=["a", *tokens, "c"], values=[0.1] + [1.0] * len(tokens) + [None], at=1)

    entry = BankEntry(
        component=0, source_excess_kurtosis=4.0, kurtosis_se=0.5, stability=1.0, stability_status="stable",
        stable=True, settled=True, above_floor=True, artifact="", max_abs_cos=0.3, max_abs_cos_projected=0.4,
        novelty=0.7, candidate=True, not_candidate_because=[], rate_above=0.03, rate_below=0.02,
        histogram=Histogram(edges=[-3.0, -1.0, 1.0, 3.0, 5.0], counts=[50, 800, 100, 50]),
        top=[ex(0), ex(1)], bottom=[ex(2)], quantiles=[], token_histogram=[(t, 2) for t in tokens],
        logit_lens=LogitLens(top=[(t, 0.5) for t in tokens], bottom=[("x", -0.5)] * len(tokens)),
        nearest_sae_features=[], nearest_true_feature=None, linear_share=None, lives_in=None, causal=None)
    return FeatureBank(k=1, n_tokens=1000, description="d", hook_name="h", note=None, neuronpedia=None,
                       loss_name=None, divergence_name=None, components=[entry])


def test_the_verdict_comes_first_and_the_unit_is_named():
    verdict = ["Answer: no dark-matter candidates beyond the null.", "Detection limit: 1% of the variance."]
    pages = dashboard.render(_bank("document", [" Basic"]), None, ["a headline"], "t", verdict=verdict)
    main = pages["index.html"].split("<main>")[1]
    first = main.split('<div class="card', 2)[1]  # the first card under the title
    assert 'id="verdict"' in first and "<b>Answer:</b> no dark-matter candidates beyond the null." in first
    assert "<b>Detection limit:</b> 1% of the variance." in first and "a headline" not in first
    assert main.index("Detection limit") < main.index("a headline")
    assert 'id="search"' in main and 'id="candidates-only"' in main
    assert "Top activations (one per document)" in pages["components/0.html"]
    assert 'id="verdict"' not in dashboard.render(_bank("document", ["a"]), None, [], "t")["index.html"]

    rows = dashboard.render(_bank("row", ["f3*"]), None, [], "t")
    assert dashboard.example_unit(_bank("row", ["f3*"])) == "row"
    assert all("one per document" not in html and "document bootstrap" not in html for html in rows.values())
    component = rows["components/0.html"]
    assert "Top activations</h2>" in component and "(row bootstrap)" in component
    # the planted marker is explained: on hover and in the glossary
    assert "a dark feature, one the SAE does not know" in component
    assert "<b>f17*</b>" in component and "<b>f17</b>" in component


def test_byte_tokens_spaces_and_control_characters_are_readable():
    assert dashboard.token_text("\ufffd") == ("<0x??>", True)
    assert dashboard.token_text(" \ufffd\ufffd") == ("␣<0x??><0x??>", True)
    assert dashboard.token_text("\x08") == ("<0x08>", True) and dashboard.token_text("\t\n") == ("⇥↵", False)
    assert dashboard.token_text(" Basic") == ("␣Basic", False) and dashboard.token_text("") == ("∅", False)
    assert dashboard.token_text(" a b ", standalone=False) == (" a b ", False)  # in a context spaces stay spaces
    assert "U+FFFD" in dashboard.token_title("\ufffd") and "U+679C" in dashboard.token_title("果")
    pages = dashboard.render(_bank("document", ["\ufffd", " Basic", "\x0c"]), None, [], "t")
    component, index = pages["components/0.html"], pages["index.html"]
    # the label, and on hover its exact string and what the label means
    assert '<span class="tk sp" title="&#34;�&#34; · &lt;0x??&gt;: a byte' in component
    assert "&lt;0x??&gt;</span>" in component and "␣Basic</span>" in component and "&lt;0x0C&gt;</span>" in component
    assert "␣Basic</span>×2" in index  # the index's frequent tokens the same way
    assert '<td class="tokcell">' in component  # logit-table tokens never wrap
    glossary = component.split('id="glossary"')[1]
    assert "<b>&lt;0x??&gt;</b> a byte of a multi-byte UTF-8 character" in glossary and "<b>␣</b>" in glossary


def test_token_spans_colour_by_sign_and_mark_the_active_token():
    e = Example(token="b", context="a[[b]]c", activation=2.0, tokens=["a", "b", "c"], values=[-1.0, 2.0, None], at=1)
    spans = dashboard.token_spans(e, scale=2.0)
    assert [s["active"] for s in spans] == [False, True, False]
    assert "30,110,255,0.50" in spans[0]["style"] and "255,140,0,1.00" in spans[1]["style"]
    assert spans[2]["style"] == "" and "not analysed" in spans[2]["title"]
    plain = dashboard.token_spans(Example(token="f1", context="f1:0.5", activation=1.0), 1.0)
    assert plain[0]["text"] == "f1:0.5"


def test_histogram_bars_cover_the_range(tmp_path: Path):
    from darkmatter.pipeline.results import Histogram

    bars = dashboard.histogram_bars(Histogram(edges=[-2.0, 0.0, 2.0, 4.0], counts=[9, 99, 0]))
    assert len(bars["bars"]) == 3 and bars["bars"][2][3] == 0 and bars["zero"] == pytest.approx(340 / 3, abs=0.1)
    # the y axis: log₁₀(count + 1) up to the next power of ten above the largest count or the Gaussian's peak
    assert [label for _, label in bars["yticks"]] == ["0", "1", "10", "100", "1k"]
    assert bars["yticks"][0][0] == 150 and bars["yticks"][-1][0] == 0
    assert max(b[3] for b in bars["bars"]) == pytest.approx(150 * np.log10(100) / np.log10(1001), abs=0.01)
    assert [label for _, label in bars["ticks"]] == ["-2", "-1", "0", "1", "2", "3", "4"]
    assert bars["gauss"].startswith("M0.0,") and bars["gauss"].count(" L") == 240


def test_the_gaussian_reference_has_the_sources_mean_and_sd():
    from darkmatter.pipeline.results import Histogram

    counts, edges = np.histogram(np.random.default_rng(0).standard_normal(200_000) * 2 + 1, bins=60)
    h = Histogram(edges=edges.tolist(), counts=counts.tolist())
    mean, sd = dashboard.histogram_moments(h)
    assert mean == pytest.approx(1, abs=0.01) and sd == pytest.approx(2, abs=0.01)
    bars = dashboard.histogram_bars(h)
    top = np.log10(1000 * 10 ** (len(bars["yticks"]) - 5) + 1)  # the axis ends at the last tick, 10ᵈ tokens
    points = np.array([[float(v) for v in p.split(",")] for p in bars["gauss"][1:].split(" L")])
    x = edges[0] + (edges[-1] - edges[0]) * points[:, 0] / 340
    count = 10 ** ((150 - points[:, 1]) / 150 * top) - 1
    width = edges[1] - edges[0]
    expected = 200_000 * width * np.exp(-0.5 * ((x - 1) / 2) ** 2) / (2 * np.sqrt(2 * np.pi))
    assert np.allclose(count, expected, rtol=0.02, atol=2)  # N · bin width · normal density, to the plot's rounding

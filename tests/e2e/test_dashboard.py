"""The static dashboard in a real headless browser (Playwright driving the system chromium):
load the index, sort by a column, follow a link to a component page, find a highlighted
context and the histogram, take screenshots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from darkmatter.pipeline.report import dashboard
from darkmatter.pipeline.results import Example

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
    page.screenshot(path=str(tmp_path / "component.png"), full_page=True)
    assert (tmp_path / "index.png").stat().st_size > 10_000 and (tmp_path / "component.png").stat().st_size > 10_000
    assert not errors


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
    assert max(b[3] for b in bars["bars"]) == pytest.approx(150)

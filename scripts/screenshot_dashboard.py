"""Screenshots of a run's dashboard (the README's two images): the index and one component page,
taken in headless chromium through Playwright.

    python scripts/screenshot_dashboard.py --outputs outputs --component 3 --to docs/img
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outputs", default="outputs", help="the run's outputs folder (with dashboard/)")
    p.add_argument("--component", type=int, default=0, help="the component page to shoot")
    p.add_argument("--to", default="docs/img", help="folder for dashboard_index.png and dashboard_component.png")
    p.add_argument("--height", type=int, default=1600, help="viewport height in pixels (the shot's height)")
    args = p.parse_args(argv)
    index = Path(args.outputs) / "dashboard" / "index.html"
    if not index.is_file():
        print(f"no dashboard at {index}: run scripts/08_save_report.py first", file=sys.stderr)
        return 2
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("no chromium on this machine: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    out = Path(args.to)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": args.height})
        page.goto(index.resolve().as_uri())
        page.click("#components th:nth-child(7)")  # sort by gap closed
        page.evaluate("window.scrollTo(0, 0)")  # the click scrolls to the table; the shot starts at the headline
        page.screenshot(path=str(out / "dashboard_index.png"))
        page.goto((index.parent / "components" / f"{args.component}.html").resolve().as_uri())
        page.screenshot(path=str(out / "dashboard_component.png"))
        browser.close()
    print(f"wrote {out / 'dashboard_index.png'} and {out / 'dashboard_component.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

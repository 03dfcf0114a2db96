"""Screenshots of a run's dashboard (the README's images): the index and one component page,
taken in headless chromium through Playwright, at the README's width and at each of ``--widths``.

    python scripts/screenshot_dashboard.py --outputs outputs --component 3 --to docs/img

writes dashboard_index.png (the top: the verdict), dashboard_table.png (the components table, sorted by
gap closed) and dashboard_component.png, ``--width`` wide, and dashboard_index_<w>.png,
dashboard_component_<w>.png for every ``w`` in ``--widths``, and prints, for
each shot, whether anything sticks out of its card or the page (clipped) and which tables scroll sideways.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

#: Elements wider than the box that holds them, other than inside a scrolling box (what would be clipped).
OVERFLOW = """() => {
  const out = [], vw = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > vw) out.push("page " + document.documentElement.scrollWidth + " > " + vw);
  document.querySelectorAll(".card").forEach(card => {
    const box = card.getBoundingClientRect();
    card.querySelectorAll("*").forEach(el => {
      if (el.closest(".scroll") && el.closest(".scroll") !== el) return;
      const r = el.getBoundingClientRect();
      if (r.width && r.right > box.right + 1) out.push((card.id || card.querySelector("h2")?.textContent || "card")
        + ": <" + el.tagName.toLowerCase() + "> " + Math.round(r.right - box.right) + " px past the card");
    });
    card.querySelectorAll("svg text").forEach(t => {
      const s = t.ownerSVGElement.getBoundingClientRect(), r = t.getBoundingClientRect();
      if (r.left < s.left - 1 || r.right > s.right + 1 || r.top < s.top - 1 || r.bottom > s.bottom + 1)
        out.push((card.id || "card") + ": svg text '" + t.textContent + "' clipped by its svg");
    });
  });
  const scrolls = [...document.querySelectorAll(".scroll")].filter(s => s.scrollWidth > s.clientWidth + 1)
    .map(s => (s.closest(".card")?.id || s.closest(".card")?.querySelector("h2")?.textContent || "?")
      + " scrolls sideways");
  return {clipped: [...new Set(out)], scrolls: scrolls};
}"""


def _save(page, path: Path, full_page: bool) -> None:
    """A screenshot as a 256-colour PNG (about a third of the size; text stays sharp)."""
    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot(full_page=full_page)))
    shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outputs", default="outputs", help="the run's outputs folder (with dashboard/)")
    p.add_argument("--component", type=int, default=0, help="the component page to shoot")
    p.add_argument("--to", default="docs/img", help="folder for dashboard_index.png and dashboard_component.png")
    p.add_argument("--width", type=int, default=1300, help="viewport width of the two unsuffixed shots, in pixels")
    p.add_argument("--widths", default="1100,1400,1600",
                   help="comma-separated viewport widths of the width-named shots (empty: none)")
    p.add_argument("--height", type=int, default=1600, help="viewport height in pixels (the shot's height)")
    p.add_argument("--full-page", action="store_true", help="shoot whole pages, not the top --height pixels")
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
    shots = [(args.width, "")] + [(int(w), f"_{int(w)}") for w in args.widths.split(",") if w.strip()]
    clipped = False
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        for width, suffix in shots:
            page = browser.new_page(viewport={"width": width, "height": args.height})
            page.goto(index.resolve().as_uri())
            page.click("#components th:nth-child(7)")  # sort by gap closed
            page.evaluate("window.scrollTo(0, 0)")  # the click scrolls to the table; the shot starts at the verdict
            pages = [("index", page.evaluate(OVERFLOW))]
            _save(page, out / f"dashboard_index{suffix}.png", args.full_page)
            if not suffix:
                page.locator("#components").evaluate("t => t.closest('.card').scrollIntoView()")
                _save(page, out / "dashboard_table.png", False)
            page.goto((index.parent / "components" / f"{args.component}.html").resolve().as_uri())
            pages.append(("component", page.evaluate(OVERFLOW)))
            _save(page, out / f"dashboard_component{suffix}.png", args.full_page)
            page.close()
            for name, found in pages:
                clipped |= bool(found["clipped"])
                print(f"{width} px, {name}: " + ("; ".join(found["clipped"]) or "nothing clipped")
                      + ("; " + "; ".join(found["scrolls"]) if found["scrolls"] else ""))
        browser.close()
    print(f"wrote {len(shots) * 2 + 1} shots to {out}")
    return 1 if clipped else 0


if __name__ == "__main__":
    sys.exit(main())

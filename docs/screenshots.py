"""The README's screenshots of the HTML reports, taken by Debian's headless chromium through Playwright.

    python docs/screenshots.py browser out/dissect-quantile/report.html --filter tree
    python docs/screenshots.py page out/causal/tree-layer4/index.html --name causal_page

`browser` saves three views of a unit browser (browser_default.png, browser_filtered.png, browser_detail.png:
the filter typed in, then the first row's detail panel); `page` saves one view of any page."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

OUT = Path(__file__).parent / "images"


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["browser", "page"])
    ap.add_argument("html", type=Path)
    ap.add_argument("--filter", default="tree", help="the concept typed into the browser's filter")
    ap.add_argument("--name", default="page", help="file name (without .png) of a `page` screenshot")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install -y chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1400, "height": args.height})
        pg.goto(args.html.resolve().as_uri())
        if args.kind == "page":
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(args.out / f"{args.name}.png"))
        else:
            pg.wait_for_selector("body[data-ready='1']", timeout=60_000)
            pg.wait_for_timeout(1000)
            pg.screenshot(path=str(args.out / "browser_default.png"))
            pg.fill("#filter", args.filter)
            pg.wait_for_timeout(800)
            pg.screenshot(path=str(args.out / "browser_filtered.png"))
            pg.click("#units tbody tr:nth-child(1)")
            pg.wait_for_timeout(1000)
            pg.screenshot(path=str(args.out / "browser_detail.png"))
        browser.close()
    print(f"wrote screenshots to {args.out}")


if __name__ == "__main__":
    main()

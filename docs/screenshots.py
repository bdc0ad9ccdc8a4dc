"""The docs/ pages' screenshots of the HTML reports, taken by Debian's headless chromium through Playwright.

    python docs/screenshots.py browser out/dissect-quantile/report.html --filter tree
    python docs/screenshots.py page out/causal/tree-layer4/index.html --name causal_page
    python docs/screenshots.py sequence out/paint-shots   # after the paint browser test saved its screenshots there

`browser` saves four views of a unit browser (browser_default.png, browser_filtered.png, browser_detail.png,
browser_zoom.png: the filter typed in, the first row's detail panel, then its first image enlarged beside its
segmentation); `page` saves one view of any page; `sequence` puts the painting test's three image panels side by
side (paint_sequence.png) and keeps its page after the stroke (paint_page.png)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

OUT = Path(__file__).parent / "images"


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["browser", "page", "sequence"])
    ap.add_argument("html", type=Path)
    ap.add_argument("--filter", default="tree", help="the concept typed into the browser's filter")
    ap.add_argument("--name", default="page", help="file name (without .png) of a `page` screenshot")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    if args.kind == "sequence":
        return sequence(args.html, args.out)
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
            pg.click("#units tbody tr:nth-child(1) td:first-child")  # a thumbnail would open the enlargement
            pg.wait_for_timeout(1000)
            pg.screenshot(path=str(args.out / "browser_detail.png"))
            pg.click("#d-region canvas >> nth=0")
            pg.wait_for_selector("#zoom.open")
            pg.wait_for_timeout(800)
            pg.screenshot(path=str(args.out / "browser_zoom.png"))
        browser.close()
    print(f"wrote screenshots to {args.out}")


def sequence(shots: Path, out: Path) -> None:
    """paint_sequence.png: the stage (image panel) before, after drawing and after removing, 8 px apart."""
    from PIL import Image

    names = ["stage_1_original.png", "stage_2_drawn.png", "stage_3_removed.png"]
    missing = [n for n in names if not (shots / n).is_file()]
    if missing:
        raise SystemExit(f"{shots} lacks {', '.join(missing)}: run the paint browser test with "
                         f"LIGHTNING_GD_SCREENSHOTS={shots}")  # fmt: skip
    panels = [Image.open(shots / n).convert("RGB") for n in names]
    w, h = panels[0].size
    strip = Image.new("RGB", (3 * w + 16, h), "white")
    for i, p in enumerate(panels):
        strip.paste(p, (i * (w + 8), 0))
    out.mkdir(parents=True, exist_ok=True)
    strip.save(out / "paint_sequence.png")
    shutil.copy(shots / "paint_2_drawn.png", out / "paint_page.png")
    print(f"wrote {out / 'paint_sequence.png'} and {out / 'paint_page.png'}")


if __name__ == "__main__":
    main()

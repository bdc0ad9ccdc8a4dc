"""The unit browser (`report.html`) in a real browser: Debian's headless `chromium` through Playwright. The default
order (interpretable units by concept, then IoU), sorting with arrows, the concept filter and the "interpretable
only" toggle, the detail panel, the causal column, the region drawn by the page's own bilinear upsampling against
the dissection's, and no request beyond the file itself. (docs/screenshots.py makes the README's pictures.)"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gd.dissection.featuremaps import upsample
from lightning_gd.jobs.dissect import write_dissection
from lightning_gd.reports.images import outline
from tests.helpers import BOLD

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def report(planted, tmp_path_factory):
    """The planted two-layer report, with a causal search of layer1 that ranks units 2, 0, 1 (top 2)."""
    g, d, shown = planted
    out = tmp_path_factory.mktemp("report")
    search = {"concept": "grass", "layer": "layer1", "top_n": 2, "path": "x", "href": "../search/causal.json",
              "units": [{"unit": 2, "alpha": 0.9}, {"unit": 0, "alpha": 0.5}, {"unit": 1, "alpha": 0.1}]}  # fmt: skip
    write_dissection(d, out, shown, info={"generator": "planted"}, causal=[search])
    return out / "report.html", d, shown


@pytest.fixture
def page(browser, report):
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    requests, errors = [], []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(report[0].as_uri())
    pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    yield pg
    assert not errors, errors
    # nothing but the page itself (thumbnails are data: URLs, decoded in the page)
    assert all(url == report[0].as_uri() or url.startswith("data:") for url in requests), requests
    pg.close()


def rows(pg) -> list[int]:
    return [int(v) for v in pg.eval_on_selector_all("#units tbody tr", "rs => rs.map(r => r.dataset.unit)")]


def expected_default(units: list[dict]) -> list[int]:
    per: dict[str, int] = {}
    for u in units:
        if u["interpretable"]:
            per[u["label"]] = per.get(u["label"], 0) + 1

    def key(u):
        group = (-per[u["label"]], u["label"]) if u["interpretable"] else (0, "")
        return (not u["interpretable"], *group, -u["iou"], u["unit"])

    return [u["unit"] for u in sorted(units, key=key)]


def test_default_order_sorting_and_filters(page, report):
    _, d, _ = report
    start = max(d.layers, key=lambda layer: d.summary(layer)["interpretable"])  # opens on the best layer
    assert page.text_content("#layer-title").startswith(start)
    for layer in d.layers:
        page.click(f"#tabs button[data-layer='{layer}']")
        units = d.units(layer)
        assert rows(page) == expected_default(units)
        assert page.text_content("#count") == f"showing {len(units)} of {len(units)} units"
    layer = "layer1"
    page.click("#tabs button[data-layer='layer1']")
    units = d.units(layer)
    # IoU: highest first on the first click, with an arrow; lowest first on the second
    page.click("th[data-key='iou']")
    assert rows(page) == [u["unit"] for u in sorted(units, key=lambda u: (-u["iou"], u["unit"]))]
    assert page.text_content("th[data-key='iou'] .arrow") == "▼"
    page.click("th[data-key='iou']")
    assert rows(page) == [u["unit"] for u in sorted(units, key=lambda u: (u["iou"], u["unit"]))]
    assert page.text_content("th[data-key='iou'] .arrow") == "▲"
    page.click("th[data-key='iou']")  # a third click: back to the default order, no arrow
    assert rows(page) == expected_default(units) and page.locator("th .arrow").count() == 0
    # the causal column: best rank first
    page.click("th[data-key='causal']")
    assert rows(page)[:2] == [2, 0]
    assert "grass #1 (α 0.90)" in page.text_content("#units tr[data-unit='2']")
    # filter by concept, then interpretable only
    page.fill("#filter", "grass")
    assert rows(page) and all("grass" in units[u]["label"] or u in (0, 2) for u in rows(page))
    page.fill("#filter", BOLD)  # a label with markup matches as text
    assert rows(page) == [u["unit"] for u in units if u["label"] == BOLD]
    page.fill("#filter", "")
    page.check("#only")
    assert sorted(rows(page)) == [u["unit"] for u in units if u["interpretable"]]
    assert page.get_attribute("a[href='../search/causal.json']", "href") is not None  # the link to the search


def test_detail_panel(page, report):
    _, d, shown = report
    page.click("#tabs button[data-layer='layer1']")
    page.click("#units tr[data-unit='0'] td:first-child")
    panel = page.locator("#detail.open")
    assert panel.locator("h3").text_content() == "layer1 unit 0"
    iou = d.layers["layer1"].iou[0]
    bars = panel.locator(".bar")
    assert bars.count() == int((iou * 10000).round().gt(0).sum())  # every concept the unit overlaps
    names = [bars.nth(i).get_attribute("data-concept") for i in range(bars.count())]
    assert names[0] == d.vocabulary.names[int(iou.argmax())]  # highest first
    k = shown.count("layer1", 0)
    assert panel.locator("#d-region canvas").count() == k and panel.locator("#d-heat canvas").count() == k
    # each shown image's rank among the unit's own candidates, as the page states it
    cands = d.layers["layer1"].candidates[0].tolist()
    ranks = [cands.index(int(shown.samples[s])) + 1 for s in shown.slots["layer1"][0].tolist() if s >= 0]
    assert "Ranks among this unit's own top images: " + ", ".join(f"#{r}" for r in ranks) in panel.text_content()
    assert "rank 2" in panel.text_content()  # its place in the causal search
    page.keyboard.press("Escape")
    assert page.locator("#detail.open").count() == 0


def test_the_address_opens_a_unit_and_follows_the_panel(page, report):
    """report.html#<layer>/<unit> opens that unit's details (the causal and artifacts pages link so); clicking a row
    puts the unit in the address, closing the panel leaves the layer; an address naming no layer opens the default."""
    _, d, _ = report
    page.goto(report[0].as_uri() + "#layer1/2")
    page.wait_for_selector("#detail.open")
    assert page.locator("#detail.open h3").text_content() == "layer1 unit 2"
    assert page.text_content("#layer-title").startswith("layer1")
    assert page.get_attribute("#units tr.selected", "data-unit") == "2"
    other = next(layer for layer in d.layers if layer != "layer1")
    page.click(f"#tabs button[data-layer='{other}']")
    page.click("#units tr[data-unit='1'] td:first-child")
    assert page.evaluate("location.hash") == f"#{other}/1"
    page.keyboard.press("Escape")
    assert page.evaluate("location.hash") == f"#{other}"
    page.evaluate("location.hash = '#layer1/0'")  # a link within the page (hashchange)
    page.wait_for_function("document.querySelector('#detail.open h3')?.textContent === 'layer1 unit 0'")
    page.goto(report[0].as_uri() + "#nolayer/3")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    start = max(d.layers, key=lambda layer: d.summary(layer)["interpretable"])
    assert page.text_content("#layer-title").startswith(start) and page.locator("#detail.open").count() == 0


def test_region_drawn_by_the_page_is_the_dissections(page, report):
    """The page upsamples each unit's (8-bit) featuremap itself: its lit pixels match the dissection's mask, and the
    yellow outline is the boundary of the label's segmentation that the dissection stored with the images."""
    _, d, shown = report
    page.click("#tabs button[data-layer='layer2']")
    page.click("#units tr[data-unit='0'] td:first-child")
    page.wait_for_timeout(300)
    data = json.loads(re.search(r'id="data">(.*?)</script>', report[0].read_text(), re.S).group(1))
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('#d-region canvas')).map(c =>
        Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data))""")
    assert len(drawn) == shown.count("layer2", 0) and all(len(p) == 64 * 64 * 4 for p in drawn)
    label = d.vocabulary.index(d.units("layer2")[0]["label"])
    for slot, pixels in enumerate(drawn):
        image_index = data["layers"][1]["slots"][0][slot]
        original = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["images"][image_index])))).astype(int)
        canvas = np.array(pixels).reshape(64, 64, 4)[..., :3]
        concept = (shown.segmentations[image_index] == label).any(0)  # (64, 64) over the label groups
        edge = (outline(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), concept[None])[0] > 0).any(0).numpy()
        assert edge.any() and (canvas[edge] == [255, 255, 0]).all(), slot
        page_lit = (np.abs(canvas - original) <= 1).all(-1) & (original.sum(-1) > 30)  # unchanged = not dimmed
        act = upsample(shown.maps["layer2"][0, slot][None, None], (64, 64))[0, 0]
        mask = (act > shown.thresholds["layer2"][0]).numpy() & (original.sum(-1) > 30)
        assert (page_lit == mask)[~edge].mean() > 0.99, slot  # 8-bit maps: a few pixels on the border may differ

"""The unit browser's evidence and its links, in headless Chromium: an address or a link from another page puts
the unit's row inside the window (and it stays there while the thumbnails are drawn); the enlargement shows the
unit's region beside the segmentation the dissection stored with its images; each unit's runner-up concept."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.dissection.results import Dissection, DissectSettings, LayerDissection
from lightning_gd.jobs.dissect import write_dissection
from lightning_gd.results.images import UnitImages

pytestmark = pytest.mark.usefixtures("one_thread")

UNITS, K, SIDE, FM = 160, 4, 64, 8  # a layer long enough that most rows start below the window
NAMES = ("sky", "tree", "grass", "road")


@pytest.fixture(scope="module")
def big_report(tmp_path_factory):
    """A report of 160 units with random IoU, featuremaps and 64×64 images whose segmentation is known: the top
    half of every image is sky, the bottom half grass, and a 16×16 tree square sits at a per-image place."""
    g = torch.Generator().manual_seed(0)
    vocab = Vocabulary(NAMES, ("scene", "object", "scene", "scene"), len(NAMES))
    iou = torch.rand(UNITS, len(NAMES), generator=g) * 0.2
    top = torch.zeros(UNITS, K, dtype=torch.long)
    layer = LayerDissection("layer4", torch.full((UNITS,), 0.5), iou, top, torch.zeros(UNITS, K), (FM, FM))
    diss = Dissection(DissectSettings(layers=("layer4",), n=100, top_k=K), vocab, {"layer4": layer})
    m = 40  # distinct images
    seg = torch.zeros(m, 1, SIDE, SIDE, dtype=torch.int16)
    seg[:, :, SIDE // 2 :] = 2
    for i in range(m):
        y, x = 4 + i % 5 * 8, 4 + i // 5 * 5
        seg[i, :, y : y + 16, x : x + 16] = 1
    images = (torch.rand(m, 3, SIDE, SIDE, generator=g) * 100 + 100).to(torch.uint8)
    slots = torch.randint(m, (UNITS, K), generator=g)
    maps = {"layer4": torch.rand(UNITS, K, FM, FM, generator=g)}
    shown = UnitImages(torch.arange(m), images, {"layer4": slots}, maps, {"layer4": torch.full((UNITS,), 0.5)}, seg)
    out = tmp_path_factory.mktemp("big")
    write_dissection(diss, out / "report", shown, info={"generator": "random"})
    (out / "results.html").write_text('<!doctype html><a id="go" href="report/report.html#layer4/131">unit 131</a>')
    return out, diss, shown


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1100, "height": 700})
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    assert not errors, errors
    pg.close()


def row_inside(pg, unit: int) -> bool:
    return pg.evaluate(
        """(u) => { const r = document.querySelector(`#units tr[data-unit="${u}"]`).getBoundingClientRect();
                    return r.top >= 0 && r.bottom <= window.innerHeight; }""",
        unit,
    )


def settle(pg, unit: int) -> None:
    """Wait until the page has scrolled to the unit and drawn the thumbnails around it (rows grew then before)."""
    pg.wait_for_selector(f"body[data-scrolled='{unit}']", timeout=30_000)
    pg.wait_for_selector(f"#units tr[data-unit='{unit}'][data-drawn='1'] canvas.thumb", timeout=30_000)
    pg.wait_for_timeout(500)


def test_an_address_puts_the_row_in_the_window(page, big_report):
    out, _, _ = big_report
    for unit in (131, 7, 159):  # wherever the default order puts it
        page.goto((out / "report" / "report.html").as_uri() + f"#layer4/{unit}")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        settle(page, unit)
        assert page.evaluate("window.scrollY") > 0 or row_inside(page, unit)
        assert row_inside(page, unit), unit
        assert page.get_attribute("#units tr.selected", "data-unit") == str(unit)


def test_a_link_from_another_page_puts_the_row_in_the_window(page, big_report):
    out, _, _ = big_report
    page.goto((out / "results.html").as_uri())
    page.click("#go")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    settle(page, 131)
    assert row_inside(page, 131)
    assert page.locator("#detail.open h3").text_content() == "layer4 unit 131"


def test_the_enlargement_shows_the_region_beside_the_segmentation(page, big_report):
    out, diss, shown = big_report
    unit = 12
    page.goto((out / "report" / "report.html").as_uri() + f"#layer4/{unit}")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.click("#d-region canvas >> nth=1")
    page.wait_for_selector("#zoom.open")
    label = diss.units("layer4")[unit]["label"]
    assert page.input_value("#z-concept") == str(NAMES.index(label))
    page.select_option("#z-concept", str(NAMES.index("tree")))  # the concept whose place is known per image
    page.wait_for_function("document.querySelector('#z-stats').textContent.includes('tree')")
    seg = page.evaluate(
        "() => { const c = document.getElementById('z-seg'); return Array.from(c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data); }"
    )
    image = int(shown.slots["layer4"][unit, 1])
    canvas = np.array(seg).reshape(SIDE, SIDE, 4)[..., :3].astype(int)
    tree = (shown.segmentations[image, 0] == 1).numpy()
    bright = canvas.sum(-1) > 3 * 90  # the images are 100…200 grey noise (JPEG); dimmed to 30 % they stay below
    assert (bright == tree).mean() > 0.99
    stats = page.text_content("#z-stats")
    assert f"tree {int(tree.sum())} px" in stats and "IoU" in stats
    page.keyboard.press("Escape")  # the enlargement first, then the panel
    assert page.locator("#zoom.open").count() == 0 and page.locator("#detail.open").count() == 1


def test_each_unit_shows_its_runner_up(page, big_report):
    out, diss, _ = big_report
    page.goto((out / "report" / "report.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    iou = (diss.layers["layer4"].iou * 10000).round() / 10000
    for unit in (0, 5, 99):
        order = iou[unit].argsort(descending=True).tolist()
        runner = NAMES[order[1]]
        cell = page.text_content(f"#units tr[data-unit='{unit}'] td.runner")
        assert cell == f"{runner} {float(iou[unit, order[1]]):.3f}", unit
    page.click("th[data-key='runner_iou']")  # sorted by the runner-up's IoU, highest first
    units = [int(v) for v in page.eval_on_selector_all("#units tbody tr", "rs => rs.map(r => r.dataset.unit)")]
    second = iou.sort(1, descending=True).values[:, 1]
    assert units[0] == int(second.argmax())


def test_a_report_without_segmentations_still_enlarges(page, big_report, tmp_path):
    """A report written without the segmenter (an older one, or images made without it): no outline, and the
    enlargement shows the image as it is and says why."""
    _, diss, shown = big_report
    write_dissection(diss, tmp_path, replace(shown, segmentations=None), info={"generator": "random"})
    page.goto((tmp_path / "report.html").as_uri() + "#layer4/3")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.click("#d-region canvas >> nth=0")
    page.wait_for_selector("#zoom.open")
    assert "written without the segmentations" in page.text_content("#z-seg-cap")
    assert "outline" not in page.text_content("#legend")

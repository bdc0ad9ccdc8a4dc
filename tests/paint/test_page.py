"""What the painting page tells the user, in headless Chromium: a busy state with every control disabled while a
request runs and the time it took afterwards; the brush cleared after an edit; the brushes grouped by ranking
(a tree brush before any causal search); the overlay's legend; an empty brush answered on the page; no console
error (the favicon included); and at 800, 1,100 and 1,400 px the image whole and no control over it."""

from __future__ import annotations

import pytest

from tests.helpers import chromium_path

CELL = 64  # page pixels per featuremap cell (512 px / 8 cells)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def open_page(browser, url):
    """A function that opens the page at a window width; every page checked for console errors and 4xx/5xx."""
    base, _ = url
    pages, problems = [], []

    def open_at(width: int = 1100):
        pg = browser.new_page(viewport={"width": width, "height": 800})
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        pg.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        pg.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        pg.goto(f"{base}/?seed=219")
        pg.wait_for_selector("body[data-ready='1']", timeout=60_000)
        pages.append(pg)
        return pg

    yield open_at
    for pg in pages:
        pg.close()
    assert not problems, problems


def stroke(pg, row: int = 2, cols: tuple[int, int] = (2, 3)) -> None:
    box = pg.locator("#brush").bounding_box()
    pg.mouse.move(box["x"] + cols[0] * CELL + 32, box["y"] + row * CELL + 32)
    pg.mouse.down()
    pg.mouse.move(box["x"] + cols[1] * CELL + 32, box["y"] + row * CELL + 32, steps=6)
    pg.mouse.up()


def painted_cells(pg) -> int:
    return pg.evaluate("state.mask.flat().filter(Boolean).length")


def test_a_request_shows_a_busy_state_and_then_its_time(open_page):
    pg = open_page()
    held = []
    pg.route("**/api/edit", lambda route: held.append(route))  # the edit waits until the test lets it through
    stroke(pg)
    assert painted_cells(pg) == 2
    pg.click("#draw")
    pg.wait_for_selector("body[data-busy='1']")
    assert "drawing" in pg.text_content("#busy")
    controls = pg.locator("#controls button, #controls select, #controls input")
    assert controls.count() > 8 and all(controls.nth(i).is_disabled() for i in range(controls.count()))
    assert len(held) == 1
    held[0].continue_()
    pg.wait_for_selector("body[data-edits='1'][data-busy='0']", timeout=30_000)
    assert all(controls.nth(i).is_enabled() for i in range(controls.count()))
    assert pg.text_content("#busy") == ""
    assert "took" in pg.text_content("#status") and "render" in pg.text_content("#status")
    assert painted_cells(pg) == 0  # the brush is cleared so the change is visible
    pg.unroute("**/api/edit")


def test_before_toggle_legend_and_palette_groups(open_page, url):
    _, served = url
    pg = open_page()
    # before any causal search, a tree brush: the dissection's IoU-top units of tree, in a group that says so
    group = pg.eval_on_selector("#concept option[value='tree (IoU)']", "o => o.parentElement.label")
    assert group.startswith("IoU-ranked")
    strong = [b.name for b in served.brushes.values() if b.match is not None and b.match > 0.05]
    for name in strong:
        assert pg.eval_on_selector(f"#concept option[value='{name}']", "o => o.parentElement.label").startswith(
            "IoU-ranked: some unit matches it"
        )
    pg.select_option("#concept", "tree (IoU)")
    assert f"best unit IoU {served.brushes['tree (IoU)'].match:.3f}" in pg.text_content("#ranking")
    pg.check("#showseg")
    legend = pg.text_content("#legend")
    assert pg.is_visible("#legend") and "sky" in legend
    stroke(pg)
    original = pg.get_attribute("#image", "src")
    pg.click("#draw")
    pg.wait_for_selector("body[data-edits='1'][data-busy='0']", timeout=30_000)
    edited = pg.get_attribute("#image", "src")
    assert edited != original
    pg.check("#before")
    assert pg.get_attribute("#image", "src") == original
    pg.uncheck("#before")
    assert pg.get_attribute("#image", "src") == edited


def test_an_empty_brush_is_answered_on_the_page(open_page):
    pg = open_page()
    renders = pg.get_attribute("body", "data-renders")
    pg.click("#draw")
    assert "brush is empty" in pg.text_content("#error")
    assert pg.get_attribute("body", "data-renders") == renders  # no request was sent


@pytest.mark.parametrize("width", [800, 1100, 1400])
def test_the_image_stays_whole_beside_the_controls(open_page, width):
    pg = open_page(width)
    # a long status line (the longest one the page writes) must not push the controls over the image
    pg.evaluate("document.getElementById('status').textContent = 'x'.repeat(400)")
    stage = pg.locator("#stage").bounding_box()
    assert stage["x"] >= 0 and stage["x"] + stage["width"] <= width and stage["width"] >= 512
    for part in ("#controls", "#controls fieldset >> nth=2", "#status"):
        box = pg.locator(part).bounding_box()
        right = box["x"] >= stage["x"] + stage["width"]
        below = box["y"] >= stage["y"] + stage["height"]
        apart = right or below or box["x"] + box["width"] <= stage["x"]
        assert apart, (width, part, box, stage)
        assert box["x"] + box["width"] <= width + 1, (width, part, box)

"""The painting page in a real browser: Debian's headless `chromium`, driven by Playwright's Python bindings
pointed at that binary (nothing is downloaded). Load the page, paint a stroke with the mouse, press draw: the
image changes only near the stroke; remove; undo; and no request leaves this machine.

With LIGHTNING_GD_SCREENSHOTS=<folder> the run's screenshots (original, drawn, removed) are copied there, with
paint_counts.json (the sample, the strokes and the segmenter's tree and door pixels in each image). The README's
are made this way, with LIGHTNING_GD_PAINT_RESULTS=out for the α rankings of finished searches and
LIGHTNING_GD_PAINT_INSERTION for the value drawn units are set to, e.g. q0.999."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import chromium_path

CELL = 64  # page pixels per featuremap cell (512 px / 8 cells)
PX = 8  # image pixels per featuremap cell (64 / 8)
DRAW_UNITS = 20  # the units of the tree stroke: the page's setting at start
REMOVE_UNITS = 80  # the units of the removal stroke: the largest of the page's settings


def image_of(page) -> np.ndarray:
    src = page.get_attribute("#image", "src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")).astype(int)


def pick(names: list[str], wanted: str) -> str:
    return next((n for n in names if n.startswith(wanted)), names[0])


def scene_to_paint(served, seeds: int = 300) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, ...]]:
    """The first sample (seed) of the served generator with one door (its cells fit in 3×3) and a 2×2 square of
    grass in other columns, as its segmenter sees them: (seed, the grass square's rows and columns, the door's cell
    box as (row0, row1, col0, col1)). Chosen from the unedited images, so that the strokes land where a person
    would paint them whatever the generator."""
    import torch
    from torch.nn import functional as F

    from lightning_gd.latents import latents
    from lightning_gd.models.generators import device_of

    seg = served.segmenter
    door, grass = seg.concept_index("door"), seg.concept_index("grass")
    with torch.no_grad():
        z = latents(list(range(seeds)), served.split.z_dim, 0).to(device_of(served.split.generator))
        labels = torch.cat([seg.labels(served.split.generator(zb)).cpu() for zb in z.split(100)])  # (S, 64, 64)
    door_cells = F.avg_pool2d((labels == door).float()[:, None], PX)[:, 0] >= 0.25  # (S, 8, 8)
    grass_squares = F.avg_pool2d((labels == grass).float()[:, None], 2 * PX, stride=PX)[:, 0] >= 0.95  # (S, 7, 7)
    for s in range(seeds):
        cells = torch.nonzero(door_cells[s])
        if len(cells) == 0:
            continue
        box = (int(cells[:, 0].min()), int(cells[:, 0].max()), int(cells[:, 1].min()), int(cells[:, 1].max()))
        if box[1] - box[0] > 2 or box[3] - box[2] > 2:  # more than one door, or a smear
            continue
        for y, x in torch.nonzero(grass_squares[s]).tolist():
            apart = x + 1 < box[2] - 1 or x > box[3] + 1  # columns clear of the door's by a cell
            if y >= 3 and apart:  # rows 3-7: below the horizon band, where the world's trees stand
                return s, (y, y + 1), (x, x + 1), box
    raise AssertionError(f"no sample among {seeds} seeds has a door and a 2×2 square of grass beside it")


def test_paint_a_stroke_draw_remove_undo(url, tmp_path):
    from playwright.sync_api import sync_playwright

    base, served = url
    names = list(served.brushes)
    shots = tmp_path / "shots"
    shots.mkdir()
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.on("request", lambda r: requests.append(r.url))
        seed, rows, cols, door_box = scene_to_paint(served)
        page.goto(f"{base}/?seed={seed}")  # grass at the first stroke, a building's door at the second
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        before = image_of(page)
        page.screenshot(path=str(shots / "paint_1_original.png"))
        page.locator("#stage").screenshot(path=str(shots / "stage_1_original.png"))
        page.select_option("#concept", pick(names, "tree"))
        page.select_option("#strength", str(DRAW_UNITS))
        box = page.locator("#brush").bounding_box()
        # rows, cols: a 2×2-cell stroke (the world's median tree covers 5 cells) on the grass
        page.mouse.move(box["x"] + cols[0] * CELL + 32, box["y"] + rows[0] * CELL + 32)
        page.mouse.down()
        for y in rows:
            page.mouse.move(box["x"] + cols[0] * CELL + 32, box["y"] + y * CELL + 32, steps=2)
            page.mouse.move(box["x"] + cols[1] * CELL + 32, box["y"] + y * CELL + 32, steps=6)
        page.mouse.up()
        page.click("#draw")
        page.wait_for_selector("body[data-edits='1']", timeout=30_000)
        drawn = image_of(page)
        page.click("#clear")  # show the result without the brush over it
        page.screenshot(path=str(shots / "paint_2_drawn.png"))
        page.locator("#stage").screenshot(path=str(shots / "stage_2_drawn.png"))
        changed = np.abs(drawn - before).sum(-1) > 0  # (64, 64): 8 image pixels per cell
        assert changed.any(), "drawing changed nothing"
        ys, xs = np.nonzero(changed)
        # the later layers' reach around an edited cell: 3×3 convolutions at 16² (2), 32² (2) and 64² (2) reach
        # 4 + 4 + 2 + 2 + 1 + 1 = 14 image pixels, under 2 cells
        margin = 2
        assert ys.min() >= PX * (rows[0] - margin) and ys.max() < PX * (rows[1] + 1 + margin), (ys.min(), ys.max())
        assert xs.min() >= PX * (cols[0] - margin) and xs.max() < PX * (cols[1] + 1 + margin), (xs.min(), xs.max())
        page.select_option("#concept", pick(names, "door"))
        # the page's largest setting: on the shipped GAN the door α top-20 leaves three quarters of this door
        # (docs/paint.md), as it leaves 41.5 % of the doors on held-out z (docs/causal.md)
        page.select_option("#strength", str(REMOVE_UNITS))
        r0, r1, c0, c1 = door_box  # the door's cells
        page.mouse.move(box["x"] + c0 * CELL + 32, box["y"] + r0 * CELL + 32)
        page.mouse.down()
        for y in range(r0, r1 + 1):
            page.mouse.move(box["x"] + c0 * CELL + 32, box["y"] + y * CELL + 32, steps=2)
            page.mouse.move(box["x"] + c1 * CELL + 32, box["y"] + y * CELL + 32, steps=6)
        page.mouse.up()
        page.click("#remove")
        page.wait_for_selector("body[data-edits='2']", timeout=30_000)
        removed = image_of(page)
        page.click("#clear")
        page.screenshot(path=str(shots / "paint_3_removed.png"))
        page.locator("#stage").screenshot(path=str(shots / "stage_3_removed.png"))
        page.click("#undo")
        page.wait_for_selector("body[data-edits='1']", timeout=30_000)
        assert np.array_equal(image_of(page), drawn)
        assert page.text_content("#error") == ""
        browser.close()
    assert requests and all(r.startswith(base) or r.startswith("data:") for r in requests), requests
    for png in shots.iterdir():
        assert png.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("LIGHTNING_GD_SCREENSHOTS"):
        out = Path(os.environ["LIGHTNING_GD_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        for png in shots.iterdir():
            shutil.copy(png, out / png.name)
        strokes = {"seed": seed, "tree_rows": rows, "tree_cols": cols, "tree_units": DRAW_UNITS}
        strokes |= {"door_cells": door_box, "door_units": REMOVE_UNITS}
        counts = pixel_counts(served.segmenter, {"original": before, "drawn": drawn, "removed": removed})
        (out / "paint_counts.json").write_text(json.dumps({**strokes, "pixels": counts}, indent=2))


def pixel_counts(seg, images: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """The segmenter's tree and door pixel counts in each page image (64, 64, 3) uint8: what the README says of
    the screenshots, measured on the very images they show."""
    import torch

    out = {}
    for name, image in images.items():
        x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 127.5 - 1  # (1, 3, 64, 64) in [-1, 1]
        with torch.no_grad():
            labels = seg.labels(x)[0]
        out[name] = {c: int((labels == seg.concept_index(c)).sum()) for c in ("tree", "door")}
    return out

"""Pictures made of images: the outline of a unit's region drawn exactly on its border, the units' top images
(paper Fig. 3) against the generator's own images, label colouring and image grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from lightning_gd.reports.images import OUTLINE, colorize, outline, save_rows, unit_rows_image, unit_strips
from tests.helpers import REPORT_K, REPORT_LAYERS, Z_DIM

pytestmark = pytest.mark.usefixtures("one_thread")

K, LAYERS = REPORT_K, REPORT_LAYERS


def test_outline_draws_exactly_the_border_of_a_square():
    img = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(1, 3, 8, 8)  # every pixel distinct, none yellow
    before = img.clone()
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    ring = mask[0].clone()
    ring[3:5, 3:5] = False
    assert ring.sum() == 12
    out = outline(img, mask)
    assert torch.equal(img, before)  # the input is left alone
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert torch.equal(out[0][:, ring], OUTLINE[:, None].expand(3, 12))
    assert torch.equal(out[0][:, ~ring], img[0][:, ~ring])
    green = outline(img, mask, torch.tensor([0, 255, 0], dtype=torch.uint8))
    assert torch.equal((green != img).any(1)[0], ring)
    assert torch.equal(outline(img, torch.zeros_like(mask)), img)  # no region, nothing drawn


def test_unit_strips_are_the_top_images(planted):
    g, d, strips = planted
    for layer in LAYERS:
        res = d.layers[layer]
        assert sorted(strips[layer]) == [0, 1, 2]
        for u, strip in strips[layer].items():
            assert strip.shape == (K, 3, 64, 64) and strip.dtype == torch.uint8
            idx = res.top_indices[u].tolist()
            with torch.no_grad():
                z = latents(idx, Z_DIM, d.settings.seed)
                r = g.layer1(z) if layer == "layer1" else g.layer2(g.layer1(z))
                raw = to_uint8(g(z))
            mask = F.interpolate(r, size=(64, 64), mode="bilinear", align_corners=False)[:, u] > res.thresholds[u]
            assert torch.equal(strip, outline(raw, mask)), (layer, u)
            drawn = (strip != raw).any(1)  # only outline pixels differ from the generator's own images
            assert (strip.permute(0, 2, 3, 1)[drawn] == OUTLINE).all()
            if u == 0:
                assert drawn.flatten(1).any(1).all()  # the dome is outlined in every top image
            if u == 2:
                assert torch.equal(strip, raw)  # the dead unit has no region above its threshold
    few = unit_strips(g, d.layers["layer1"], Z_DIM, 0, k=2, units=[0])
    assert list(few) == [0] and torch.equal(few[0], strips["layer1"][0][:2])


def test_unit_rows_image_has_a_row_per_unit(planted):
    _, d, strips = planted
    record = {"best_iou": [0.9, 0.01, 0.0], "best_concept": ["dome", "sky", "sky"], "iou_threshold": 0.05}
    picture = unit_rows_image({u: strips["layer1"][u] for u in (0, 2)}, record, caption_width=96)
    assert picture.dtype == "uint8" and picture.shape == (2 * 66, 96 + K * 66, 3)  # 1-pixel frames around images
    assert unit_rows_image({}, record).shape == (8, 96, 3)


def test_colorize_and_save_rows(tmp_path):
    labels = torch.tensor([[[0, 1], [2, 13]]])  # 13 wraps around the palette
    colours = colorize(labels)
    assert colours.shape == (1, 3, 2, 2) and colours.dtype == torch.uint8
    assert torch.equal(colours[0, :, 1, 1], colours[0, :, 0, 1])  # 13 % 12 == 1
    assert not torch.equal(colours[0, :, 0, 0], colours[0, :, 0, 1])
    rows = [torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.full((3, 3, 4, 4), 255, dtype=torch.uint8)]
    path = save_rows(rows, tmp_path / "sub" / "grid.png", scale=2, pad=2)
    with Image.open(path) as img:
        assert img.size == (2 * (3 * 6 + 2), 2 * (2 * 6 + 2))  # 3 images per row, 2 rows, 2-pixel padding

"""Pictures made of images: the outline of a region drawn exactly on its border, a unit's region shown by dimming
the rest, the units' top images (paper Fig. 3) and featuremaps against the generator's own, label colouring and
image grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_gd.dissection.top_images import unit_strips
from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from lightning_gd.reports.grids import colorize
from lightning_gd.reports.images import OUTLINE, dim_outside, outline, save_rows, unit_rows_image
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


def test_dim_outside_darkens_exactly_the_outside():
    img = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(1, 3, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 1:7] = True
    out = dim_outside(img, mask, keep=0.3)
    assert out.dtype == torch.uint8 and torch.equal(out[0][:, mask[0]], img[0][:, mask[0]])
    assert torch.equal(out[0][:, ~mask[0]], (img[0][:, ~mask[0]].float() * 0.3).round().to(torch.uint8))


def _reference(g, d, layer, units, idx):
    """The generator's own images of samples `idx` and unit `units`' featuremaps on them, computed directly."""
    with torch.no_grad():
        z = latents(idx, Z_DIM, d.settings.seed)
        r = g.layer1(z) if layer == "layer1" else g.layer2(g.layer1(z))
        return to_uint8(g(z)), r


def test_unit_images_are_the_shown_samples_and_their_maps(planted):
    g, d, shown = planted
    assert shown.samples.tolist() == sorted(set(shown.samples.tolist()))  # each sample stored once
    for layer in LAYERS:
        res = d.layers[layer]
        expected = res.shown_images()
        assert shown.slots[layer].shape == (3, K)
        for u in range(3):
            idx = expected[u].tolist()
            assert shown.samples[shown.slots[layer][u]].tolist() == idx  # the slots point at the shown samples
            raw, r = _reference(g, d, layer, u, idx)
            assert torch.equal(shown.images[shown.slots[layer][u]], raw)
            torch.testing.assert_close(shown.maps[layer][u], r[:, u], atol=1e-6, rtol=0)
            mask = F.interpolate(r, size=(64, 64), mode="bilinear", align_corners=False)[:, u] > res.thresholds[u]
            strip = shown.strip(layer, u)
            assert torch.equal(strip, dim_outside(raw, mask)), (layer, u)
            if u == 0:
                assert mask.flatten(1).any(1).all()  # the dome is lit in every top image
            if u == 2:
                assert not mask.any()  # the dead unit has no region above its threshold: all dimmed


def test_unit_strips_are_each_units_own_top_images(planted):
    g, d, _ = planted
    strips = unit_strips(g, d.layers["layer2"], Z_DIM, 0, k=2, units=[2, 0])
    assert list(strips) == [2, 0]
    for u, strip in strips.items():
        idx = d.layers["layer2"].top_indices[u, :2].tolist()
        raw, r = _reference(g, d, "layer2", u, idx)
        mask = (
            F.interpolate(r, size=(64, 64), mode="bilinear", align_corners=False)[:, u]
            > d.layers["layer2"].thresholds[u]
        )
        assert strip.shape == (2, 3, 64, 64) and torch.equal(strip, dim_outside(raw, mask))


def test_unit_rows_image_has_a_row_per_unit(planted):
    _, d, shown = planted
    record = {"best_iou": [0.9, 0.01, 0.0], "best_concept": ["dome", "sky", "sky"], "iou_threshold": 0.05}
    picture = unit_rows_image({u: shown.strip("layer1", u) for u in (0, 2)}, record, caption_width=96)
    assert picture.dtype == "uint8" and picture.shape == (2 * 66, 96 + K * 66, 3)  # 1-pixel frames around images
    assert unit_rows_image({}, record).shape == (8, 96, 3)


def test_colorize_and_save_rows(tmp_path):
    labels = torch.tensor([[[0, 1], [2, 13]]])  # 13: the default palette never wraps
    colours = colorize(labels)
    assert colours.shape == (1, 3, 2, 2) and colours.dtype == torch.uint8
    assert len({tuple(c) for c in colours[0].flatten(1).T.tolist()}) == 4
    rows = [torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.full((3, 3, 4, 4), 255, dtype=torch.uint8)]
    path = save_rows(rows, tmp_path / "sub" / "grid.png", scale=2, pad=2)
    with Image.open(path) as img:
        assert img.size == (2 * (3 * 6 + 2), 2 * (2 * 6 + 2))  # 3 images per row, 2 rows, 2-pixel padding

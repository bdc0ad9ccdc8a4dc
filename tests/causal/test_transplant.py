"""The transplant probe on generators whose locality is known by construction: a renderer that draws each
featuremap location on its own reproduces every transplanted square; one that draws the object from a global
statistic of the featuremap (its centre of mass) reproduces almost nothing."""

from __future__ import annotations

import torch
from torch import nn

from lightning_gd.causal.transplant import square_coverage, transplant
from lightning_gd.models.split import LayerSplit
from tests.helpers import BLOB, FM, SCALE, Z_DIM, Planted, PlantedGenerator, segmenter


class CentroidRender(nn.Module):
    """Draws a BLOB × BLOB red square at the centre of mass of unit 0: nothing local survives a transplant."""

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        w = r[:, 0].clamp(min=0)  # (B, FM, FM)
        cells = torch.arange(FM, dtype=r.dtype, device=r.device)
        total = w.sum((1, 2)).clamp(min=1e-6)
        cy, cx = (w.sum(2) * cells).sum(1) / total, (w.sum(1) * cells).sum(1) / total
        y0, x0 = (cy - (BLOB - 1) / 2).round(), (cx - (BLOB - 1) / 2).round()
        iy = (cells[None] >= y0[:, None]) & (cells[None] < y0[:, None] + BLOB)
        ix = (cells[None] >= x0[:, None]) & (cells[None] < x0[:, None] + BLOB)
        dome = (iy[:, :, None] & ix[:, None, :]).float()[:, None]
        return PlantedGenerator().render(torch.cat([dome, r[:, 1:]], 1))


class CentroidGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.layer1 = Planted()
        self.render = CentroidRender()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(self.layer1(z))


def test_square_coverage_is_the_mean_over_each_square_of_cells():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 16, 16, generator=gen) > 0.6  # (B, H, W) over a 4×4 featuremap of 4×4-pixel cells
    got = square_coverage(mask, (4, 4), 2)
    assert got.shape == (2, 3, 3)
    for b in range(2):
        for y in range(3):
            for x in range(3):
                expected = mask[b, y * 4 : y * 4 + 8, x * 4 : x * 4 + 8].float().mean()
                torch.testing.assert_close(got[b, y, x], expected)


def test_a_local_renderer_reproduces_every_transplanted_square():
    split = LayerSplit(PlantedGenerator(), "layer1")
    for region in (1, 2):
        res = transplant(split, segmenter(), "dome", n=24, region=region, batch_size=10, progress=False)
        assert res.pairs == 24 and res.window_px == region * SCALE
        assert res.donor_share == 1.0 and res.before_share == 0.0
        assert res.kept_share == 1.0 and res.reproduced == 1.0
        assert set(res.by_background) <= {"sky", "grass"} and sum(v["pairs"] for v in res.by_background.values()) == 24


def test_a_renderer_that_draws_from_a_global_statistic_reproduces_almost_nothing():
    split = LayerSplit(CentroidGenerator(), "layer1")
    res = transplant(split, segmenter(), "dome", n=40, region=2, batch_size=20, progress=False)
    assert res.pairs > 20 and res.donor_share == 1.0
    assert res.reproduced < 0.2, res.to_dict()


def test_the_same_pairs_whatever_the_batch_size():
    split = LayerSplit(PlantedGenerator(), "layer1")
    a = transplant(split, segmenter(), "dome", n=12, region=2, batch_size=12, progress=False).to_dict()
    b = transplant(split, segmenter(), "dome", n=12, region=2, batch_size=5, progress=False).to_dict()
    assert a == b

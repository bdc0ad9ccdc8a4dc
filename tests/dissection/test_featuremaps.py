"""Featuremaps at the segmentation's resolution: the sparse grid of the threshold passes samples exactly the bilinear
upsampling `F.interpolate` computes, and `upsample` (separable matmuls) equals it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_gd.dissection.featuremaps import sample_offsets, sparse_labels, sparse_upsample, upsample

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- sparse grid


@pytest.mark.parametrize("size,h,stride", [((64, 64), 16, 4), ((32, 48), 7, 4), ((24, 24), 8, 3)])
def test_sparse_upsample_samples_the_bilinear_upsampling(size, h, stride):
    r = torch.randn(20, 3, h, h + 1, generator=gen(0))
    indices = torch.arange(100, 120)
    full = F.interpolate(r, size=size, mode="bilinear", align_corners=False)
    labels = torch.randint(0, 5, (20, *size), generator=gen(1))
    sparse = sparse_upsample(r, indices, size, stride)
    slab = sparse_labels(labels, indices, stride)
    oy, ox = sample_offsets(indices, stride)
    H, W = size
    assert sparse.shape == (20, 3, H // stride, W // stride) and slab.shape == (20, H // stride, W // stride)
    assert len({(a, b) for a, b in zip(oy.tolist(), ox.tolist())}) == min(20, stride * stride)
    for i in range(20):
        rows = range(oy[i].item(), H, stride)[: H // stride]
        cols = range(ox[i].item(), W, stride)[: W // stride]
        expect = full[i][:, list(rows)][:, :, list(cols)]
        torch.testing.assert_close(sparse[i], expect, atol=1e-5, rtol=0)
        assert torch.equal(slab[i], labels[i][list(rows)][:, list(cols)])
    # stride 1 is `upsample`, separable matmuls: equal to F.interpolate up to float rounding
    torch.testing.assert_close(sparse_upsample(r, indices, size, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 3, 16, 16), (1, 2, 5, 7), (1, 1, 64, 64)])
def test_upsample_matches_bilinear_interpolate(shape):
    r = torch.randn(shape, generator=gen(3))
    expect = F.interpolate(r, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample(r, (64, 64)), expect, atol=1e-5, rtol=0)

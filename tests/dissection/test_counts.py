"""`counts.band_counts` against a brute force: the upsampled map, dense masks and bins computed unit by unit and
bin by bin with plain comparisons; uneven shapes, plateaus, saturation, label groups with unlabelled pixels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_gd.dissection.counts import band_counts
from lightning_gd.dissection.featuremaps import upsample


def brute(r, groups, offsets, C, lo, hi, bins):
    """Band counts, pixels equal to lo, and per-bin extremes, unit by unit and bin by bin."""
    B, U = r.shape[:2]
    size = tuple(groups[0].shape[-2:])
    up = upsample(r, size).double()  # (B, U, H, W): the values band_counts thresholds
    exact = F.interpolate(r.double(), size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, exact, atol=1e-6, rtol=0)  # float32 rounding of the exact values
    counts = torch.zeros(U, C + 1, bins + 2, dtype=torch.long)
    low = torch.full((U, bins + 2), float("inf"), dtype=torch.float64)
    high = torch.full((U, bins + 2), -float("inf"), dtype=torch.float64)
    equal = torch.zeros(U, dtype=torch.long)
    for u in range(U):
        v = up[:, u]
        lo_u, hi_u = float(lo[u]), float(hi[u])
        equal[u] = int((v == lo_u).sum())
        k = torch.zeros_like(v, dtype=torch.long)
        if bins:
            step = (hi_u - lo_u) / bins
            k = torch.ceil((v - lo_u) / step).clamp(1, bins).long() if step > 0 else torch.ones_like(k)
        k = torch.where(v > hi_u, bins + 1, k)
        k = torch.where(v > lo_u, k, torch.zeros_like(k))  # bin 0: at or below lo, not counted
        for b in range(1, bins + 2):
            sel = k == b
            counts[u, C, b] = int(sel.sum())
            if sel.any() and b <= bins:
                low[u, b], high[u, b] = v[sel].min(), v[sel].max()
            for labels, off in zip(groups, offsets):
                for c in range(int(labels.max()) + 1):
                    counts[u, off + c, b] += int((sel & (labels == c)).sum())
    return counts, equal, low, high


@pytest.mark.parametrize(
    "h, w, H, W",
    [(8, 8, 64, 64), (5, 7, 32, 24), (16, 16, 16, 16), (3, 3, 64, 64)],
    ids=["x8", "uneven", "same", "x21"],
)
@pytest.mark.parametrize("bins", [0, 1, 16])
def test_band_counts_equal_the_brute_force(h, w, H, W, bins):
    torch.manual_seed(h * 100 + w + bins)
    B, U = 3, 4
    r = torch.randn(B, U, h, w)
    r[:, 0] = F.relu(r[:, 0] - 0.8)  # a ReLU plateau at 0
    r[:, 1] = r[:, 1].clamp(max=0.7)  # a saturated top
    a = torch.randint(-1, 3, (B, H, W))  # group 0: 3 concepts, -1 unlabelled
    b = torch.randint(-1, 2, (B, H, W))  # group 1: 2 overlapping concepts
    groups, offsets, C = [a, b], [0, 3], 5
    flat = F.interpolate(r.double(), size=(H, W), mode="bilinear", align_corners=False).transpose(0, 1).flatten(1)
    lo = torch.quantile(flat, 0.6, dim=1).float()
    lo[0] = 0.0  # exactly the plateau
    hi = lo if bins == 0 else torch.quantile(flat, 0.95, dim=1).float()
    counts, equal, low, high = band_counts(r, groups, offsets, C, lo, hi, bins)
    ref_counts, ref_equal, ref_low, ref_high = brute(r, groups, offsets, C, lo, hi, bins)
    assert torch.equal(counts, ref_counts)
    # pixels equal to lo are counted where lo is a plateau of the featuremap (unit 0's zeros: all of them)
    assert equal[0] == ref_equal[0] and (equal <= ref_equal).all()
    seen = torch.isfinite(ref_low)
    if bins:
        torch.testing.assert_close(
            low[:, 1 : bins + 1][seen[:, 1 : bins + 1]], ref_low[:, 1 : bins + 1][seen[:, 1 : bins + 1]]
        )
        torch.testing.assert_close(
            high[:, 1 : bins + 1][seen[:, 1 : bins + 1]], ref_high[:, 1 : bins + 1][seen[:, 1 : bins + 1]]
        )


def test_same_size_maps_keep_infinite_values():
    """Maps already at the labels' size are not interpolated (a product with the identity turned inf into nan)."""
    r = torch.zeros(1, 1, 4, 4)
    r[0, 0, 1, 2], r[0, 0, 3, 3], r[0, 0, 0, 0], r[0, 0, 2, 1] = float("inf"), 2.0, 3.0, 4.0
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    counts, *_ = band_counts(r, [labels], [0], 1, torch.tensor([1.0]), torch.tensor([1.0]), 0)
    assert counts[0, 1, 1] == 4  # the 4 pixels above 1, inf included


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_the_row_bound_loses_no_pixel_at_or_above_lo(q):
    """`_above` skips map rows whose interpolated row maxima stay below lo: on maps spanning six orders of magnitude,
    with rows at exactly lo and infinite values, it returns exactly the pixels of `upsample` that reach lo."""
    from lightning_gd.dissection.counts import _above

    torch.manual_seed(int(q * 100))
    B, U, h, w, H, W = 2, 5, 6, 5, 48, 40
    r = torch.randn(B, U, h, w) * torch.logspace(-3, 3, U)[None, :, None, None]
    lo = torch.quantile(upsample(r, (H, W)).transpose(0, 1).flatten(1), q, dim=1)
    r[0, 1, 2] = lo[1]  # a whole source row exactly at lo: its interpolated rows are lo, the bound equals lo
    r[1, 3, 4, 2] = float("inf")  # inf (and the nan that interpolating it next to finite values gives)
    up = upsample(r, (H, W))  # (B, U, H, W)
    u, pixel, v = _above(r, (H, W), lo)
    got = sorted(zip(u.tolist(), pixel.tolist()))
    want_mask = up >= lo[None, :, None, None]  # nan never counts
    bb, uu, yy, xx = want_mask.nonzero().unbind(1)
    want = sorted(zip(uu.tolist(), (bb * H * W + yy * W + xx).tolist()))
    assert got == want and len(want) > 0
    assert torch.equal(v.sort().values, up[want_mask].sort().values)  # bit for bit the values of upsample

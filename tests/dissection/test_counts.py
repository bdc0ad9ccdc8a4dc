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
    # pixels equal to lo (unit 0's plateau of zeros: all of them), exactly as the brute force counts them
    assert equal[0] > 0 and torch.equal(equal, ref_equal)
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


def _above_by_upsample(r, size, lo):
    """(unit, pixel) pairs and values of upsample(r) ≥ lo, densely."""
    H, W = size
    up = upsample(r, size)
    mask = up >= lo[None, :, None, None]
    bb, uu, yy, xx = mask.nonzero().unbind(1)
    return sorted(zip(uu.tolist(), (bb * H * W + yy * W + xx).tolist())), up[mask].sort().values


@pytest.mark.parametrize(
    "h, w, H, W, block",
    [(5, 7, 36, 30, 8), (16, 9, 16, 24, 8), (12, 12, 6, 6, 8), (4, 4, 64, 64, 1), (3, 5, 20, 20, 64)],
    ids=["H-not-a-multiple-of-8", "same-height-other-width", "downsampling", "blocks-of-1", "one-block"],
)
def test_above_matches_upsample_for_every_shape_and_block(h, w, H, W, block):
    from lightning_gd.dissection.counts import _above

    torch.manual_seed(h * w + H)
    r = torch.randn(3, 4, h, w)
    lo = torch.quantile(upsample(r, (H, W)).transpose(0, 1).flatten(1), 0.8, dim=1)
    u, pixel, v = _above(r, (H, W), lo, block=block)
    want, values = _above_by_upsample(r, (H, W), lo)
    assert sorted(zip(u.tolist(), pixel.tolist())) == want and torch.equal(v.sort().values, values)


def test_above_keeps_rows_where_interpolating_overflows():
    """B − A overflows float32 between opposite-sign huge values: upsample gives inf there though both rows'
    maxima are finite, so the bound's margin (from the rows' largest magnitudes) must keep the row."""
    from lightning_gd.dissection.counts import _above

    r = torch.tensor([[[[2e38, 0.0], [-1.6e38, 1e38]]]])
    lo = torch.tensor([2.5e38])
    want, values = _above_by_upsample(r, (4, 2), lo)
    u, pixel, v = _above(r, (4, 2), lo)
    assert len(want) == 1 and sorted(zip(u.tolist(), pixel.tolist())) == want and torch.equal(v, values)


def test_the_bound_skips_most_rows_of_a_sparse_map(monkeypatch):
    """A unit active in one cell: only the output rows near that cell are interpolated."""
    from lightning_gd.dissection import counts

    seen = []
    real_lerp = torch.lerp
    monkeypatch.setattr(counts.torch, "lerp", lambda a, b, w, **k: seen.append(a.shape[0]) or real_lerp(a, b, w, **k))
    r = torch.zeros(2, 3, 8, 8)
    r[1, 2, 4, 5] = 1.0
    u, pixel, v = counts._above(r, (64, 64), torch.tensor([0.5, 0.5, 0.5]))
    rows = sum(seen[1:])  # seen[0]: the bound itself, one lerp over (H, B·U)
    assert 0 < rows <= 16 and set(u.tolist()) == {2}  # of 64·2·3 = 384 map rows, the ≤ 16 around the cell

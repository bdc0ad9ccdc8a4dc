"""One-pass quantile dissection maths (`bands`): the pooled quantile and IoU read off band counts against the
exact computation (torch.quantile over every upsampled pixel, dense masks), plateaus, atoms, missed bands, batch
splits, the fixed-threshold tally, and `quantile_pass` falling back to a whole-range band for missed units."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from lightning_gd.dissection import dissect
from lightning_gd.dissection.bands import BandTally, RangeTracker, ShareSpread, band_below
from tests.helpers import PlantedGenerator, segmenter

C = 4


def sample(seed: int, B: int = 8, U: int = 5, h: int = 8, H: int = 64):
    torch.manual_seed(seed)
    r = F.avg_pool2d(torch.randn(B, U, 2 * h + 2, 2 * h + 2), 3, 2)  # smooth (B, U, h, h), like a conv layer
    r[:, 0] = F.relu(r[:, 0] - 0.3)  # mostly ReLU zeros
    labels = torch.randint(-1, C, (B, H // 8, H // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return r, labels


def exact(r, labels, q):
    """torch.quantile over all upsampled pixels, then dense masks r↑ > t: thresholds (U,), IoU (U, C)."""
    up = F.interpolate(r.double(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    t = torch.quantile(up.transpose(0, 1).flatten(1), q, dim=1)
    iou = torch.zeros(r.shape[1], C, dtype=torch.float64)
    for u in range(r.shape[1]):
        m = up[:, u] > t[u]
        for c in range(C):
            k = labels == c
            union = (m | k).sum().item()
            iou[u, c] = (m & k).sum().item() / union if union else 0.0
    return t, iou


def band(r, q, lo_q, hi_q):
    up = F.interpolate(r.double(), size=(64, 64), mode="bilinear", align_corners=False).transpose(0, 1).flatten(1)
    return torch.quantile(up, lo_q, dim=1).float(), torch.quantile(up, hi_q, dim=1).float()


@pytest.mark.parametrize("q", [0.9, 0.99, 0.995])
def test_quantile_and_iou_match_the_exact_computation(q):
    r, labels = sample(0)
    lo, hi = band(r, q, q - 0.04, 1 - (1 - q) / 4)
    tally = BandTally(lo, hi, C, bins=128)
    tally.update(r, [labels], [0])
    thresholds, iou, missed = tally.quantile_iou(q)
    ref_t, ref_iou = exact(r, labels, q)
    assert not missed.any()
    assert (iou - ref_iou).abs().max() <= 2e-3
    torch.testing.assert_close(thresholds.double(), ref_t, atol=2e-3, rtol=0)


def test_batch_splits_give_identical_states():
    r, labels = sample(1, B=9)
    lo, hi = band(r, 0.99, 0.95, 0.998)
    whole, parts = BandTally(lo, hi, C, 32), BandTally(lo, hi, C, 32)
    whole.update(r, [labels], [0])
    for chunk in (slice(0, 4), slice(4, 5), slice(5, 9)):
        parts.update(r[chunk], [labels[chunk]], [0])
    a, b = whole.compute(), parts.compute()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(whole.quantile_iou(0.99), parts.quantile_iou(0.99)))


def test_a_band_that_misses_the_quantile_says_so():
    r, labels = sample(2)
    lo, hi = band(r, 0.99, 0.5, 0.6)  # far below the top-1 % level
    tally = BandTally(lo, hi, C, 16)
    tally.update(r, [labels], [0])
    assert tally.quantile_iou(0.99)[2][1:].all()
    lo, hi = band(r, 0.99, 0.999, 0.9999)  # above it
    tally = BandTally(lo, hi, C, 16)
    tally.update(r, [labels], [0])
    assert tally.quantile_iou(0.99)[2][1:].all()


def test_relu_plateau_at_lo_gives_threshold_zero_and_keeps_zeros_out():
    r, labels = sample(3)
    r[:, 0] = F.relu(r[:, 0] - 0.6)  # zero on more than 99 % of pixels
    up = F.interpolate(r.double(), size=(64, 64), mode="bilinear", align_corners=False)
    assert (up[:, 0] == 0).double().mean() > 0.99
    lo = torch.zeros(r.shape[1])
    tally = BandTally(lo, torch.full_like(lo, 2.0), C, 16)
    tally.update(r, [labels], [0])
    thresholds, iou, missed = tally.quantile_iou(0.99)
    assert not missed[0] and thresholds[0] == 0
    _, ref_iou = exact(r, labels, 0.99)
    torch.testing.assert_close(iou[0], ref_iou[0], atol=1e-12, rtol=0)  # the mask is r↑ > 0, counted exactly


def test_a_saturated_top_is_the_mask_not_an_empty_one():
    """A unit at its maximum value on more than 1 − q of the pixels (an atom alone in its bin): r↑ > quantile
    would be empty, so the threshold is the float32 value just below the atom and the mask the saturated region."""
    r, labels = sample(4)
    top = torch.tensor(2.0)
    r[:, 1] = torch.where(r[:, 1] > torch.quantile(r[:, 1].flatten(), 0.7), top, r[:, 1] - 1.0)  # a gap below top
    low, high = r.amin((0, 2, 3)), r.amax((0, 2, 3))
    tally = BandTally(low, high, C, 4096)  # the whole range, as the second pass uses
    tally.update(r, [labels], [0])
    thresholds, iou, missed = tally.quantile_iou(0.99)
    assert not missed[1] and thresholds[1] == torch.nextafter(top, torch.tensor(-1e9))
    up = F.interpolate(r.double(), size=(64, 64), mode="bilinear", align_corners=False)[:, 1]
    m = up > thresholds[1]
    assert torch.equal(m, up == 2.0) and m.double().mean() > 0.01  # exactly the saturated region
    for c in range(C):
        k = labels == c
        assert iou[1, c] == pytest.approx((m & k).sum().item() / (m | k).sum().item(), abs=1e-12)


def test_fixed_threshold_tally_is_exact():
    r, labels = sample(5)
    t = torch.tensor([0.0, 0.1, -0.2, 0.3, 0.05])
    tally = BandTally(t, t, C, bins=0)
    tally.update(r, [labels], [0])
    up = F.interpolate(r.double(), size=(64, 64), mode="bilinear", align_corners=False)
    for u in range(5):
        m = up[:, u] > float(t[u])
        for c in range(C):
            k = labels == c
            assert tally.iou()[u, c] == pytest.approx((m & k).sum().item() / (m | k).sum().item(), abs=1e-12)


def test_share_spread_and_band_depth_against_a_hand_computation():
    """Per image, the share of a unit's pixels above t; over images, the standard error of their mean (statistics'
    sample stdev / √m) times z, clamped to [floor·(1 − q), min(cap·(1 − q), q/2)]; batch splits change nothing."""
    torch.manual_seed(3)
    acts = torch.randn(12, 4, 6, 6)
    acts[:, 3] = 0.0  # a unit never above t: no spread, the floor
    acts[:3, 2] += 3.0  # a unit that fires in 3 images of 12: a deep band (the cap)
    t = torch.tensor([1.5, 2.0, 1.0, 0.5])
    whole, split = ShareSpread(t), ShareSpread(t)
    whole.update(acts)
    for part in acts.split(5):
        split.update(part)
    total, squares, images = whole.compute()
    for a, b in zip((total, squares, images), split.compute()):
        assert torch.allclose(a.double(), b.double(), rtol=0, atol=1e-12)
    q, z, floor, cap = 0.99, 6.0, 0.5, 2.5
    below = band_below(total, squares, images, q, z, floor, cap)
    for u in range(4):
        shares = [float((acts[i, u] > t[u]).double().mean()) for i in range(12)]
        se = statistics.stdev(shares) / 12**0.5
        want = min(max(z * se, floor * (1 - q)), min(cap * (1 - q), q / 2))
        assert abs(float(below[u]) - want) < 1e-12, (u, float(below[u]), want)
    assert float(below[3]) == pytest.approx(floor * (1 - q)) and float(below[2]) == pytest.approx(cap * (1 - q))
    one = ShareSpread(t)
    one.update(acts[:1])
    assert torch.allclose(
        band_below(*one.compute(), q, z, floor, cap), torch.full((4,), cap * (1 - q), dtype=torch.float64)
    )


def test_range_tracker():
    r, _ = sample(6)
    rt = RangeTracker(5)
    rt.update(r[:3])
    rt.update(r[3:])
    low, high = rt.compute()
    assert torch.equal(low, r.amin((0, 2, 3))) and torch.equal(high, r.amax((0, 2, 3)))


def test_missed_units_get_a_second_pass_and_the_right_answer(one_thread):
    """A 2-sample warm-up cannot place the bands: the missed units are recomputed over their whole range, and
    the result matches the exact computation as well as a good warm-up does."""
    g, seg = PlantedGenerator(), segmenter()
    kw = dict(n=40, batch_size=20, q=0.99, progress=False)
    good = dissect(g, "layer1", seg, **kw).layers["layer1"]
    with pytest.warns(UserWarning, match="one more pass"):
        poor = dissect(g, "layer1", seg, warmup=1, **kw).layers["layer1"]
    assert (poor.iou - good.iou).abs().max() <= 2e-3
    assert (poor.thresholds - good.thresholds).abs().max() <= 2e-3

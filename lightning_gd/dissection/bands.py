"""One-pass quantile dissection: thresholds and IoU tallies from the same generator + segmenter pass.

The top-(1−q) threshold of a unit is not known until every sample has been seen, but it lies, with high
probability, inside a band (lo, hi] that a small warm-up slice of the sample predicts (its quantiles at levels
below and above q). During the pass, `BandTally` counts, per unit and concept, the upsampled pixels above `hi`
and the pixels inside the band in `bins` equal bins (`counts.band_counts`). At the end, the exact pooled
quantile is found in the band from the unit's total pixel count, and every intersection is read off the same
bins: the pixels of the bins above the threshold's bin plus the share of that bin above the threshold (linear
between the smallest and largest value the bin holds). A unit whose quantile falls outside its band is
reported as *missed* and recomputed by the caller with a band spanning the unit's whole range (its minimum and
maximum activation, tracked by `RangeTracker`).

Pure maths (`band_quantile_iou`, `fixed_iou`) take summed counts, so DDP and batch splits give the same answer.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from lightning_gd.dissection.counts import band_counts, count_keys
from lightning_gd.dissection.stats import iou_from_tallies


def band_quantile_iou(
    counts: torch.Tensor,
    equal: torch.Tensor,
    pixels: int,
    concept_area: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    q: float,
    low: torch.Tensor | None = None,
    high: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(thresholds (U,), IoU (U, C), missed (U,) bool) from band counts (U, C + 1, bins + 2).

    `pixels` is the number of upsampled pixels per unit in the whole sample and `equal` (U,) the pixels known to
    equal lo. The q-quantile is the value below which q · pixels fall, interpolated linearly inside its bin
    between the smallest and largest values the bin holds (`low`, `high` (U, bins + 2); the bin's edges if not
    given). Masks are r↑ > threshold: a bin holding one value only (an atom) at the quantile is wholly at or
    below it, except when nothing lies above the atom (a unit saturated on more than 1 − q of the pixels): then
    the threshold is the float32 value just below the atom, so the mask is the saturated region rather than
    empty. The quantile is lo itself when the pixels equal to lo straddle that level (a plateau such as ReLU
    zeros, which stay outside the mask)."""
    counts = counts.double()
    U, C1, nb = counts.shape
    bins = nb - 2
    every = counts[:, -1]  # (U, nb): all pixels
    target = q * pixels
    at_or_below_lo = pixels - every[:, 1:].sum(1)  # (U,)
    cum = at_or_below_lo[:, None] + every[:, 1 : bins + 1].cumsum(1)  # (U, bins): pixels ≤ each bin's top
    k = torch.searchsorted(cum, torch.full((U, 1), target, dtype=cum.dtype, device=cum.device)).squeeze(1)
    plateau = (at_or_below_lo >= target) & (at_or_below_lo - equal.double() < target)
    missed = ((at_or_below_lo >= target) & ~plateau) | (k >= bins)
    k = k.clamp(max=bins - 1)  # 0-based band bin holding the quantile (bin k + 1 of the counts)
    before = torch.where(k > 0, cum.gather(1, (k - 1).clamp(min=0)[:, None]).squeeze(1), at_or_below_lo)
    inside = every.gather(1, (k + 1)[:, None]).squeeze(1).clamp(min=1e-300)
    within = ((target - before) / inside).clamp(0, 1)  # share of the bin at or below the threshold
    step = (hi.double() - lo.double()) / bins
    v0, v1 = lo.double() + k.double() * step, lo.double() + (k.double() + 1) * step  # the bin's edges
    if low is not None and high is not None:
        b_lo, b_hi = (
            low.double().gather(1, (k + 1)[:, None]).squeeze(1),
            high.double().gather(1, (k + 1)[:, None]).squeeze(1),
        )
        seen = torch.isfinite(b_lo) & torch.isfinite(b_hi)
        v0, v1 = torch.where(seen, b_lo, v0), torch.where(seen, b_hi, v1)
        atom = seen & (b_lo == b_hi)
        # an atom (many pixels of one value) holds the quantile: r↑ > t leaves it out, unless nothing lies above
        # it (a unit saturated on more than 1 − q of the pixels), whose mask is then the atom, not empty
        empty_above = (every * (torch.arange(nb, device=every.device)[None, :] > (k + 1)[:, None])).sum(1) == 0
        top_atom = atom & empty_above
        within = torch.where(atom & ~top_atom, torch.ones_like(within), within)
        within = torch.where(top_atom, torch.zeros_like(within), within)
        v0 = torch.where(top_atom, torch.nextafter(b_lo.float(), torch.tensor(-float("inf"))).double(), v0)
    thresholds = torch.where(plateau, lo.double(), v0 + within * (v1 - v0))
    # per concept: pixels in the bins above k, plus the share (1 − within) of bin k; plateau: everything above lo
    above_bins = torch.arange(nb, device=counts.device)[None, :] > (k + 1)[:, None]  # (U, nb)
    weight = above_bins.double()
    weight.scatter_(1, (k + 1)[:, None], (1 - within)[:, None])
    weight = torch.where(plateau[:, None], (torch.arange(nb, device=counts.device) >= 1).double()[None], weight)
    inter = (counts * weight[:, None, :]).sum(2)  # (U, C + 1)
    iou = iou_from_tallies(inter[:, :-1], inter[:, -1], concept_area)
    return thresholds.float(), iou, missed


def fixed_iou(counts: torch.Tensor, concept_area: torch.Tensor) -> torch.Tensor:
    """IoU (U, C) of the masks above a fixed threshold: counts (U, C + 1, 2) from a band with lo = hi, bins = 0."""
    above = counts[:, :, 1]
    return iou_from_tallies(above[:, :-1], above[:, -1], concept_area)


class BandTally(Metric):
    """Band counts of upsampled activations per unit and concept, summed over batches and DDP ranks.

    Args:
        lo, hi: (U,) the band; with `bins` = 0 and lo = hi, the tally of the masks r↑ > lo.
        num_concepts: concepts of the vocabulary (label groups' offsets index them).
        bins: equal bins inside the band.
    """

    full_state_update = False

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, num_concepts: int, bins: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if lo.shape != hi.shape or lo.ndim != 1 or bool((hi < lo).any()):
            raise ValueError("BandTally needs per-unit bands lo ≤ hi of shape (U,)")
        U = lo.shape[0]
        self.num_concepts, self.bins = num_concepts, bins
        self.register_buffer("lo", lo.float().clone())
        self.register_buffer("hi", hi.float().clone())
        self.add_state("counts", torch.zeros(U, num_concepts + 1, bins + 2, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("equal", torch.zeros(U, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("concept_area", torch.zeros(num_concepts, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pixels", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        inf = torch.full((U, bins + 2), float("inf"), dtype=torch.float64)
        self.add_state("low", inf.clone(), dist_reduce_fx="min")
        self.add_state("high", -inf, dist_reduce_fx="max")

    def update(self, r: torch.Tensor, groups: list[torch.Tensor], offsets: list[int]) -> None:
        """r: featuremaps (B, U, h, w); groups: label groups (B, H, W) at the segmentation's size."""
        counts, equal, low, high = band_counts(r, groups, offsets, self.num_concepts, self.lo, self.hi, self.bins)
        self.counts += counts
        self.equal += equal
        self.low = torch.minimum(self.low, low)
        self.high = torch.maximum(self.high, high)
        for labels, off in zip(groups, offsets):  # unlabelled pixels (-1) counted in a spare slot, dropped
            lab = torch.where(labels >= 0, labels + off, self.num_concepts).flatten()
            self.concept_area += count_keys(lab, self.num_concepts + 1)[: self.num_concepts]
        self.pixels += groups[0].numel()

    def compute(self) -> dict:
        """The states reduced over ranks (torchmetrics syncs them only for the duration of `compute`, so
        everything derived from them is taken here)."""
        names = ("counts", "equal", "concept_area", "pixels", "low", "high")
        return {name: getattr(self, name).clone() for name in names}

    def quantile_iou(self, q: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(thresholds, IoU, missed) of the pooled sample (`band_quantile_iou`)."""
        st = self.compute()
        return band_quantile_iou(
            st["counts"], st["equal"], int(st["pixels"]), st["concept_area"], self.lo, self.hi, q, st["low"], st["high"]
        )

    def iou(self) -> torch.Tensor:
        """IoU of the fixed-threshold masks (bins = 0)."""
        st = self.compute()
        return fixed_iou(st["counts"], st["concept_area"])


class ShareSpread(Metric):
    """Per unit, how much the share of an image's pixels above a threshold t (U,) varies between images: the sum
    of the shares, of their squares and the number of images, summed over batches and DDP ranks. `band_below`
    turns it into the depth of a unit's band below q."""

    full_state_update = False

    def __init__(self, t: torch.Tensor, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("t", t.float().clone())
        U = t.shape[0]
        self.add_state("total", torch.zeros(U, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", torch.zeros(U, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, acts: torch.Tensor) -> None:
        """acts: (B, U, h, w) at the pixels the threshold was taken from (the warm-up's strided grid)."""
        share = (acts > self.t.to(acts)[None, :, None, None]).double().mean((2, 3))  # (B, U)
        self.total += share.sum(0)
        self.squares += share.square().sum(0)
        self.images += share.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.total.clone(), self.squares.clone(), self.images.clone()


def band_below(
    total: torch.Tensor, squares: torch.Tensor, images: torch.Tensor, q: float, z: float, floor: float, cap: float
) -> torch.Tensor:
    """Per unit, how far below q (as a quantile level) the band starts, from the warm-up's per-image shares above
    the unit's warm-up q-quantile (`ShareSpread`): z standard errors of their mean, at least `floor`·(1 − q) and
    at most `cap`·(1 − q) (and q/2). The share of the whole sample above that quantile differs from the warm-up's
    1 − q by about one standard error of the mean: a unit that fires in a few images varies much more than one
    that fires a little everywhere, so its band is deeper. Fewer than two images: the cap."""
    m = images.double()
    mean = total / m.clamp(min=1)
    var = ((squares - m * mean.square()) / (m - 1).clamp(min=1)).clamp(min=0)
    se = (var / m.clamp(min=1)).sqrt()
    deepest = min(cap * (1 - q), q / 2)
    below = (z * se).clamp(min=min(floor * (1 - q), deepest), max=deepest)
    return torch.where(m >= 2, below, torch.full_like(below, deepest))


class RangeTracker(Metric):
    """Per-unit minimum and maximum activation (upsampled values lie between them), reduced across ranks."""

    full_state_update = False

    def __init__(self, num_units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("low", torch.full((num_units,), float("inf")), dist_reduce_fx="min")
        self.add_state("high", torch.full((num_units,), -float("inf")), dist_reduce_fx="max")

    def update(self, r: torch.Tensor) -> None:
        self.low = torch.minimum(self.low, r.float().amin((0, 2, 3)))
        self.high = torch.maximum(self.high, r.float().amax((0, 2, 3)))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low.clone(), self.high.clone()

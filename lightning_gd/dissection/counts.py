"""Counting thresholded, bilinearly upsampled featuremaps against labels, per unit, concept and value band.

`band_counts` keeps the upsampled pixels above each unit's `lo` (a few per cent at a top-quantile band) and counts
them by concept and by bin of the band (lo, hi]; everything else is summed by the caller (`bands.BandTally`).

The upsampled batch is never written out: after `featuremaps.width_pass`, a bound on each output row's maximum
(from the maxima of the two rows it interpolates) rules out the map rows that cannot reach `lo`, and only the
others are interpolated (the same values `upsample` computes, bit for bit) and searched pixel by pixel, a block
of output rows at a time. No value is read back to the host per batch (the interpolation taps are made on the
device once per size, `featuremaps.device_taps`); on a GPU each block's two `nonzero` calls still wait for the
device to say how many rows and pixels it found (2·⌈H/8⌉ per layer and batch). Measured: bench/dissect.py and the
benchmark table (docs/development.md).
"""

from __future__ import annotations

import torch

from lightning_gd.dissection.featuremaps import device_taps, width_pass


def band_counts(
    r: torch.Tensor,
    groups: list[torch.Tensor],
    offsets: list[int],
    num_concepts: int,
    lo: torch.Tensor,
    hi: torch.Tensor,
    bins: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unit, the upsampled pixels above `lo`, by concept and band bin.

    r: featuremaps (B, U, h, w), upsampled to the labels' size by `featuremaps.upsample` (float32); lo, hi (U,)
    with lo ≤ hi; groups: label groups (B, H, W) (-1: none) with their concept offsets. Returns
    - counts (U, C + 1, bins + 2) (long): bin k in 1…bins holds pixels with value in (lo + (k−1)·Δ, lo + k·Δ],
      Δ = (hi − lo) / bins, the last bin the pixels above hi; bin 0 (at or below lo) is not counted; row C
      counts all pixels. With lo = hi and bins = 0 it is the plain tally of the masks r↑ > lo;
    - equal (U,): pixels exactly equal to lo (a plateau such as ReLU zeros, where lo is a featuremap value),
      for the quantile;
    - low, high (U, bins + 2): the smallest and largest value in each bin (±inf where empty), so the quantile
      can be interpolated between the values a bin really holds and an atom (one value) is recognised."""
    U = r.shape[1]
    C1, nb = num_concepts + 1, bins + 2
    H, W = groups[0].shape[-2:]
    lo_, hi_ = lo.to(r), hi.to(r)
    u, pixel, v32 = _above(r, (H, W), lo_)
    v = v32.double()
    # gathers by index_select: on the CPU 1.5-3× faster than advanced indexing for these 1-D lookups
    lo_d, hi_d = lo_.double(), hi_.double()
    lo_u, hi_u = lo_d.index_select(0, u), hi_d.index_select(0, u)
    # the pixels come at or above lo: those exactly at lo land in bin 0, which is counted as `equal` and then
    # emptied below (cheaper than dropping them from every array)
    if bins > 0:
        step = ((hi_d - lo_d) / bins).clamp(min=1e-300)  # (U,) Δ per unit, the same double as per pixel
        k = torch.ceil((v - lo_u) / step.index_select(0, u)).clamp_(0, bins).long()
        k = torch.where(v > hi_u, bins + 1, k)
    else:
        k = (v > lo_u).long()
    uk = u * nb + k
    # the values are float32: their extremes are found in float32 (half the memory traffic), exactly
    low = torch.full((U * nb,), float("inf"), dtype=v32.dtype, device=r.device).scatter_reduce_(0, uk, v32, "amin")
    high = torch.full((U * nb,), -float("inf"), dtype=v32.dtype, device=r.device).scatter_reduce_(0, uk, v32, "amax")
    base = u * (C1 * nb) + k
    # one key per pixel and group: group 0's unlabelled pixels count in row C (all pixels, completed below by its
    # labelled ones), the other groups' in a spare slot past the end, dropped
    spare = U * C1 * nb
    keys = []
    for g, (labels, off) in enumerate(zip(groups, offsets)):
        # each label's offset in the key, computed once per image pixel (B·H·W) rather than per selected pixel
        flat = labels.reshape(-1).long()  # keys are long: small label dtypes would overflow below
        if g == 0:
            keys.append(base + torch.where(flat >= 0, flat + off, num_concepts).mul_(nb).index_select(0, pixel))
        else:
            lab = torch.where(flat >= 0, (flat + off) * nb, -1).index_select(0, pixel)
            keys.append(torch.where(lab >= 0, base + lab, spare))
    counts = count_keys(torch.cat(keys) if len(keys) > 1 else keys[0], spare + 1)[:spare].view(U, C1, nb)
    first = slice(offsets[0], offsets[1] if len(offsets) > 1 else num_concepts)  # group 0's concepts
    counts[:, num_concepts] += counts[:, first].sum(1)
    equal = counts[:, num_concepts, 0].clone()  # bin 0 of the selected pixels: those exactly at lo
    counts[:, :, 0] = 0  # bin 0: at or below lo, not counted
    low, high = low.double().view(U, nb), high.double().view(U, nb)
    low[:, 0], high[:, 0] = float("inf"), -float("inf")
    return counts, equal, low, high


def count_keys(keys: torch.Tensor, size: int) -> torch.Tensor:
    """How often each of 0 … size−1 occurs in `keys`: `torch.bincount` on the CPU; elsewhere an accumulating
    scatter into a fixed-size tensor, because bincount reads the largest key back to the host first."""
    if keys.device.type == "cpu":
        return torch.bincount(keys, minlength=size)
    return torch.zeros(size, dtype=torch.long, device=keys.device).index_put_(
        (keys,), torch.ones_like(keys), accumulate=True
    )


def _above(r: torch.Tensor, size: tuple[int, int], lo: torch.Tensor, block: int = 8):
    """The upsampled pixels at or above `lo` (U,): their unit, their pixel in the labels (b·H·W + y·W + x) and
    their value (float32, bit for bit what `featuremaps.upsample` computes).

    r↑'s rows are linear interpolations of two rows of the width pass (`featuremaps.width_pass`), so an output
    row's maximum is at most the same interpolation of those two rows' maxima. That bound (with a margin for float
    rounding; NaN keeps a row) rules out most map rows without computing them; only the rows that may reach lo
    are interpolated (`torch.lerp`, as `featuremaps.height_rows` does) and searched pixel by pixel, a block of
    output rows at a time. The full upsampled batch is never computed."""
    B, U, h = r.shape[:3]
    H, W = size
    M = B * U
    lo_maps = lo.repeat(B)  # (B·U,) each map's unit's lo
    src = width_pass(r, W).view(h * M, W)  # row i of map m at i·B·U + m
    i0_t, i1_t, w1_t = device_taps(h, H, r.device, r.dtype)
    row_max, row_abs = src.amax(1).view(h, M), src.abs().amax(1).view(h, M)
    bound = torch.lerp(row_max.index_select(0, i0_t), row_max.index_select(0, i1_t), w1_t[:, None])  # (H, B·U)
    # the rounding of both lerps is below a few eps·(|A| + |B|); with the rows' largest magnitudes the margin also
    # becomes inf where B − A overflows (upsample then gives ±inf or NaN there)
    margin = 16 * torch.finfo(r.dtype).eps * (row_abs.index_select(0, i0_t) + row_abs.index_select(0, i1_t))
    maybe = ~(bound + margin < lo_maps)  # (H, B·U): rows that may hold a pixel ≥ lo (NaN keeps a row)
    units, pixels, values = [], [], []
    for y0 in range(0, H, block):
        cand = maybe[y0 : y0 + block].reshape(-1).nonzero().squeeze(1)  # j·B·U + m
        y = y0 + cand // M
        m = cand - (y - y0) * M
        if h == H:
            seg = src.index_select(0, y * M + m)
        else:
            seg = torch.lerp(
                src.index_select(0, i0_t.index_select(0, y) * M + m),
                src.index_select(0, i1_t.index_select(0, y) * M + m),
                w1_t.index_select(0, y)[:, None],
            )  # (n, W): the same values as height_rows' scalar-weight lerp
        flat = (seg >= lo_maps.index_select(0, m)[:, None]).view(-1).nonzero().squeeze(1)
        # per candidate row (few): its unit and the label index of its first pixel; per pixel: two lookups
        row_unit, row_start = m % U, (m // U) * (H * W) + y * W
        i = flat // W
        units.append(row_unit.index_select(0, i))
        pixels.append(row_start.index_select(0, i) + (flat - i * W))
        values.append(seg.view(-1).index_select(0, flat))
    return torch.cat(units), torch.cat(pixels), torch.cat(values)

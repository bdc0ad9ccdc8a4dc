"""Counting thresholded, bilinearly upsampled featuremaps against labels without upsampling them.

Bilinear upsampling (align_corners=False) gives pixel (y, x) a convex combination of the four featuremap values at
rows i0(y), i1(y) = min(i0 + 1, h − 1) and columns j0(x), j1(x). The pixels that share (i0, j0) form a *cell*,
and every value inside a cell lies between the smallest and the largest of its four corners. So, for a threshold
band (lo, hi] per unit:
- a cell whose corners are all ≤ lo holds no pixel above lo: skipped;
- a cell whose corners are all > hi holds only pixels above hi: it counts as a whole, through per-cell label
  counts (one bincount per batch, shared by every unit);
- only the cells in between ("mixed") are evaluated pixel by pixel.
At a unit's top-1 % threshold almost every cell is skipped, so a tally costs a small fraction of materialising
(B, U, H, W) upsampled activations, and it is exact (mixed pixels are evaluated in float64, the value that the
float32 `upsample` approximates).

`band_counts` returns, per unit and concept, the pixels above `hi` and the pixels of (lo, hi] in `bins` equal
bins; with lo = hi and bins = 0 it is the plain tally of the masks r↑ > t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output pixel: its cell c and the weight w of the cell's second row (or column).

    F.interpolate(mode="bilinear", align_corners=False) (and `featuremaps.interpolation_matrix`) gives pixel y the
    source position s = (y + ½)·n_in/n_out − ½, clamped at 0, and mixes rows i0 = ⌊s⌋ and min(i0 + 1, n_in − 1)
    with weight s − i0. Cell 0 holds the pixels clamped at the first row (s < 0); cell c ≥ 1 those with
    i0 = c − 1, so cell c mixes padded rows c and c + 1 of the map with its first and last row repeated
    (`corner_range`), and no cell is more than ⌈n_out / n_in⌉ pixels wide."""
    raw = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    src = raw.clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    cell = torch.where(raw < 0, torch.zeros_like(i0), i0 + 1)
    return cell, src - i0


@dataclass(frozen=True)
class Cells:
    """The cells of an h×w → H×W bilinear upsampling, (h + 1)×(w + 1) of them (`_axis`).

    rows (h + 1, Py) / cols (w + 1, Px): the pixel rows / columns of each cell index, padded with -1; wy / wx:
    their weights of the cell's second row / column; count ((h + 1)·(w + 1),): pixels per cell; cell_of (H, W):
    the cell of each pixel."""

    h: int
    w: int
    rows: torch.Tensor
    cols: torch.Tensor
    wy: torch.Tensor
    wx: torch.Tensor
    count: torch.Tensor
    cell_of: torch.Tensor

    @staticmethod
    def of(h: int, w: int, size: tuple[int, int], device=None) -> Cells:
        iy, wy = _axis(h, size[0])
        ix, wx = _axis(w, size[1])
        rows, wyp = _pad(iy, wy, h + 1)
        cols, wxp = _pad(ix, wx, w + 1)
        count = ((rows >= 0).sum(1)[:, None] * (cols >= 0).sum(1)[None, :]).flatten()
        cell_of = iy[:, None] * (w + 1) + ix[None, :]
        return Cells(h, w, *(t.to(device) for t in (rows, cols, wyp, wxp, count, cell_of)))


def _pad(cell: torch.Tensor, w1: torch.Tensor, n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_cells, P) pixel indices of each cell index (-1 padded) and their weights (0 where padded)."""
    members = [(cell == a).nonzero().flatten() for a in range(n_cells)]
    width = max(1, max(len(m) for m in members))
    idx = torch.full((n_cells, width), -1, dtype=torch.long)
    wts = torch.zeros(n_cells, width, dtype=torch.float64)
    for a, m in enumerate(members):
        idx[a, : len(m)] = m
        wts[a, : len(m)] = w1[m]
    return idx, wts


def padded(r: torch.Tensor) -> torch.Tensor:
    """r (B, U, h, w) with its first and last rows and columns repeated: (B, U, h + 2, w + 2); cell (a, b) mixes
    padded rows a, a + 1 and columns b, b + 1."""
    r = torch.cat([r[:, :, :1], r, r[:, :, -1:]], 2)
    return torch.cat([r[..., :1], r, r[..., -1:]], 3)


def corner_range(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest of each cell's four corners: r (B, U, h, w) → two (B, U, h + 1, w + 1)."""
    p = padded(r)
    lo, hi = torch.minimum(p[:, :, :-1], p[:, :, 1:]), torch.maximum(p[:, :, :-1], p[:, :, 1:])
    return torch.minimum(lo[..., :-1], lo[..., 1:]), torch.maximum(hi[..., :-1], hi[..., 1:])


def cell_label_counts(groups: list[torch.Tensor], offsets: list[int], num_concepts: int, cells: Cells) -> torch.Tensor:
    """(B, h·w, C) pixels of each concept in each cell, from label groups (B, H, W) (-1: none)."""
    B = groups[0].shape[0]
    n_cells = (cells.h + 1) * (cells.w + 1)
    base = (torch.arange(B, device=groups[0].device)[:, None, None] * n_cells + cells.cell_of[None]) * num_concepts
    flat = []
    for labels, off in zip(groups, offsets):
        keep = labels >= 0
        flat.append((base + labels + off)[keep])
    counts = torch.bincount(torch.cat(flat), minlength=B * n_cells * num_concepts)
    return counts.view(B, n_cells, num_concepts)


def cell_band_counts(
    r: torch.Tensor,
    groups: list[torch.Tensor],
    offsets: list[int],
    num_concepts: int,
    lo: torch.Tensor,
    hi: torch.Tensor,
    bins: int,
    cells: Cells,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unit, the upsampled pixels above `lo`, by concept and band bin.

    r: featuremaps (B, U, h, w); lo, hi (U,) with lo ≤ hi. Returns counts (U, C + 1, bins + 2) (long): bin k in
    1…bins holds pixels with value in (lo + (k−1)·Δ, lo + k·Δ], Δ = (hi − lo) / bins, the last bin pixels above
    hi, bin 0 is left empty (pixels ≤ lo are not counted); row C counts all pixels. Also the pixels exactly equal
    to lo (U,) (a plateau such as ReLU zeros; counted where a cell's four corners equal lo and pixel by pixel in
    mixed cells), and the smallest and largest value in each band bin (U, bins + 2) (±inf where empty), so the
    quantile can be interpolated between the values a bin really holds and an atom (many pixels of one value)
    is recognised."""
    B, U = r.shape[:2]
    C1, nb = num_concepts + 1, bins + 2
    lo_, hi_ = lo.to(r)[None, :, None, None], hi.to(r)[None, :, None, None]
    cmin, cmax = corner_range(r)
    label_counts = cell_label_counts(groups, offsets, num_concepts, cells).to(r.dtype)  # (B, cells, C)
    pix = cells.count.to(r.dtype)[None, :, None].expand(B, -1, 1)
    per_cell = torch.cat([label_counts, pix], 2)  # (B, hw, C + 1)
    whole = (cmin > hi_).flatten(2).to(r.dtype)  # (B, U, hw): cells entirely above hi
    counts = torch.zeros(U, C1, nb, dtype=torch.long, device=r.device)
    # per-image products of 0/1 masks and integer counts are exact in float32 below 2^24 pixels
    counts[:, :, -1] = torch.bmm(whole, per_cell).round().long().sum(0)
    plateau = ((cmax <= lo_) & (cmin == cmax) & (cmax == lo_)).flatten(2).to(r.dtype)
    equal = (plateau * cells.count.to(r.dtype)).sum((0, 2)).round().long()
    low = torch.full((U, nb), float("inf"), dtype=torch.float64, device=r.device)
    high = torch.full((U, nb), -float("inf"), dtype=torch.float64, device=r.device)
    mixed = ((cmax > lo_) & (cmin <= hi_)).nonzero()  # (M, 4): b, u, cy, cx
    if mixed.shape[0]:
        extra, extra_equal = _mixed_counts(
            padded(r), mixed, groups, offsets, num_concepts, lo, hi, bins, cells, low, high
        )
        counts += extra
        equal += extra_equal
    return counts, equal, low, high


def _mixed_values(p: torch.Tensor, mixed: torch.Tensor, cells: Cells):
    """Upsampled values (M, Py, Px) in float64 of the mixed cells' pixels, their pixel rows / columns (-1: pad);
    p is the padded featuremap (`padded`)."""
    b, u, cy, cx = mixed.unbind(1)
    v00, v01 = p[b, u, cy, cx].double(), p[b, u, cy, cx + 1].double()
    v10, v11 = p[b, u, cy + 1, cx].double(), p[b, u, cy + 1, cx + 1].double()
    wy, wx = cells.wy[cy][:, :, None], cells.wx[cx][:, None, :]  # (M, Py, 1), (M, 1, Px)
    top = v00[:, None, None] * (1 - wx) + v01[:, None, None] * wx
    bottom = v10[:, None, None] * (1 - wx) + v11[:, None, None] * wx
    return top * (1 - wy) + bottom * wy, cells.rows[cy], cells.cols[cx]


def _mixed_counts(p, mixed, groups, offsets, num_concepts, lo, hi, bins, cells, low, high):
    """Band counts (U, C + 1, bins + 2) of the mixed cells' pixels and their pixels equal to lo (U,); the
    per-bin extremes `low` / `high` (U, bins + 2) are updated in place. Every padded slot of a cell is
    processed (no compaction): a padding slot or a pixel at or below lo goes to bin 0, which is discarded."""
    U = p.shape[1]
    C1, nb = num_concepts + 1, bins + 2
    values, rows, cols = _mixed_values(p, mixed, cells)  # (M, Py, Px)
    b, u = mixed[:, 0], mixed[:, 1]
    lo_u, hi_u = lo.double()[u][:, None, None], hi.double()[u][:, None, None]
    inside = (rows[:, :, None] >= 0) & (cols[:, None, :] >= 0)  # (M, Py, Px)
    if bins > 0:
        step = ((hi_u - lo_u) / bins).clamp(min=1e-300)
        k = torch.ceil((values - lo_u) / step).clamp_(1, bins).long()
        k = torch.where(values > hi_u, bins + 1, k)
    else:
        k = torch.ones_like(values, dtype=torch.long)
    k = torch.where(inside & (values > lo_u), k, 0)
    equal = torch.bincount(u, weights=(inside & (values == lo_u)).flatten(1).sum(1).double(), minlength=U)
    unit_bin = (u[:, None, None] * nb + k).flatten()  # (M·Py·Px,)
    low.view(-1).scatter_reduce_(0, unit_bin, values.flatten(), "amin")
    high.view(-1).scatter_reduce_(0, unit_bin, values.flatten(), "amax")
    unit_base = (u * (C1 * nb))[:, None, None]
    flat = [(unit_base + num_concepts * nb + k).flatten()]
    yy = rows.clamp(min=0)[:, :, None].expand_as(k)
    xx = cols.clamp(min=0)[:, None, :].expand_as(k)
    bb = b[:, None, None].expand_as(k)
    for labels, off in zip(groups, offsets):
        lab = labels[bb, yy, xx]  # (M, Py, Px)
        # an unlabelled pixel (-1) goes to bin 0 of the "all" row, which is discarded with every bin 0
        flat.append(torch.where(lab >= 0, unit_base + (lab + off) * nb + k, unit_base + num_concepts * nb).flatten())
    counts = torch.bincount(torch.cat(flat), minlength=U * C1 * nb).view(U, C1, nb)
    counts[:, :, 0] = 0
    low[:, 0], high[:, 0] = float("inf"), -float("inf")
    return counts, equal.round().long()


def dense_band_counts(
    r: torch.Tensor,
    groups: list[torch.Tensor],
    offsets: list[int],
    num_concepts: int,
    lo: torch.Tensor,
    hi: torch.Tensor,
    bins: int,
    cells: Cells,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`cell_band_counts` from the full upsampled map (float32, as `featuremaps.upsample`): faster when the
    upsampling factor is small, because then most cells straddle the band and cells save little."""
    from lightning_gd.dissection.featuremaps import upsample

    B, U = r.shape[:2]
    C1, nb = num_concepts + 1, bins + 2
    up = upsample(r, tuple(groups[0].shape[-2:]))  # (B, U, H, W)
    lo_, hi_ = lo.to(r), hi.to(r)
    equal = torch.zeros(U, dtype=torch.long, device=r.device)
    plateau = (r == lo_[None, :, None, None]).flatten(2).any(2).any(0)  # only where lo is a featuremap value
    if plateau.any():
        equal[plateau] = (up[:, plateau] == lo_[plateau][None, :, None, None]).sum((0, 2, 3))
    b, u, y, x = (up > lo_[None, :, None, None]).nonzero().unbind(1)
    v = up[b, u, y, x].double()
    lo_u, hi_u = lo_.double()[u], hi_.double()[u]
    if bins > 0:
        k = torch.ceil((v - lo_u) / ((hi_u - lo_u) / bins).clamp(min=1e-300)).clamp_(1, bins).long()
        k = torch.where(v > hi_u, bins + 1, k)
    else:
        k = torch.ones_like(u)
    low = torch.full((U * nb,), float("inf"), dtype=torch.float64, device=r.device)
    high = torch.full((U * nb,), -float("inf"), dtype=torch.float64, device=r.device)
    low.scatter_reduce_(0, u * nb + k, v, "amin")
    high.scatter_reduce_(0, u * nb + k, v, "amax")
    base = u * (C1 * nb)
    flat = [base + num_concepts * nb + k]
    for labels, off in zip(groups, offsets):
        lab = labels[b, y, x]
        keep = lab >= 0
        flat.append(base[keep] + (lab[keep] + off) * nb + k[keep])
    counts = torch.bincount(torch.cat(flat), minlength=U * C1 * nb).view(U, C1, nb)
    return counts, equal, low.view(U, nb), high.view(U, nb)


CELL_FACTOR = 8  # upsampling factors at least this large are counted by cells, smaller ones densely


def band_counts(r, groups, offsets, num_concepts, lo, hi, bins, cells, method: str = "auto"):
    """Band counts of the upsampled featuremaps (`cell_band_counts` for the outputs): by cells or densely
    (`method` "cells" / "dense"; "auto" picks cells when the upsampling factor is at least `CELL_FACTOR`)."""
    if method == "auto":
        factor = groups[0].shape[-1] / r.shape[-1]
        method = "cells" if factor >= CELL_FACTOR else "dense"
    fn = cell_band_counts if method == "cells" else dense_band_counts
    return fn(r, groups, offsets, num_concepts, lo, hi, bins, cells)

"""Featuremaps at the segmentation's resolution: r↑, the bilinear upsampling of a unit's featuremap (paper §3.1),
in full (`upsample`) or at a sparse grid of pixels (`sparse_upsample`, `sparse_labels`) that threshold passes read.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as F


def sample_offsets(indices: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image pixel offsets (oy, ox) ∈ [0, stride)² of the sparse grid, fixed by the sample index."""
    k = indices % (stride * stride)
    return k // stride, k % stride


def _sparse_grid(
    indices: torch.Tensor, size: tuple[int, int], stride: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows (B, H/s) and columns (B, W/s) of each image's sparse grid."""
    oy, ox = sample_offsets(indices.to(device), stride)
    ys = oy[:, None] + stride * torch.arange(size[0] // stride, device=device)[None, :]
    xs = ox[:, None] + stride * torch.arange(size[1] // stride, device=device)[None, :]
    return ys, xs


def sparse_upsample(r: torch.Tensor, indices: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """The values F.interpolate(r, size, bilinear) takes at pixels (oy + stride·a, ox + stride·b) of each image:
    (B, U, h, w) → (B, U, H/stride, W/stride), without materialising the full upsampled map."""
    if stride == 1:
        return upsample(r, size)
    ys, xs = _sparse_grid(indices, size, stride, r.device)
    gy = (2 * ys.to(r.dtype) + 1) / size[0] - 1  # pixel centres in grid_sample's align_corners=False coordinates
    gx = (2 * xs.to(r.dtype) + 1) / size[1] - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # (B, H/s, W/s, 2)
    return F.grid_sample(r, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sparse_labels(labels: torch.Tensor, indices: torch.Tensor, stride: int) -> torch.Tensor:
    """Labels (B, H, W) at the same sparse pixels as `sparse_upsample`."""
    if stride == 1:
        return labels
    ys, xs = _sparse_grid(indices, tuple(labels.shape[-2:]), stride, labels.device)
    return labels[torch.arange(labels.shape[0], device=labels.device)[:, None, None], ys[:, :, None], xs[:, None, :]]


def tap_lists(n_in: int, n_out: int) -> tuple[list[int], list[int], list[float]]:
    """1-D linear interpolation as F.interpolate(align_corners=False) computes it, as plain Python lists (no
    tensor, so nothing moves between a device and the host): output o = x[i0[o]]·(1 − w1[o]) + x[i1[o]]·w1[o]."""
    i0, i1, w1 = [], [], []
    for o in range(n_out):
        src = max(0.0, (o + 0.5) * (n_in / n_out) - 0.5)
        a = min(math.floor(src), n_in - 1)
        i0.append(a)
        i1.append(min(a + 1, n_in - 1))
        w1.append(src - a)
    return i0, i1, w1


@functools.lru_cache(maxsize=64)
def device_taps(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """`tap_lists` as tensors on `device` (i0, i1 long; w1 in `dtype`), made once per size, device and dtype:
    copying a host list to a GPU waits for the device, so it is not done per batch. The identity
    (n_in == n_out) has i0 = i1 = o and w1 = 0."""
    i0, i1, w1 = tap_lists(n_in, n_out) if n_in != n_out else (list(range(n_out)), list(range(n_out)), [0.0] * n_out)
    w1_t = torch.tensor(w1, dtype=dtype, device=device)
    return torch.tensor(i0, device=device), torch.tensor(i1, device=device), w1_t


@functools.lru_cache(maxsize=64)
def _device_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`interpolation_matrix` on `device`, made once per size, device and dtype (as `device_taps`)."""
    return interpolation_matrix(n_in, n_out, device, dtype)


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation (`tap_lists`): two a row."""
    i0, i1, w1 = tap_lists(n_in, n_out)
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w = torch.tensor(w1, dtype=torch.float64)
    a.index_put_((rows, torch.tensor(i0)), 1 - w, accumulate=True)
    a.index_put_((rows, torch.tensor(i1)), w, accumulate=True)
    return a.to(device, dtype)


def width_pass(r: torch.Tensor, width: int) -> torch.Tensor:
    """The first of r↑'s two 1-D passes, laid out (h, B·U·W): source row i of every map, side by side, along the
    width upsampled by one matrix product (the small input is permuted, not the 4×-larger result)."""
    B, U, h, w = r.shape
    rows = r.permute(2, 0, 1, 3).reshape(h * B * U, w)  # (h·B·U, w)
    if w == width:  # nothing to interpolate (a product with the identity would turn inf into nan)
        return rows.view(h, B * U * width)
    return (rows @ _device_matrix(w, width, r.device, r.dtype).T).view(h, B * U * width)


def height_rows(x: torch.Tensor, H: int, block: int = 8):
    """The second pass, a few output rows at a time: yields (y0, rows y0 … y0+k−1 of every map (k, B·U·W)), each
    row a linear interpolation (`torch.lerp`) of two rows of the width pass `x` (h, B·U·W), written into one
    reused buffer, so the whole upsampled sample never needs to exist (and a block stays in the cache while it is
    read). A matrix product with 2 non-zero weights in each row of 16 took several times longer. `upsample` and
    `counts.band_counts` (which interpolates only the rows it needs, with the same `torch.lerp`) get the same
    values, whatever the block size."""
    h = x.shape[0]
    if h == H:
        for y0 in range(0, H, block):
            yield y0, x[y0 : y0 + block]
        return
    i0, i1, w1 = tap_lists(h, H)
    buf = torch.empty(min(block, H), x.shape[1], device=x.device, dtype=x.dtype)
    for y0 in range(0, H, block):
        k = min(block, H - y0)
        for j in range(k):
            torch.lerp(x[i0[y0 + j]], x[i1[y0 + j]], w1[y0 + j], out=buf[j])
        yield y0, buf[:k]


def upsample(r: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """r↑: (B, U, h, w) → (B, U, H, W), bilinear (identity when the sizes already agree), as F.interpolate
    (align_corners=False) computes it up to float rounding: `width_pass`, then `height_rows`."""
    if tuple(r.shape[-2:]) == tuple(size):
        return r
    B, U = r.shape[:2]
    out = torch.empty(size[0], B * U * size[1], device=r.device, dtype=r.dtype)
    for y0, rows in height_rows(width_pass(r, size[1]), size[0]):
        out[y0 : y0 + len(rows)] = rows
    return out.view(size[0], B, U, size[1]).permute(1, 2, 0, 3)

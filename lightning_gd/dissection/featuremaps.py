"""Featuremaps at the segmentation's resolution: r↑, the bilinear upsampling of a unit's featuremap (paper §3.1),
in full (`upsample`) or at a sparse grid of pixels (`sparse_upsample`, `sparse_labels`) that threshold passes read.
"""

from __future__ import annotations

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


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation as F.interpolate(align_corners=False) computes it."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), i0] += 1 - w1
    m[torch.arange(n_out), i1] += w1
    return m.to(device=device, dtype=dtype)


def upsample(r: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """r↑: (B, U, h, w) → (B, U, H, W), bilinear (identity when the sizes already agree).

    Bilinear interpolation is separable, so it is two small matmuls, A_h · r · A_wᵀ; on a CPU this is several
    times faster than F.interpolate (which converts memory layouts) and equal to it to float rounding."""
    if tuple(r.shape[-2:]) == tuple(size):
        return r
    a_h = interpolation_matrix(r.shape[-2], size[0], r.device, r.dtype)  # (H, h)
    a_w = interpolation_matrix(r.shape[-1], size[1], r.device, r.dtype)  # (W, w)
    return torch.matmul(torch.matmul(a_h, r), a_w.T)  # (B, U, H, w) → (B, U, H, W)

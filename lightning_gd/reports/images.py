"""Top-activating images of units, with each unit's thresholded region outlined (paper Fig. 3)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lightning_gd.dissection import LayerDissection, upsample
from lightning_gd.generators import device_of, eval_mode, latents
from lightning_gd.hooks import Trace
from lightning_gd.images import to_uint8

OUTLINE = torch.tensor([255, 255, 0], dtype=torch.uint8)  # yellow


def outline(images: torch.Tensor, masks: torch.Tensor, colour: torch.Tensor = OUTLINE) -> torch.Tensor:
    """Draw the boundary of `masks` (B, H, W) bool on uint8 `images` (B, 3, H, W)."""
    m = masks.float()[:, None]
    eroded = -F.max_pool2d(-m, 3, 1, 1)  # a pixel stays inside if its whole 3×3 neighbourhood is inside
    edge = (m - eroded)[:, 0] > 0
    out = images.clone()
    out.permute(0, 2, 3, 1)[edge] = colour.to(out.device)
    return out


@torch.no_grad()
def unit_strips(
    generator: nn.Module,
    result: LayerDissection,
    z_dim: int,
    seed: int,
    k: int | None = None,
    units: list[int] | None = None,
    batch_size: int = 64,
) -> dict[int, torch.Tensor]:
    """For each unit, its top-k images (k, 3, H, W) uint8 with the region above its threshold outlined."""
    units = list(range(result.num_units)) if units is None else units
    k = min(k or result.top_indices.shape[1], result.top_indices.shape[1])
    wanted = [(u, int(i)) for u in units for i in result.top_indices[u, :k] if int(i) >= 0]
    # Top images repeat across units: generate each sample once and keep its (small) featuremap.
    unique = sorted({i for _, i in wanted})
    dev = device_of(generator)
    images, maps = [], []
    with eval_mode(generator):  # a generator in train mode would update its BatchNorm statistics here
        for start in range(0, len(unique), batch_size):
            with Trace(generator, result.layer) as tr:
                x = generator(latents(unique[start : start + batch_size], z_dim, seed).to(dev))
            images.append(to_uint8(x).cpu())
            maps.append(tr.output.float().cpu())  # (b, U, h, w)
    if not wanted:
        return {}
    row = {i: n for n, i in enumerate(unique)}
    images, maps = torch.cat(images), torch.cat(maps)
    rows = torch.tensor([row[i] for _, i in wanted])
    sel = torch.tensor([u for u, _ in wanted])
    act = upsample(maps[rows, sel][:, None], tuple(images.shape[-2:]))[:, 0]  # (pairs, H, W): each pair's unit
    drawn = outline(images[rows], act > result.thresholds[sel][:, None, None])
    strips: dict[int, list[torch.Tensor]] = {u: [] for u in units}
    for (u, _), img in zip(wanted, drawn):
        strips[u].append(img)
    return {u: torch.stack(v) for u, v in strips.items() if v}

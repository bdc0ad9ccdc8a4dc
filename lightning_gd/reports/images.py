"""Pictures made of images (no matplotlib): label colouring, image grids saved as PNG, units' top images with
their thresholded region outlined (paper Fig. 3), and captioned rows of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

from lightning_gd.dissection.featuremaps import upsample
from lightning_gd.dissection.results import LayerDissection
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, eval_mode
from lightning_gd.models.hooks import Trace
from lightning_gd.models.images import to_uint8

# One distinct colour per concept index (wraps for large vocabularies).
_PALETTE = np.array(
    [
        [120, 170, 255],
        [245, 245, 245],
        [255, 215, 0],
        [60, 180, 60],
        [90, 90, 90],
        [200, 80, 60],
        [40, 60, 160],
        [120, 60, 20],
        [20, 100, 30],
        [255, 0, 255],
        [0, 255, 255],
        [255, 128, 0],
    ],
    dtype=np.uint8,
)


def colorize(labels: torch.Tensor) -> torch.Tensor:
    """labels (B, H, W) → uint8 colour images (B, 3, H, W)."""
    lab = labels.cpu().numpy() % len(_PALETTE)
    return torch.from_numpy(_PALETTE[lab]).permute(0, 3, 1, 2)


def save_rows(rows: list[torch.Tensor], path: str | Path, scale: int = 2, pad: int = 2) -> Path:
    """Save rows of uint8 images (each (N, 3, H, W), same N) as one PNG grid."""
    import torchvision

    grid = torchvision.utils.make_grid(torch.cat(rows), nrow=len(rows[0]), padding=pad, pad_value=255)
    img = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


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


def unit_rows_image(strips: dict[int, torch.Tensor], record: dict, caption_width: int = 96) -> np.ndarray:
    """One row per unit: a caption (unit, concept, IoU; grey when not interpretable) and its top images."""
    rows = []
    for u, images in strips.items():
        h = images.shape[-2]
        row = torch.cat([torch.nn.functional.pad(im, (1, 1, 1, 1), value=255) for im in images], dim=2)
        caption = Image.new("RGB", (caption_width, row.shape[1]), "white")
        iou, label = record["best_iou"][u], record["best_concept"][u]
        interpretable = iou > record["iou_threshold"]
        colour = (0, 0, 0) if interpretable else (150, 150, 150)
        ImageDraw.Draw(caption).multiline_text((4, max(2, h // 2 - 14)), f"unit {u}\n{label}\nIoU {iou:.2f}", colour)
        rows.append(np.concatenate([np.asarray(caption), row.permute(1, 2, 0).numpy()], axis=1))
    if not rows:
        return np.full((8, caption_width, 3), 255, np.uint8)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)  # (H, W, 3)

"""Pictures made of images (no matplotlib): image grids saved as PNG, regions outlined, and captioned rows of
units' top images with everything outside their thresholded region dimmed (paper Fig. 3; the images themselves
are stored by the dissection, `lightning_gd.results.images.UnitImages`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from lightning_gd.reports.grids import labelled_grid
from lightning_gd.results.images import UnitImages, dim_outside

__all__ = ["OUTLINE", "UnitImages", "dim_outside", "outline", "save_rows", "unit_rows_image"]


def save_rows(
    rows: list[torch.Tensor],
    path: str | Path,
    scale: int = 2,
    pad: int = 2,
    row_labels: list[str] | None = None,
    legend: list[tuple[str, tuple[int, int, int]]] | None = None,
) -> Path:
    """Save rows of uint8 images (each (N, 3, H, W), same N) as one PNG grid, with each row's label at its left
    and the segmentation colours' legend underneath when given (`lightning_gd.reports.grids.labelled_grid`)."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labelled_grid(rows, row_labels, legend, scale=scale, pad=pad)).save(path)
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

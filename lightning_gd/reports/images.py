"""Pictures made of images (no matplotlib): label colouring, image grids saved as PNG, units' top images with
everything outside their thresholded region dimmed (paper Fig. 3), and captioned rows of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.dissection.featuremaps import upsample
from lightning_gd.dissection.results import LayerDissection
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, eval_mode
from lightning_gd.models.hooks import TraceDict
from lightning_gd.models.images import to_uint8
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.reports.grids import labelled_grid


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


def dim_outside(images: torch.Tensor, masks: torch.Tensor, keep: float = 0.3) -> torch.Tensor:
    """uint8 `images` (B, 3, H, W) darkened to `keep` of their brightness outside `masks` (B, H, W) bool: a unit's
    region stands out on any background (a thin outline vanished on clouds and the sun)."""
    dark = (images.float() * keep).round().to(torch.uint8)
    return torch.where(masks[:, None].to(images.device), images, dark)


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
    """For each unit, its top-k images (k, 3, H, W) uint8, dimmed outside the region above its threshold."""
    units = list(range(result.num_units)) if units is None else units
    k = min(k or result.top_indices.shape[1], result.top_indices.shape[1])
    found = unit_images(generator, {result.layer: (result, units, result.top_indices[units, :k])}, z_dim, seed,
                        batch_size)  # fmt: skip
    return {u: found.strip(result.layer, row) for row, u in enumerate(units) if found.count(result.layer, row)}


@dataclass
class UnitImages:
    """Top images of many units, each distinct sample stored once: `images` (M, 3, H, W) uint8 of `samples` (M,),
    and per layer `slots` (U, k) rows of `images` (-1 = none), `maps` (U, k, h, w) each unit's own featuremap on
    each of its images, and the units' `thresholds` (U,). `segmentations` (M, G, H', W'): each image's label
    groups as vocabulary indices (-1 = none; `Vocabulary.label_groups`), the evidence a unit's label is checked
    against; None when the images were made without the segmenter."""

    samples: torch.Tensor
    images: torch.Tensor
    slots: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    thresholds: dict[str, torch.Tensor]
    segmentations: torch.Tensor | None = None

    def count(self, layer: str, row: int) -> int:
        return int((self.slots[layer][row] >= 0).sum())

    def strip(self, layer: str, row: int) -> torch.Tensor:
        """(k', 3, H, W) uint8: row `row`'s images, dimmed outside the region above its unit's threshold."""
        n = self.count(layer, row)
        images = self.images[self.slots[layer][row, :n]]
        act = upsample(self.maps[layer][row, :n][:, None], tuple(images.shape[-2:]))[:, 0]  # (k', H, W)
        return dim_outside(images, act > self.thresholds[layer][row])


@torch.no_grad()
def unit_images(
    generator: nn.Module,
    shown: dict[str, tuple[LayerDissection, list[int], torch.Tensor]],
    z_dim: int,
    seed: int,
    batch_size: int = 64,
    segmenter: Segmenter | None = None,
    vocabulary: Vocabulary | None = None,
) -> UnitImages:
    """Generate the images `shown` per layer — (result, R units, (R, k) sample indices, -1 = none) — once each,
    and keep every shown unit's featuremap on each of its images. Row r of a layer is the r-th of its units.
    With `segmenter` and the dissection's `vocabulary`, also each image's segmentation (`vocabulary_labels`)."""
    samples = sorted({int(i) for _, _, idx in shown.values() for i in idx.flatten().tolist() if i >= 0})
    pos = {i: n for n, i in enumerate(samples)}
    slots = {layer: idx.clone().apply_(lambda i: pos.get(i, -1)) for layer, (_, _, idx) in shown.items()}
    dev = device_of(generator)
    images: list[torch.Tensor] = []
    segmentations: list[torch.Tensor] = []
    maps: dict[str, torch.Tensor] = {}
    layers = list(shown)
    with eval_mode(generator):  # a generator in train mode would update its BatchNorm statistics here
        for start in range(0, len(samples), batch_size):
            with TraceDict(generator, layers) as tr:
                x = generator(latents(samples[start : start + batch_size], z_dim, seed).to(dev))
            images.append(to_uint8(x).cpu())
            if segmenter is not None and vocabulary is not None:
                segmentations.append(vocabulary_labels(vocabulary, segmenter.labels(x).cpu()))
            for layer, (_, units, idx) in shown.items():
                fm = tr[layer].output.float().cpu()  # (b, U, h, w)
                if layer not in maps:
                    maps[layer] = torch.zeros(*idx.shape, *fm.shape[-2:])  # (R, k, h, w)
                sel = (slots[layer] >= start) & (slots[layer] < start + len(fm))  # (R, k) slots in this batch
                rows, cols = sel.nonzero(as_tuple=True)
                maps[layer][rows, cols] = fm[slots[layer][rows, cols] - start, torch.tensor(units)[rows]]
    size = tuple(images[0].shape[-2:]) if images else (0, 0)
    return UnitImages(
        torch.tensor(samples, dtype=torch.long),
        torch.cat(images) if images else torch.zeros(0, 3, *size, dtype=torch.uint8),
        slots,
        {layer: maps.get(layer, torch.zeros(*idx.shape, 0, 0)) for layer, (_, _, idx) in shown.items()},
        {layer: result.thresholds[units].float() for layer, (result, units, _) in shown.items()},
        torch.cat(segmentations) if segmentations else None,
    )


def vocabulary_labels(vocabulary: Vocabulary, labels: torch.Tensor) -> torch.Tensor:
    """Segmenter labels (B, H, W) → (B, G, H, W) int16: per label group, the vocabulary index of each pixel's
    concept (-1 = none), so a part concept is found in its own group as an object is in group 0."""
    groups = vocabulary.label_groups(labels)
    out = [torch.where(g >= 0, g + offset, -1) for g, offset in zip(groups, vocabulary.offsets)]
    return torch.stack(out, 1).to(torch.int16)


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

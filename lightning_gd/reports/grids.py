"""Image grids that say what they show: a label at the left of every row and, under the grid, a legend with
each concept's name beside the colour its segmentation is drawn in. Every grid of the project (ablation,
insertion, before/after, artifact units, context locations) goes through `labelled_grid`, so a PNG on disk and
the same picture in TensorBoard carry the same annotation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lightning_gd.models.segmenters import default_colours


def colorize(labels: torch.Tensor, colours: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """labels (B, H, W) → uint8 colour images (B, 3, H, W): each label in its concept's colour (`colours`, one per
    concept: the segmenter's `colours`; default `default_colours`). Negative labels (no concept) are black."""
    lab, given = labels.cpu().long(), [tuple(c) for c in colours or ()]
    n = max(int(lab.max()) + 1 if lab.numel() else 0, len(given))
    table = torch.tensor(given + (default_colours(n)[len(given) :] if n > len(given) else []), dtype=torch.uint8)
    table = torch.cat([table.view(-1, 3), torch.zeros(1, 3, dtype=torch.uint8)])  # index -1: black
    return table[lab.where(lab >= 0, torch.full_like(lab, -1))].permute(0, 3, 1, 2)


Colour = tuple[int, int, int]
FONT_SIZE = 13


class Grid(NamedTuple):
    """Rows of uint8 images (each (N, 3, H, W), the same N), a label per row, and the legend of the
    segmentation colours in it (None where no row shows labels)."""

    rows: list[torch.Tensor]
    row_labels: list[str]
    legend: list[tuple[str, Colour]] | None = None

    def image(self, scale: int = 2, pad: int = 2) -> np.ndarray:
        return labelled_grid(self.rows, self.row_labels, self.legend, scale=scale, pad=pad)


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's own files (it has α and the other Greek letters; Pillow's bundled font does
    not), else Pillow's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (OSError, ValueError, ImportError):
        return ImageFont.load_default()


def concept_legend(
    labels: torch.Tensor | Sequence[torch.Tensor],
    names: Sequence[str],
    colours: Sequence[Sequence[int]] | None = None,
) -> list[tuple[str, Colour]]:
    """(name, colour) of every concept present in `labels` (label maps (B, H, W), or several), in vocabulary
    order, with the colour `colorize` draws it in (given the same `colours`). Concepts absent from the pictures
    stay out of the legend."""
    maps = [labels] if isinstance(labels, torch.Tensor) else list(labels)
    present = [i for i in torch.unique(torch.cat([m.flatten().cpu() for m in maps])).tolist() if i >= 0]
    if not present:  # no labelled pixel (-1 is "none", never a concept)
        return []
    drawn = colorize(torch.tensor(present).view(1, 1, -1), colours)[0, :, 0].T  # (K, 3)
    return [(names[i] if i < len(names) else str(i), tuple(int(v) for v in c)) for i, c in zip(present, drawn)]


def labelled_grid(
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str] | None = None,
    legend: Sequence[tuple[str, Colour]] | None = None,
    scale: int = 2,
    pad: int = 2,
) -> np.ndarray:
    """Rows of uint8 images (each (N, 3, H, W), the same N) as one uint8 picture (H, W, 3), scaled `scale`×
    (nearest neighbour: pixels stay pixels), white `pad` between images; with `row_labels`, each row's label
    (may hold newlines) at its left; with `legend`, a swatch and name per concept under the grid. Without
    labels or legend it is the bare grid."""
    import torchvision

    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
    grid = torchvision.utils.make_grid(torch.cat(list(rows)), nrow=len(rows[0]), padding=pad, pad_value=255)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    if not row_labels and not legend:
        return np.asarray(picture)
    f, draw_probe = font(), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    gap = 8
    caption = 0
    if row_labels:
        caption = max(draw_probe.multiline_textbbox((0, 0), text, font=f)[2] for text in row_labels) + 2 * gap
    lines = _legend_lines(legend or [], picture.width + caption - gap, f, draw_probe)
    line_height = FONT_SIZE + 6
    legend_height = len(lines) * line_height + (gap if lines else 0)
    canvas = Image.new("RGB", (picture.width + caption, picture.height + legend_height), "white")
    canvas.paste(picture, (caption, 0))
    draw = ImageDraw.Draw(canvas)
    cell = (rows[0].shape[-2] + pad) * scale  # a row's height in the scaled grid
    for i, text in enumerate(row_labels or []):
        centre = pad * scale + i * cell + (cell - pad * scale) / 2
        draw.multiline_text((caption - gap, centre), text, fill=(0, 0, 0), font=f, anchor="rm", align="right")
    for j, line in enumerate(lines):
        y = picture.height + gap // 2 + j * line_height
        for x, name, colour in line:
            draw.rectangle((x, y, x + FONT_SIZE, y + FONT_SIZE), fill=colour, outline=(0, 0, 0))
            draw.text((x + FONT_SIZE + 4, y + FONT_SIZE // 2), name, fill=(0, 0, 0), font=f, anchor="lm")
    return np.asarray(canvas)


def _legend_lines(legend, width: int, f, draw) -> list[list[tuple[int, str, Colour]]]:
    """Legend entries placed left to right, wrapped to `width`: lines of (x, name, colour)."""
    lines: list[list[tuple[int, str, Colour]]] = []
    x = width + 1  # start a new line at the first entry
    for name, colour in legend:
        w = FONT_SIZE + 4 + int(draw.textlength(name, font=f)) + 14
        if x + w > width and (not lines or lines[-1]):
            lines.append([])
            x = 8
        lines[-1].append((x, name, colour))
        x += w
    return lines

"""Small picture helpers: label colouring and image grids saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

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

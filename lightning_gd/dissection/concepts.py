"""The concept vocabulary of a dissection: the segmenter's classes and, optionally, part concepts.

Part concepts (paper §4): each object class c expands into c-t, c-b, c-l, c-r, the top/bottom/left/right
halves of the bounding box of each of its connected components. They overlap their object, so concepts
are carried as label groups (see `lightning_gd.dissection.stats`): group 0 the segmenter's classes, group 1 the
vertical halves, group 2 the horizontal halves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from lightning_gd.models.segmenters import Segmenter, concept_lookup


@dataclass(frozen=True)
class Vocabulary:
    names: tuple[str, ...]
    categories: tuple[str, ...]
    num_classes: int  # the segmenter's own classes come first
    part_objects: tuple[int, ...] = ()  # segmenter class indices expanded into parts

    @property
    def offsets(self) -> list[int]:
        k = len(self.part_objects)
        return [0, self.num_classes, self.num_classes + 2 * k][: 1 + (2 if k else 0)]

    def index(self, name: str) -> int:
        return concept_lookup(name, self.names)

    def label_groups(self, labels: torch.Tensor) -> list[torch.Tensor]:
        """Segmenter labels (B, H, W) → label groups (see module doc)."""
        if not self.part_objects:
            return [labels]
        return [labels, *part_labels(labels, self.part_objects)]


def vocabulary(segmenter: Segmenter, parts: bool | list[str] = False) -> Vocabulary:
    """The dissection vocabulary; `parts=True` expands every object-category class, a list names them."""
    names = tuple(segmenter.concepts)
    cats = tuple(segmenter.categories.get(c, "object") for c in names)
    if parts is True:
        expand = [i for i, c in enumerate(cats) if c == "object"]
    elif parts:
        expand = [segmenter.concept_index(c) for c in parts]
    else:
        expand = []
    vert = [f"{names[i]}-{s}" for i in expand for s in ("t", "b")]
    horiz = [f"{names[i]}-{s}" for i in expand for s in ("l", "r")]
    return Vocabulary(
        names + tuple(vert + horiz), cats + ("part",) * (len(vert) + len(horiz)), len(names), tuple(expand)
    )


def part_labels(labels: torch.Tensor, objects: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertical, horizontal) part labels (B, H, W), -1 where no expanded object is.

    For the j-th expanded object, a pixel of one of its connected components (8-connectivity) gets
    2j (top / left) or 2j+1 (bottom / right) by which half of the component's bounding box its centre is in.
    """
    lab = labels.cpu().numpy()
    vert = np.full(lab.shape, -1, np.int64)
    horiz = np.full(lab.shape, -1, np.int64)
    rows = np.arange(lab.shape[1])[:, None] + 0.5
    cols = np.arange(lab.shape[2])[None, :] + 0.5
    structure = np.ones((3, 3), bool)
    for b in range(lab.shape[0]):
        for j, c in enumerate(objects):
            comp, n = ndimage.label(lab[b] == c, structure=structure)
            for k, sl in enumerate(ndimage.find_objects(comp), start=1):
                if sl is None:
                    continue
                here = comp[sl] == k
                ys, xs = sl
                top = rows[ys] < (ys.start + ys.stop) / 2  # pixel centre in the upper half of the box
                left = cols[:, xs] < (xs.start + xs.stop) / 2
                vert[b][sl][here] = np.broadcast_to(np.where(top, 2 * j, 2 * j + 1), here.shape)[here]
                horiz[b][sl][here] = np.broadcast_to(np.where(left, 2 * j, 2 * j + 1), here.shape)[here]
    dev = labels.device
    return torch.from_numpy(vert).to(dev), torch.from_numpy(horiz).to(dev)

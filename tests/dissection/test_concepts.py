"""Part concepts (object halves) against a brute-force flood fill."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.dissection.concepts import part_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- part labels


def brute_part_labels(labels: torch.Tensor, objects):
    B, H, W = labels.shape
    lab = labels.tolist()
    vert = [[[-1] * W for _ in range(H)] for _ in range(B)]
    horiz = [[[-1] * W for _ in range(H)] for _ in range(B)]
    for b in range(B):
        for j, c in enumerate(objects):
            seen = [[False] * W for _ in range(H)]
            for y0 in range(H):
                for x0 in range(W):
                    if lab[b][y0][x0] != c or seen[y0][x0]:
                        continue
                    comp, stack = [], [(y0, x0)]  # flood fill, 8-connectivity
                    seen[y0][x0] = True
                    while stack:
                        y, x = stack.pop()
                        comp.append((y, x))
                        for dy in (-1, 0, 1):
                            for dx in (-1, 0, 1):
                                yy, xx = y + dy, x + dx
                                if 0 <= yy < H and 0 <= xx < W and not seen[yy][xx] and lab[b][yy][xx] == c:
                                    seen[yy][xx] = True
                                    stack.append((yy, xx))
                    top, bottom = min(p[0] for p in comp), max(p[0] for p in comp) + 1  # box in pixel edges
                    left, right = min(p[1] for p in comp), max(p[1] for p in comp) + 1
                    for y, x in comp:  # pixel centre strictly in the upper / left half → 2j, else 2j + 1
                        vert[b][y][x] = 2 * j if y + 0.5 < (top + bottom) / 2 else 2 * j + 1
                        horiz[b][y][x] = 2 * j if x + 0.5 < (left + right) / 2 else 2 * j + 1
    return torch.tensor(vert), torch.tensor(horiz)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_part_labels_match_flood_fill(seed):
    g = gen(seed)
    labels = torch.randint(0, 4, (3, 11, 13), generator=g)
    labels[0, 2:7, 3:10] = 2  # a big blob of odd height, so a row sits exactly on the box's middle line
    objects = (2, 0, 3)
    vert, horiz = part_labels(labels, objects)
    bv, bh = brute_part_labels(labels, objects)
    assert torch.equal(vert, bv) and torch.equal(horiz, bh)
    assert ((vert >= 0) == (labels != 1)).all()  # exactly the pixels of the expanded objects get parts

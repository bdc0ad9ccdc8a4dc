"""Labelled image grids: the bare grid is unchanged without labels; row labels sit left of their rows, the legend
under the grid shows each present concept's name beside the colour `colorize` gives it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gd.reports.grids import Grid, colorize, concept_legend, labelled_grid
from lightning_gd.reports.images import save_rows

BLACK_ROW = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
GREY_ROW = torch.full((3, 3, 4, 4), 128, dtype=torch.uint8)


def test_concept_legend_lists_the_present_concepts_in_their_colours():
    labels = torch.tensor([[[2, 0], [2, 5]]])
    legend = concept_legend([labels, torch.tensor([[[0]]])], ["sky", "cloud", "sun", "grass", "road", "building"])
    assert [name for name, _ in legend] == ["sky", "sun", "building"]
    for (_, colour), index in zip(legend, (0, 2, 5)):
        assert colour == tuple(colorize(torch.tensor([[[index]]]))[0, :, 0, 0].tolist())


def test_bare_grid_has_no_margin():
    image = labelled_grid([BLACK_ROW, GREY_ROW], scale=2, pad=2)
    assert image.shape == (2 * (2 * 6 + 2), 2 * (3 * 6 + 2), 3)


def test_row_labels_and_legend_are_drawn_outside_the_images():
    bare = labelled_grid([BLACK_ROW, GREY_ROW], scale=2, pad=2)
    legend = [("sky", (120, 170, 255)), ("tree", (20, 100, 30))]
    image = labelled_grid([BLACK_ROW, GREY_ROW], ["original", "ablated\n(top 20)"], legend, scale=2, pad=2)
    caption = image.shape[1] - bare.shape[1]
    assert caption > 20 and image.shape[0] > bare.shape[0]  # a caption column and a legend strip were added
    assert np.array_equal(image[: bare.shape[0], caption:], bare)  # the grid itself is untouched
    left = image[: bare.shape[0], :caption]
    row_h = bare.shape[0] // 2
    for r in range(2):  # text (dark pixels) beside each row
        assert (left[r * row_h : (r + 1) * row_h] < 100).all(-1).any()
    strip = image[bare.shape[0] :]
    for _, colour in legend:  # each swatch in its colour
        assert (strip == np.array(colour, dtype=np.uint8)).all(-1).sum() >= 100
    assert np.array_equal(Grid([BLACK_ROW, GREY_ROW], ["original", "ablated\n(top 20)"], legend).image(), image)


def test_long_legends_wrap_to_the_grid_width():
    names = [(f"concept number {i}", (i * 20, 0, 0)) for i in range(12)]
    image = labelled_grid([BLACK_ROW], ["row"], names)
    one_line = labelled_grid([BLACK_ROW], ["row"], names[:1])
    assert image.shape[1] == one_line.shape[1] and image.shape[0] > one_line.shape[0] + 40


def test_labels_must_match_rows(tmp_path):
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        labelled_grid([BLACK_ROW, GREY_ROW], ["only one"])
    path = save_rows([BLACK_ROW, GREY_ROW], tmp_path / "g.png", row_labels=["a", "b"], legend=[("sky", (1, 2, 3))])
    with Image.open(path) as img:
        assert np.array_equal(np.asarray(img), labelled_grid([BLACK_ROW, GREY_ROW], ["a", "b"], [("sky", (1, 2, 3))]))

"""ModuleSegmenter: logits are softmaxed, probabilities are used as they are, labels become one-hot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.models.segmenters import ModuleSegmenter, concept_lookup


class Probs(nn.Module):
    def forward(self, x):
        p = (x[:, :1] + 1) / 2  # red channel in [0, 1]
        return torch.cat([p, 1 - p], 1)


def test_probabilities_are_not_softmaxed_again():
    seg = ModuleSegmenter(Probs(), ["red", "other"], output="probs")
    x = torch.full((1, 3, 2, 2), -1.0)
    x[:, 0] = 1.0  # a pure red pixel: probability 1 of red
    assert torch.equal(seg.probs(x)[:, 0], torch.ones(1, 2, 2))
    assert seg.labels(x).eq(0).all() and seg.differentiable
    x.requires_grad_(True)
    seg.probs(x)[:, 0].sum().backward()
    assert x.grad[:, 0].abs().sum() > 0


def test_logits_and_labels():
    logits = ModuleSegmenter(nn.Conv2d(3, 2, 1), ["a", "b"], categories=["object", "material"])
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    torch.testing.assert_close(logits.probs(x), logits.net(x).softmax(1))
    assert logits.categories == {"a": "object", "b": "material"}

    class Labels(nn.Module):
        def forward(self, x):
            return (x[:, 0] > 0).long()

    seg = ModuleSegmenter(Labels(), ["dark", "bright"], output="labels")
    assert not seg.differentiable
    torch.testing.assert_close(seg.probs(x).argmax(1), seg.labels(x))
    assert torch.equal(seg.labels(x), (x[:, 0] > 0).long())


def test_wrong_outputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\) for its 3 concepts"):
        ModuleSegmenter(nn.Conv2d(3, 2, 1), ["a", "b", "c"]).labels(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="output must be one of"):
        ModuleSegmenter(nn.Identity(), ["a"], output="scores")
    with pytest.raises(KeyError, match=r"unknown concept 'tre' \(did you mean tree\?\)"):
        concept_lookup("tre", ("tree", "sky"))


def test_a_segmenter_declares_its_colours_or_gets_distinct_defaults():
    from lightning_gd.models.segmenters import ModuleSegmenter, default_colours
    from lightning_gd.reports.grids import colorize, concept_legend

    net = torch.nn.Conv2d(3, 3, 1)
    plain = ModuleSegmenter(net, ["a", "b", "c"])
    assert plain.colours == default_colours(3)
    many = default_colours(1500)  # a UPP-sized vocabulary: no colour repeats
    assert len(set(many)) == 1500 and all(0 <= v <= 255 for c in many for v in c)
    named = ModuleSegmenter(net, ["a", "b", "c"], colours={"a": (1, 2, 3), "b": (4, 5, 6), "c": (7, 8, 9)})
    assert named.colours == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    labels = torch.tensor([[[2, 0], [-1, 1]]])  # -1: no concept, drawn black
    drawn = colorize(labels, named.colours)[0].permute(1, 2, 0).tolist()
    assert drawn == [[[7, 8, 9], [1, 2, 3]], [[0, 0, 0], [4, 5, 6]]]
    assert concept_legend(labels, named.concepts, named.colours) == [
        ("a", (1, 2, 3)),
        ("b", (4, 5, 6)),
        ("c", (7, 8, 9)),
    ]
    for bad, match in (([(1, 2, 3)], "1 colours for 3 concepts"), ({"a": (1, 2, 3)}, "no colour for b, c"),
                       ([(1, 2, 3), (4, 5, 6), (7, 8, 256)], "integers 0–255")):  # fmt: skip
        with pytest.raises(InvalidValue, match=match):
            ModuleSegmenter(net, ["a", "b", "c"], colours=bad)


def test_colours_may_be_numpy_integers_and_are_stored_as_ints():
    import numpy as np

    from lightning_gd.models.segmenters import ModuleSegmenter

    palette = np.array([[1, 2, 3], [250, 251, 252]], dtype=np.uint8)
    seg = ModuleSegmenter(torch.nn.Conv2d(3, 2, 1), ["a", "b"], colours=palette)
    assert seg.colours == [(1, 2, 3), (250, 251, 252)] and all(type(v) is int for c in seg.colours for v in c)

"""The palette is prepared before the first stroke: k_c of every IoU brush from one pass (the numbers
`concept_means` gives concept by concept), a brush for every concept some unit matches (not only best labels),
and the overlay's legend."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.causal.interventions import concept_means
from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.dissection.results import Dissection, DissectSettings, LayerDissection
from lightning_gd.jobs.dissect import write_dissection
from lightning_gd.models.split import LayerSplit
from lightning_gd.paint.session import (
    Brush,
    PaintSession,
    brush_concepts,
    find_results,
    palette_means,
)
from lightning_gd.reports.grids import colorize
from tests.helpers import ColourSegmenter, PlantedGenerator


def test_palette_means_equal_concept_means_per_concept(session):
    concepts = ["sky", "tree", "building"]
    together = palette_means(session.split, session.segmenter, concepts, 30, seed=3, batch_size=7, progress=False)
    for concept in concepts:
        alone = concept_means(session.split, session.segmenter, concept, 30, seed=3, batch_size=7, progress=False)
        torch.testing.assert_close(together[concept], alone["k_c"], rtol=1e-5, atol=1e-6)


class SkyOnly(ColourSegmenter):
    """The planted scenes' colour segmenter, but it sees sky everywhere: grass never occurs."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros_like(super().logits(x))
        scores[:, 0] = 1.0
        return scores


def test_a_concept_never_seen_or_a_part_has_no_brush(capsys):
    split = LayerSplit(PlantedGenerator(), "layer1")
    seg = SkyOnly()
    means = palette_means(split, seg, ["sky", "grass"], 4, progress=False)
    torch.testing.assert_close(means["sky"], concept_means(split, seg, "sky", 4, progress=False)["k_c"])
    assert means["grass"] is None
    brushes = [Brush(f"{c} (IoU)", c, "iou", [0, 1, 2]) for c in ("sky", "grass", "sky-t")]  # sky-t: a part
    session = PaintSession(PlantedGenerator(), seg, "layer1", brushes, kc_samples=4)
    assert session.prepare() == ["grass (IoU)", "sky-t (IoU)"] and list(session.brushes) == ["sky (IoU)"]
    out = capsys.readouterr().out
    assert "palette: k_c of 2 concepts (grass, sky) from 4 samples" in out
    assert "left out (not a segmenter class, or never seen): grass (IoU), sky-t (IoU)" in out


def test_every_brush_has_k_c_before_the_first_stroke(session):
    """The paint command prepares the palette at start-up: no brush computes k_c on a stroke."""
    assert session.brushes and all(b.k_c is not None for b in session.brushes.values())
    assert all(b.k_c.shape == (session.units,) for b in session.brushes.values())


def test_brush_concepts_are_every_concept_some_unit_overlaps():
    iou = torch.tensor([[0.30, 0.02, 0.00], [0.20, 0.04, 0.00]])  # tree is never a best match, door never seen
    matches = brush_concepts(iou, ["sky", "tree", "door"])
    assert matches.keys() == {"sky", "tree"}
    assert matches["sky"] == pytest.approx(0.30) and matches["tree"] == pytest.approx(0.04)


def test_a_dissection_folder_gives_a_brush_to_each_matched_concept(tmp_path):
    """A dissection whose only label is sky: a tree brush too, ranked by IoU with tree, that says how well its best
    unit matches tree."""
    iou = torch.tensor([[0.30, 0.08], [0.20, 0.01], [0.10, 0.02]])
    layer = LayerDissection(
        "layer4", torch.ones(3), iou, torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 1), (2, 2)
    )
    vocab = Vocabulary(("sky", "tree"), ("scene", "object"), 2)
    write_dissection(Dissection(DissectSettings(layers=("layer4",), n=10, top_k=1), vocab, {"layer4": layer}), tmp_path)
    brushes = {b.name: b for b in find_results(tmp_path, "layer4")}
    assert set(brushes) == {"sky (IoU)", "tree (IoU)"}
    assert brushes["tree (IoU)"].units == [0, 2, 1] and brushes["tree (IoU)"].ranking == "iou"
    assert brushes["tree (IoU)"].match == pytest.approx(0.08) and brushes["sky (IoU)"].match == pytest.approx(0.30)


def test_the_legend_gives_the_overlay_colours(session):
    legend = session.palette()["legend"]
    names = [e["name"] for e in legend]
    assert names == list(session.segmenter.concepts)
    colours = colorize(torch.arange(len(names))[None, None], session.segmenter.colours)[0, :, 0].T.tolist()
    assert [list(c) for c in session.segmenter.colours] == colours
    assert all(e["colour"] == "#" + "".join(f"{v:02x}" for v in c) for e, c in zip(legend, colours))

"""`python -m lightning_gd report FOLDER` draws a folder's pages again from its stored results alone: with every
way of loading a network made to fail, a dissection's unit browser comes back byte for byte and a causal
search's curve, image grids and page come back."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_gd import cli, zoo
from lightning_gd.jobs.dissect import write_dissection
from lightning_gd.results import AceResult, CausalSearchResult, ResultError
from lightning_gd.results.images import AceImages, UnitImages
from tests.helpers import is_png

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_networks(monkeypatch):
    """Loading a generator, a segmenter or a checkpoint raises."""

    def refuse(*args, **kwargs):
        raise AssertionError("a report loaded a network")

    monkeypatch.setattr(zoo, "generator", refuse)
    monkeypatch.setattr(zoo, "segmenter", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def causal_folder(folder, generator: str = "planted") -> AceImages:
    """A causal search's stored results as `fit` and `test` write them, with 2 samples' worth of grid images."""
    units = [{"unit": u, "alpha": a, "iou": i} for u, a, i in ((0, 1.0, 0.9), (2, 0.3, 0.0), (1, 0.0, 0.01))]
    search = {
        "concept": "grass",
        "layer": "layer1",
        "settings": {"lam": 0.1, "generator": generator},
        "presence": 0.2,
        "top_n": 2,
        "top_units": [0, 2],
        "units": units,
        "epochs": 1,
        "global_step": 4,
    }
    ace = {
        "concept": "grass",
        "layer": "layer1",
        "presence": 0.2,
        "sizes": [1, 2, 3],
        "top_n": 2,
        "ablation_removed": {"alpha": [0.5, 0.9, 1.0], "iou": [0.4, None, 1.0]},
        "removed_at_top_n": {"alpha": 0.9, "iou": None},
        "insertion_at_top_n": {"alpha": {"ace": 0.05, "appeared": 0.1}},
        "generator": generator,
    }
    folder.mkdir(parents=True)
    CausalSearchResult.from_document(search).save(folder)
    AceResult.from_document(ace).save(folder)
    g = torch.Generator().manual_seed(0)
    images = {k: torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g) for k in AceImages.IMAGES}
    labels = {k: torch.randint(0, 3, (2, 16, 16), generator=g) for k in AceImages.IMAGES}
    window = torch.zeros(2, 16, 16, dtype=torch.bool)
    window[:, 4:10, 4:10] = True
    shown = AceImages(images, labels, window, ["sky", "dome", "grass"], "grass", 2)
    shown.save(folder)
    return shown


def test_report_rebuilds_a_dissection_and_a_causal_search_with_no_network(planted, tmp_path, no_networks, capsys):
    _, d, shown = planted
    causal_folder(tmp_path / "causal")
    write_dissection(d, tmp_path / "dissect", shown, info={"generator": "planted"}, causal=[])
    drawn = ["report.html", "concepts-layer1.png", "concepts-layer2.png", "layers.png"]
    for name in drawn:
        (tmp_path / "dissect" / name).unlink()
    cli.main(["report", str(tmp_path / "dissect")])
    # the page links the search beside it, which did not exist for the first write: compare without it
    page = (tmp_path / "dissect" / "report.html").read_text()
    data = json.loads(page.split('id="data">', 1)[1].split("</script>", 1)[0])
    assert [run["concept"] for run in data["causal_runs"]] == ["grass"]
    assert data["images"] and len(data["images"]) == len(shown.images)  # the stored top images, not regenerated
    for name in drawn[1:]:
        assert is_png((tmp_path / "dissect" / name).read_bytes())

    cli.main(["report", str(tmp_path / "causal")])
    printed = capsys.readouterr().out
    for name in ("ace_curve.png", "grid_ablation.png", "grid_insertion.png"):
        assert is_png((tmp_path / "causal" / name).read_bytes()) and name in printed
    index = (tmp_path / "causal" / "index.html").read_text()
    assert "Causal units of grass in layer1" in index and 'src="grid_insertion.png"' in index


def test_a_rebuilt_dissection_page_equals_the_one_the_dissection_wrote(planted, tmp_path, no_networks):
    _, d, shown = planted
    # a folder with no neighbours: the unit browser links the causal searches beside a dissection, and pytest's
    # tmp_path sits beside every other test's folders (a full run rebuilt links to their searches)
    out = tmp_path / "alone" / "dissection"
    write_dissection(d, out, shown, info={"generator": "planted"})
    made = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    cli.main(["report", str(out)])
    assert (out / "report.html").read_bytes() == made


def test_stored_images_round_trip_and_a_damaged_file_is_named(planted, tmp_path):
    _, _, shown = planted
    shown.save(tmp_path)
    back = UnitImages.load(tmp_path)
    assert torch.equal(back.images, shown.images) and torch.equal(back.samples, shown.samples)
    for layer in shown.slots:
        assert torch.equal(back.slots[layer], shown.slots[layer]) and torch.equal(back.maps[layer], shown.maps[layer])
        assert torch.equal(back.pools[layer], shown.pools[layer])
    assert torch.equal(back.segmentations, shown.segmentations)
    grids = causal_folder(tmp_path / "causal")
    again = AceImages.load(tmp_path / "causal")
    assert again.concepts == grids.concepts and torch.equal(again.window, grids.window)
    (tmp_path / UnitImages.FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ResultError, match="unit_images.safetensors is not a readable"):
        UnitImages.load(tmp_path)

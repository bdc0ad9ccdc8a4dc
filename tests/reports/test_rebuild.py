"""`python -m lightning_gd report FOLDER` draws a folder's pages again from its stored results alone: with every
way of loading a network made to fail, a dissection's unit browser comes back byte for byte, a causal search's
curve, image grids and page come back, and a context run's and an artifact run's page, figures and image rows come
back byte for byte from the images their analyses stored."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lightning_gd import cli, zoo
from lightning_gd.jobs.dissect import write_dissection
from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from lightning_gd.realism.artifacts import generate_ablated
from lightning_gd.results import AceResult, CausalSearchResult, ContextResult, ResultError, UnitFidResult
from lightning_gd.results.images import AceImages, ArtifactImages, ContextImages, UnitImages
from tests.helpers import DOOR_CONCEPTS, DoorGenerator, TinyConvGenerator, is_png

pytestmark = pytest.mark.usefixtures("one_thread")


def refuse_networks(monkeypatch) -> None:
    """Loading a generator, a segmenter, a feature extractor or a checkpoint raises."""

    def refuse(*args, **kwargs):
        raise AssertionError("a report loaded a network")

    for name in ("generator", "segmenter", "feature_extractor"):
        monkeypatch.setattr(zoo, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture
def no_networks(monkeypatch):
    refuse_networks(monkeypatch)


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


def redrawn_equal(out, names: tuple[str, ...], monkeypatch, capsys) -> None:
    """Delete the drawn files `names` in `out`, forbid every network, `report` the folder: each comes back byte
    for byte."""
    made = {name: (out / name).read_bytes() for name in names}
    for name in names:
        (out / name).unlink()
    refuse_networks(monkeypatch)
    capsys.readouterr()
    cli.main(["report", str(out)])
    printed = capsys.readouterr().out
    for name in names:
        assert (out / name).read_bytes() == made[name], name
        assert name in printed, name


def door_search(folder):
    """A finished causal search for the door of `DoorGenerator` (unit 1 by α, its k_c)."""
    folder.mkdir(parents=True)
    ranking = [{"unit": 1, "alpha": 1.0, "iou": 0.5}, {"unit": 2, "alpha": 0.0, "iou": 0.1}]
    search = {"concept": "door", "layer": "layer1", "settings": {}, "presence": 0.1, "top_n": 1, "top_units": [1]}
    CausalSearchResult.from_document({**search, "units": ranking, "epochs": 1, "global_step": 4}).save(folder)
    save_file({"k_c": torch.tensor([0.0, 1.0, 0.0])}, str(folder / "alpha.safetensors"))
    return folder


def test_report_rebuilds_a_context_folder_with_no_network(tmp_path, monkeypatch, capsys):
    out = tmp_path / "alone" / "context"
    seg = {"class_path": "tests.helpers.ColourSegmenter", "init_args": {"names": DOOR_CONCEPTS}}
    args = ["--generator", '{"class_path": "tests.helpers.DoorGenerator"}', "--segmenter", json.dumps(seg)]
    args += ["--layer", "layer1", "--concept", "door", "--causal", str(door_search(tmp_path / "search"))]
    args += ["--top_n", "1", "--n", "8", "--overlays", "3", "--trace", "true", "--bootstrap", "50"]
    cli.main(["context", *args, "--out", str(out), "--tb_dir", "null", "--progress", "false"])
    # the stored images are the generator's own samples, and the outlined locations lie on the building: the door
    # unit paints a door nowhere else
    result, shown = ContextResult.load(out), ContextImages.load(out)
    G = DoorGenerator()
    z = latents(result.where_images, G.z_dim, result.settings["seed"])
    with torch.no_grad():
        assert torch.equal(shown.images, to_uint8(G(z)))
        building = torch.nn.functional.interpolate(G.layer1(z)[:, :1], size=(64, 64)) > 0.5  # (M, 1, 64, 64)
    assert len(shown.images) == 3 and shown.regions.any() and not (shown.regions & ~building[:, 0]).any()
    redrawn_equal(
        out, ("index.html", "context.png", "where.png", "trace.png", "trace_heatmap.png"), monkeypatch, capsys
    )
    # a folder written before the images were stored keeps its where.png as it is
    (out / ContextImages.FILE).unlink()
    before = (out / "where.png").read_bytes()
    cli.main(["report", str(out)])
    assert (out / "where.png").read_bytes() == before


def test_report_rebuilds_an_artifacts_folder_with_no_network(tmp_path, monkeypatch, capsys):
    real = tmp_path / "real"
    real.mkdir()
    with torch.no_grad():
        images = to_uint8(TinyConvGenerator(seed=1)(latents(range(12), 8, seed=5)))
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(real / f"{i:02d}.png")
    out = tmp_path / "alone" / "artifacts"
    args = ["--generator", '{"class_path": "tests.helpers.TinyConvGenerator"}', "--layer", "layer1", "--n", "30"]
    args += ["--top_k", "10", "--n_ablate", "2", "--random_draws", "2", "--n_eval", "10", "--batch_size", "10"]
    cli.main(["artifacts", *args, "--real_images", str(real), "--cache_dir", "null", "--out", str(out)])
    # the stored rows are the evaluation samples (eval_seed 1) with the table's units ablated
    result, shown = UnitFidResult.load(out), ArtifactImages.load(out)
    G = TinyConvGenerator()
    ablated = {"original": [], "ablated_top": result.ranking[:2], "ablated_random": result.ablation[-1]["units"][0]}
    for name, units in ablated.items():
        assert torch.equal(shown.rows[name], generate_ablated(G, "layer1", units, 8, 1)), name
    assert shown.units.tolist() == result.ranking[:6] and shown.top.shape == (6, 8, 3, 32, 32)
    names = ("index.html", "unit_fid.png", "ablation.md", "top_units.png", "before_after.png")
    redrawn_equal(out, names, monkeypatch, capsys)


def test_stored_context_and_artifact_images_round_trip_and_a_damaged_file_is_named(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=g)
    regions = torch.rand(2, 8, 8, generator=g) > 0.5
    ContextImages(images, regions).save(tmp_path)
    back = ContextImages.load(tmp_path)
    assert torch.equal(back.images, images) and torch.equal(back.regions, regions)
    ContextImages(images, regions[:, :4]).save(tmp_path)
    with pytest.raises(ResultError, match="context_images.safetensors: regions: expected one mask per image"):
        ContextImages.load(tmp_path)
    top = torch.randint(0, 256, (2, 4, 3, 8, 8), dtype=torch.uint8, generator=g)
    rows = {"original": images, "ablated_top": images.flip(0)}
    ArtifactImages(torch.tensor([5, 1]), top, rows).save(tmp_path)
    again = ArtifactImages.load(tmp_path)
    assert again.units.tolist() == [5, 1] and torch.equal(again.top, top) and set(again.rows) == set(rows)
    ArtifactImages(torch.tensor([5]), top, rows).save(tmp_path)
    with pytest.raises(ResultError, match="artifact_images.safetensors: top: expected one row of images per unit"):
        ArtifactImages.load(tmp_path)
    ArtifactImages(torch.tensor([5, 1]), top, {"original": images}).save(tmp_path)
    with pytest.raises(ResultError, match="rows.ablated_top: expected torch.uint8 of 4 dimensions, got missing"):
        ArtifactImages.load(tmp_path)


def test_the_causal_grids_draw_labels_in_the_colours_the_segmenter_declared(tmp_path):
    from lightning_gd.reports.causal import image_grids

    shown = causal_folder(tmp_path / "plain")
    assert AceImages.load(tmp_path / "plain").colours is None  # an older file: the default palette
    declared = [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    coloured = AceImages(shown.images, shown.labels, shown.window, shown.concepts, shown.concept, 2, declared)
    coloured.save(tmp_path / "coloured")
    loaded = AceImages.load(tmp_path / "coloured")
    assert loaded.colours == declared
    rows = image_grids(loaded)["ablation"].rows
    expected = torch.tensor(declared, dtype=torch.uint8)[shown.labels["original"]].permute(0, 3, 1, 2)
    assert torch.equal(rows[1], expected)  # "its labels": every pixel in its concept's declared colour
    assert dict(image_grids(loaded)["ablation"].legend) == {
        "sky": declared[0],
        "dome": declared[1],
        "grass": declared[2],
    }
    bad = AceImages(shown.images, shown.labels, shown.window, shown.concepts, shown.concept, 2, [(1, 2, 3)])
    bad.save(tmp_path / "bad")
    with pytest.raises(ResultError, match="colours must be one"):
        AceImages.load(tmp_path / "bad")

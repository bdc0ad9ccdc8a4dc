"""Reports of a dissection: `dissect.json` + IoU sidecars, the offline HTML browser, figures, TensorBoard, the
outlined top images, and the `dissect` / `compare` subcommands end to end.

Everything runs on the planted generator of `tests.helpers` (two layers: layer1 16×16, layer2 32×32, unit 0 the
dome in both), so a report's contents are known: unit 0 is the one interpretable unit, labelled with the dome.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_gd import cli
from lightning_gd.dissection import dissect
from lightning_gd.generators import latents
from lightning_gd.images import to_uint8
from lightning_gd.reports import plots
from lightning_gd.reports.dissection_report import JSON_VERSION, log_tensorboard, write_dissection
from lightning_gd.reports.images import OUTLINE, outline, unit_strips
from lightning_gd.reports.plots import concept_bar_chart
from tests.helpers import CATEGORIES, DOME_SHARE, Z_DIM, ColourSegmenter, PlantedGenerator

N, K, LAYERS = 40, 4, ("layer1", "layer2")
Q = 1 - DOME_SHARE
PNG = b"\x89PNG\r\n\x1a\n"
# concept names that are markup: the report must show them as text, never as tags
SCRIPT, BOLD = "<script>alert(1)</script>", "<b>x</b>"
UNIT_KEYS = {"unit", "label", "category", "iou", "threshold", "interpretable", "realistic"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted(one_thread):
    """(generator, dissection of layer1 + layer2, top-image strips): sky renamed to a script, dome to a <b> tag."""
    g = PlantedGenerator(two_layers=True).eval()
    seg = ColourSegmenter([SCRIPT, BOLD, "grass"])
    d = dissect(g, list(LAYERS), seg, n=N, batch_size=N, q=Q, top_k=K, progress=False)
    strips = {layer: unit_strips(g, d.layers[layer], Z_DIM, 0) for layer in LAYERS}
    return g, d, strips


def is_png(data: bytes) -> bool:
    return data[:8] == PNG


# ----------------------------------------------------------------------------------------------- JSON + HTML


def test_write_dissection(planted, tmp_path):
    _, d, strips = planted
    doc = write_dissection(d, tmp_path, strips, info={"generator": "PlantedGenerator"})
    on_disk = json.loads((tmp_path / "dissect.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["version"] == JSON_VERSION == 1
    s = on_disk["settings"]
    assert s["layers"] == list(LAYERS) and s["n"] == N and s["seed"] == 0 and s["top_k"] == K
    assert s["threshold"] == "quantile" and s["q"] == Q and s["iou_threshold"] == d.settings.iou_threshold
    assert s["generator"] == "PlantedGenerator"
    assert on_disk["vocabulary"] == {"names": [SCRIPT, BOLD, "grass"], "categories": list(CATEGORIES)}
    for layer in LAYERS:
        entry = on_disk["layers"][layer]
        units = entry["units"]
        assert [u["unit"] for u in units] == [0, 1, 2] and all(set(u) == UNIT_KEYS for u in units)
        assert units == d.units(layer)  # floats survive the JSON round trip exactly
        assert units[0]["label"] == BOLD and units[0]["category"] == "object" and units[0]["interpretable"]
        assert units[0]["iou"] > 0.9 and not units[2]["interpretable"]
        assert entry["summary"] == d.summary(layer) and entry["summary"]["interpretable"] >= 1
        assert entry["featuremap_size"] == list(d.layers[layer].featuremap_size)
        table = np.load(tmp_path / entry["iou_table"])
        assert entry["iou_table"] == f"iou-{layer}.npy" and table.dtype == np.float64
        assert np.array_equal(table, d.layers[layer].iou.numpy())
        assert is_png((tmp_path / f"concepts-{layer}.png").read_bytes())
    assert [lay["featuremap_size"] for lay in on_disk["layers"].values()] == [[16, 16], [32, 32]]
    assert is_png((tmp_path / "layers.png").read_bytes())

    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # offline: nothing to fetch
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in srcs)
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))
    assert len(srcs) == 2 + 2 * 3  # one concept chart per layer, one strip per unit
    for src in srcs:
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert is_png(data) if src.startswith("data:image/png") else data[:3] == b"\xff\xd8\xff"  # JPEG magic
    sections = page.split("<h2 ")[1:]
    assert len(sections) == len(LAYERS)
    for layer, section in zip(LAYERS, sections):
        assert f'id="layer-{layer}"' in section
        assert section.count("<tr><td") == d.layers[layer].num_units  # one row per unit
    # markup in concept names is escaped: no raw tag, and the page's only script is its own sorter
    assert BOLD not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert page.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_one_layer_has_no_layer_figure(planted, tmp_path):
    g, d, _ = planted
    one = dissect(g, "layer1", ColourSegmenter(), n=N, batch_size=N, q=Q, top_k=K, progress=False)
    doc = write_dissection(one, tmp_path)
    assert list(doc["layers"]) == ["layer1"] and doc["settings"]["layers"] == ["layer1"]
    assert (tmp_path / "concepts-layer1.png").is_file() and not (tmp_path / "layers.png").exists()
    page = (tmp_path / "report.html").read_text()
    assert page.count("<tr><td") == 3 and "data:image/png;base64," in page  # the chart; no strips given


# ----------------------------------------------------------------------------------------------- images


def test_outline_draws_exactly_the_border_of_a_square():
    img = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(1, 3, 8, 8)  # every pixel distinct, none yellow
    before = img.clone()
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True
    ring = mask[0].clone()
    ring[3:5, 3:5] = False
    assert ring.sum() == 12
    out = outline(img, mask)
    assert torch.equal(img, before)  # the input is left alone
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert torch.equal(out[0][:, ring], OUTLINE[:, None].expand(3, 12))
    assert torch.equal(out[0][:, ~ring], img[0][:, ~ring])
    green = outline(img, mask, torch.tensor([0, 255, 0], dtype=torch.uint8))
    assert torch.equal((green != img).any(1)[0], ring)
    assert torch.equal(outline(img, torch.zeros_like(mask)), img)  # no region, nothing drawn


def test_unit_strips_are_the_top_images(planted):
    g, d, strips = planted
    for layer in LAYERS:
        res = d.layers[layer]
        assert sorted(strips[layer]) == [0, 1, 2]
        for u, strip in strips[layer].items():
            assert strip.shape == (K, 3, 64, 64) and strip.dtype == torch.uint8
            idx = res.top_indices[u].tolist()
            with torch.no_grad():
                z = latents(idx, Z_DIM, d.settings.seed)
                r = g.layer1(z) if layer == "layer1" else g.layer2(g.layer1(z))
                raw = to_uint8(g(z))
            mask = F.interpolate(r, size=(64, 64), mode="bilinear", align_corners=False)[:, u] > res.thresholds[u]
            assert torch.equal(strip, outline(raw, mask)), (layer, u)
            drawn = (strip != raw).any(1)  # only outline pixels differ from the generator's own images
            assert (strip.permute(0, 2, 3, 1)[drawn] == OUTLINE).all()
            if u == 0:
                assert drawn.flatten(1).any(1).all()  # the dome is outlined in every top image
            if u == 2:
                assert torch.equal(strip, raw)  # the dead unit has no region above its threshold
    few = unit_strips(g, d.layers["layer1"], Z_DIM, 0, k=2, units=[0])
    assert list(few) == [0] and torch.equal(few[0], strips["layer1"][0][:2])


# ----------------------------------------------------------------------------------------------- TensorBoard


def test_log_tensorboard(planted, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, d, strips = planted
    cats = dict(zip(d.vocabulary.names, d.vocabulary.categories))
    charts = {layer: concept_bar_chart(d.summary(layer)["per_concept"], cats, layer) for layer in LAYERS}
    log_tensorboard(d, tmp_path, "run", strips, charts)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    guidance = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance=guidance).Reload()
    tags = acc.Tags()
    for layer in LAYERS:
        summ = d.summary(layer)
        for tag, key in (("interpretable_units", "interpretable"), ("distinct_concepts", "distinct_concepts")):
            (ev,) = acc.Scalars(f"{layer}/{tag}")
            assert ev.step == 0 and ev.value == summ[key]
        (ev,) = acc.Scalars(f"{layer}/mean_iou")
        assert ev.value == np.float32(summ["mean_iou"]) and summ["mean_iou"] > 0  # exact up to float32
        (hist,) = acc.Histograms(f"{layer}/best_iou")
        best = d.layers[layer].iou.max(1).values
        assert hist.histogram_value.num == 3
        assert hist.histogram_value.min == pytest.approx(best.min().item())
        assert hist.histogram_value.max == pytest.approx(best.max().item())
        (text,) = acc.Tensors(f"{layer}/top_units/text_summary")
        table = text.tensor_proto.string_val[0].decode()
        assert table.startswith("| unit | label | category | IoU |") and f"| 0 | {BOLD} | object |" in table
        assert {f"{layer}/concepts", f"{layer}/top_units_images"} <= set(tags["images"])
        (grid,) = acc.Images(f"{layer}/top_units_images")
        assert (grid.width, grid.height) == (K * 65 + 1, 3 * 65 + 1)  # K images of the 3 units, 1-pixel gaps
        assert is_png(grid.encoded_image_string)


# ----------------------------------------------------------------------------------------------- command line

GENERATOR = json.dumps({"class_path": "tests.helpers.PlantedGenerator", "init_args": {"two_layers": True}})
SEGMENTER = json.dumps({"class_path": "tests.helpers.ColourSegmenter"})


def run_dissect(out, *extra: str) -> None:
    argv = ["dissect", "--generator", GENERATOR, "--segmenter", SEGMENTER, "--n", str(N), "--batch_size", str(N)]
    cli.main([*argv, "--q", str(Q), "--top_k", str(K), "--out", str(out), "--tb_dir", str(out / "tb"), *extra])


def stamps(folder) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("*"))}


def test_dissect_subcommand(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (tb_logs, out/)
    out = tmp_path / "run"
    run_dissect(out, "--layers", "[layer1, layer2]")
    doc = json.loads((out / "dissect.json").read_text())
    assert doc["settings"]["layers"] == list(LAYERS) and doc["settings"]["n"] == N
    assert doc["settings"]["generator"] == "PlantedGenerator" and doc["settings"]["segmenter"] == "ColourSegmenter"
    for layer in LAYERS:
        assert doc["layers"][layer]["units"][0]["label"] == "dome"
        assert doc["layers"][layer]["summary"]["per_concept"]["dome"] == 1
    assert (out / "report.html").is_file() and (out / "layers.png").is_file()
    assert len(list((out / "tb" / "dissect-run").glob("events.out.tfevents.*"))) == 1
    printed = capsys.readouterr().out
    interpretable = doc["layers"]["layer1"]["summary"]["interpretable"]
    assert f"layer1: {interpretable}/3 interpretable units" in printed and "report.html" in printed
    cache = stamps(out / "cache")
    assert len(cache) == 2 * len(LAYERS)  # thresholds and tallies, per layer

    run_dissect(out, "--layers", "[layer1, layer2]")  # the same run again: both stages come from the cache
    assert stamps(out / "cache") == cache
    assert json.loads((out / "dissect.json").read_text()) == doc
    assert len(list((out / "tb" / "dissect-run").glob("events.out.tfevents.*"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    with pytest.raises(ValueError, match="--layers") as err:
        run_dissect(tmp_path / "nolayers")  # a custom generator has no default layer
    assert "PlantedGenerator has: embed, layer1, layer2, render" in str(err.value)
    with pytest.raises(ValueError, match="unknown threshold mode 'bogus'; choose one of quantile, iqr"):
        run_dissect(tmp_path / "bogus", "--layers", "[layer1]", "--threshold", "bogus")


@pytest.fixture(scope="module")
def two_modes(planted, tmp_path_factory):
    """dissect.json of layer1 in quantile and iqr mode."""
    g = planted[0]
    paths = {}
    for mode in ("quantile", "iqr"):
        d = dissect(g, "layer1", ColourSegmenter(), n=N, batch_size=N, q=Q, iqr_n=N, threshold=mode, progress=False)
        folder = tmp_path_factory.mktemp(mode)
        write_dissection(d, folder)
        paths[mode] = folder / "dissect.json"
    return paths


def test_compare_subcommand(two_modes, tmp_path, monkeypatch, capsys):
    files = [str(two_modes["quantile"]), str(two_modes["iqr"].parent)]  # a file, or the folder holding it
    cli.main(["compare", "--dissections", json.dumps(files), "--names", "[q, iqr]", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert [r["name"] for r in rows] == ["q", "iqr"] and [r["threshold"] for r in rows] == ["quantile", "iqr"]
    for row, mode in zip(rows, ("quantile", "iqr")):
        src = json.loads(two_modes[mode].read_text())["layers"]["layer1"]
        summ = src["summary"]
        assert row["layer"] == "layer1"
        for key in ("interpretable", "distinct_concepts", "mean_iou", "per_concept"):
            assert row[key] == summ[key], (mode, key)
        assert row["object_units"] == sum(u["interpretable"] and u["category"] == "object" for u in src["units"])
        assert row["object_units"] == 1  # the dome
    assert is_png((tmp_path / "compare.png").read_bytes())
    assert "wrote" in capsys.readouterr().out

    # default names: the folders holding the files, also for paths relative to the working directory
    monkeypatch.chdir(two_modes["quantile"].parent)
    cli.main(["compare", "--dissections", json.dumps([".", "dissect.json"]), "--out", str(tmp_path / "default")])
    default = json.loads((tmp_path / "default" / "compare.json").read_text())
    assert [r["name"] for r in default] == [two_modes["quantile"].parent.name] * 2

    missing = tmp_path / "nowhere" / "dissect.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        cli.main(["compare", "--dissections", json.dumps([files[0], str(missing)]), "--out", str(tmp_path / "x")])
    with pytest.raises(KeyError, match="has no layer 'layer9'; it has layer1"):
        cli.main(["compare", "--dissections", json.dumps(files), "--layer", "layer9", "--out", str(tmp_path / "y")])


def test_comparison_figure_keeps_rows_with_the_same_name_apart(monkeypatch):
    """Two checkpoints dissected into `a/dissect` and `b/dissect` are both named "dissect" by default."""
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    rows = [
        {"name": "dissect", "object_units": 3, "distinct_concepts": 2, "mean_iou": 0.2},
        {"name": "dissect", "object_units": 5, "distinct_concepts": 4, "mean_iou": 0.3},
    ]
    assert is_png(plots.comparison_figure(rows, "same names"))
    for ax, key in zip(figures[0].axes, ("object_units", "distinct_concepts", "mean_iou")):
        bars = sorted(ax.patches, key=lambda b: b.get_x())
        assert len({b.get_x() for b in bars}) == 2, key  # side by side, not drawn over each other
        assert [b.get_height() for b in bars] == [r[key] for r in rows]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dissect", "dissect"]

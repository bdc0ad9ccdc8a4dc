"""Reports of a dissection: `dissect.json` + IoU sidecars, the offline HTML browser, figures and TensorBoard.

Everything runs on the planted generator of `tests.helpers` (two layers: layer1 16×16, layer2 32×32, unit 0 the
dome in both; the `planted` fixture of tests/reports/conftest.py), so a report's contents are known: unit 0 is the
one interpretable unit, labelled with the dome. The `dissect` and `compare` subcommands run end to end in
tests/cli/test_commands.py.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from lightning_gd.dissection import dissect
from lightning_gd.reports.dissection import JSON_VERSION, log_tensorboard, write_dissection
from lightning_gd.reports.figures import concept_bar_chart
from tests.helpers import (
    BOLD,
    CATEGORIES,
    REPORT_K,
    REPORT_LAYERS,
    REPORT_N,
    REPORT_Q,
    SCRIPT,
    ColourSegmenter,
    is_png,
)

N, K, LAYERS, Q = REPORT_N, REPORT_K, REPORT_LAYERS, REPORT_Q

UNIT_KEYS = {"unit", "label", "category", "iou", "threshold", "interpretable", "realistic"}


pytestmark = pytest.mark.usefixtures("one_thread")


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

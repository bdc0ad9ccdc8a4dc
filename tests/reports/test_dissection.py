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
import zlib

import numpy as np
import pytest

from lightning_gd.dissection import dissect
from lightning_gd.jobs.dissect import dissection_result, write_dissection
from lightning_gd.reports.dissection import log_tensorboard
from lightning_gd.reports.figures import concept_bar_chart
from lightning_gd.results import DissectionResult
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
    _, d, shown = planted
    doc = write_dissection(d, tmp_path, shown, info={"generator": "PlantedGenerator"})
    on_disk = json.loads((tmp_path / "dissect.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["version"] == DissectionResult.VERSION == 1
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
    refs = re.findall(r'(?:src|href)="([^"#$][^"]*)"', page)  # ${…}: the page's own templates
    assert not refs  # no file or URL referenced: one offline file (links to causal searches come as data)
    data = page_json(page)
    assert [lay["name"] for lay in data["layers"]] == list(LAYERS) and data["iou_threshold"] == d.settings.iou_threshold
    assert data["samples"] == shown.samples.tolist() and len(data["images"]) == len(shown.samples)
    for b64 in data["images"]:
        assert base64.b64decode(b64, validate=True)[:3] == b"\xff\xd8\xff"  # JPEG magic
    for lay in data["layers"]:
        res = d.layers[lay["name"]]
        assert [{k: v for k, v in u.items() if k != "causal"} for u in lay["units"]] == d.units(lay["name"])
        assert lay["slots"] == shown.slots[lay["name"]].tolist() and lay["summary"] == d.summary(lay["name"])
        iou = np.frombuffer(base64.b64decode(lay["iou"]), dtype="<u2").reshape(res.iou.shape) / 10000
        assert np.abs(iou - res.iou.numpy()).max() <= 0.5e-4  # IoU to 4 decimals for the bar charts
        maps = np.frombuffer(zlib.decompress(base64.b64decode(lay["maps"])), np.uint8).reshape(
            *shown.slots[lay["name"]].shape, *res.featuremap_size
        )
        lo, hi = np.array(lay["map_lo"])[:, None, None, None], np.array(lay["map_hi"])[:, None, None, None]
        back = lo + maps / 255 * (hi - lo)
        assert np.abs(back - shown.maps[lay["name"]].numpy()).max() <= (hi - lo).max() / 255  # 8-bit maps
        assert is_png(base64.b64decode(lay["chart"]))
    # markup in concept names reaches the page only as JSON text: no raw tag outside the data block
    assert page.count("<script") == 2 and SCRIPT not in page and BOLD not in page
    assert data["concepts"] == [SCRIPT, BOLD, "grass"]


def page_json(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))


def test_one_layer_has_no_layer_figure(planted, tmp_path):
    g, d, _ = planted
    one = dissect(g, "layer1", ColourSegmenter(), n=N, batch_size=N, q=Q, top_k=K, progress=False)
    doc = write_dissection(one, tmp_path)
    assert list(doc["layers"]) == ["layer1"] and doc["settings"]["layers"] == ["layer1"]
    assert (tmp_path / "concepts-layer1.png").is_file() and not (tmp_path / "layers.png").exists()
    data = page_json((tmp_path / "report.html").read_text())
    assert len(data["layers"]) == 1 and data["images"] == [] and data["layers"][0]["slots"] == [[], [], []]


# ----------------------------------------------------------------------------------------------- TensorBoard


def test_log_tensorboard(planted, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, d, shown = planted
    cats = dict(zip(d.vocabulary.names, d.vocabulary.categories))
    charts = {layer: concept_bar_chart(d.summary(layer)["per_concept"], cats, layer) for layer in LAYERS}
    iou = {layer: d.layers[layer].iou for layer in LAYERS}
    log_tensorboard(dissection_result(d), iou, tmp_path, "run", shown, charts)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    guidance = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance=guidance).Reload()
    tags = acc.Tags()
    # the summary scalars draw one curve across the layers: step = the layer's position
    for tag, key in (("interpretable_units", "interpretable"), ("distinct_concepts", "distinct_concepts")):
        assert [(e.step, e.value) for e in acc.Scalars(f"layers/{tag}")] == [
            (i, d.summary(layer)[key]) for i, layer in enumerate(LAYERS, start=1)
        ]
    share = [e.value for e in acc.Scalars("layers/interpretable_share")]
    assert share == [np.float32(d.summary(la)["interpretable"] / 3) for la in LAYERS]
    assert "custom_scalars__config__" in tags["tensors"]  # the layout the run opens on
    for layer in LAYERS:
        summ = d.summary(layer)
        (ev,) = [e for e in acc.Scalars("layers/mean_iou") if e.step == LAYERS.index(layer) + 1]
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
        assert (grid.width, grid.height) == (96 + K * 66, 3 * 66)  # a caption, then K framed images per unit
        assert is_png(grid.encoded_image_string)


def test_non_finite_values_reach_the_page_as_null(tmp_path):
    """JSON has no NaN or Infinity: one such value (a threshold, an α) would stop the page loading."""
    from lightning_gd.reports.dissection import write_html

    def reject(token):
        raise ValueError(f"non-JSON number {token}")

    write_html(tmp_path / "r.html", {"layers": [{"threshold": float("nan"), "alpha": [1.0, float("inf")]}]}, "t")
    data = json.loads(
        re.search(r'id="data">(.*?)</script>', (tmp_path / "r.html").read_text(), re.S).group(1),
        parse_constant=reject,
    )
    assert data == {"layers": [{"threshold": None, "alpha": [1.0, None]}]}

"""Write a dissection to disk: `dissect.json` (+ one `iou-<layer>.npy` per layer), `report.html`, figures,
and TensorBoard (IoU histogram, markdown table of top units, concept bar chart, image grids of top units)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import zlib
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from lightning_gd.cache import atomic_write
from lightning_gd.dissection.results import Dissection
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.reports.figures import CATEGORY_COLOURS, concept_bar_chart, layer_summary_figure
from lightning_gd.reports.images import UnitImages, unit_images
from lightning_gd.reports.page_parts import relative_url
from lightning_gd.results import CausalSearchResult, DissectionResult

JSON_VERSION = DissectionResult.VERSION


def to_json(diss: Dissection, info: dict | None = None) -> dict:
    s = diss.settings
    return {
        "version": JSON_VERSION,
        "settings": {**asdict(s), "layers": list(s.layers), **(info or {})},
        "vocabulary": {"names": list(diss.vocabulary.names), "categories": list(diss.vocabulary.categories)},
        "layers": {
            layer: {
                "featuremap_size": list(res.featuremap_size),
                "iou_table": f"iou-{layer}.npy",
                "summary": diss.summary(layer),
                "units": diss.units(layer),
            }
            for layer, res in diss.layers.items()
        },
    }


THUMBNAIL = 128  # largest side of a browser thumbnail: 256×256 samples would make a report of ~1,000 images 15 MB


def thumbnail_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of a browser thumbnail: the image's size, scaled down to THUMBNAIL pixels on its largest side."""
    scale = min(1.0, THUMBNAIL / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _jpeg_b64(image: torch.Tensor) -> str:
    """uint8 (3, H, W) → base64 JPEG, at most THUMBNAIL pixels a side. JPEG keeps a page of hundreds of units at a
    few MB (PNGs of noisy samples ran to over 100 MB); each sample is stored once however many units show it."""
    img = Image.fromarray(image.permute(1, 2, 0).numpy())
    h, w = thumbnail_size(*image.shape[-2:])
    if (h, w) != tuple(image.shape[-2:]):
        img = img.resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def _quantized_maps(maps: torch.Tensor, slots: torch.Tensor) -> tuple[bytes, list[float], list[float]]:
    """(R, k, h, w) featuremaps → zlib-compressed uint8 with a per-unit [lo, hi] scale (over its shown images)."""
    if maps.numel() == 0:  # a report without images
        return zlib.compress(b""), [0.0] * len(maps), [0.0] * len(maps)
    present = (slots >= 0)[:, :, None, None].expand_as(maps)
    big = torch.finfo(maps.dtype).max
    lo = torch.where(present, maps, big).flatten(1).amin(1)  # (R,)
    hi = torch.where(present, maps, -big).flatten(1).amax(1)
    lo, hi = torch.where(lo > hi, 0.0, lo), torch.where(lo > hi, 0.0, hi)  # a unit with no images
    span = (hi - lo).clamp(min=1e-12)
    q = ((maps - lo[:, None, None, None]) / span[:, None, None, None] * 255).round().clamp(0, 255).to(torch.uint8)
    return zlib.compress(q.numpy().tobytes(), 6), lo.tolist(), hi.tolist()


def _segmentations(shown: UnitImages) -> dict:
    """The shown images' label groups (`UnitImages.segmentations`) at thumbnail size, nearest-resampled, as
    zlib-compressed little-endian int16 (-1 = none): the page outlines a unit's label on its images and shows the
    segmentation beside the unit's region. Empty without segmentations (a report made without the segmenter)."""
    seg = shown.segmentations
    if seg is None or len(seg) == 0:
        return {"seg_groups": 0, "seg_size": [0, 0], "segs": ""}
    size = thumbnail_size(*shown.images.shape[-2:])
    seg = F.interpolate(seg.float(), size=size, mode="nearest").to(torch.int16)  # (M, G, h, w)
    raw = seg.numpy().astype("<i2").tobytes()
    return {
        "seg_groups": seg.shape[1],
        "seg_size": list(size),
        "segs": base64.b64encode(zlib.compress(raw, 6)).decode(),
    }


def causal_ranks(docs: list[dict], layer: str, num_units: int) -> dict[int, list[dict]]:
    """Per unit, its place in each causal search of `layer` (`causal.json` documents) that ranks it among the
    search's top-n: {unit: [{concept, rank (1 = best), alpha, top_n}]}."""
    out: dict[int, list[dict]] = {}
    for doc in docs:
        if doc.get("layer") != layer or len(doc.get("units", [])) != num_units:
            continue
        for rank, entry in enumerate(doc["units"][: doc["top_n"]], start=1):
            out.setdefault(int(entry["unit"]), []).append(
                {"concept": doc["concept"], "rank": rank, "alpha": float(entry["alpha"]), "top_n": doc["top_n"]}
            )
    return out


def find_causal(root: Path, info: dict | None = None, depth: int = 3, links_from: Path | None = None) -> list[dict]:
    """The `causal.json` documents in `root` (a results folder) and its subfolders up to `depth` levels, of the
    generator described in `info` (a search of the default generator records none), each with its folder in
    `path` and, with `links_from` (the report's folder), `href`: the relative link to its results page (or its
    JSON). The depth bound keeps a results folder at the top of a home directory from scanning all of it."""
    docs = []
    found = sorted(p for d in range(depth + 1) for p in Path(root).glob("/".join(["*"] * d + ["causal.json"])))
    for path in found:
        doc = CausalSearchResult.load(path).document()  # a malformed file is named, never half-read
        theirs, ours = (doc.get("settings") or {}).get("generator"), (info or {}).get("generator")
        if theirs is not None and ours is not None and str(theirs) != str(ours):
            continue
        page = path.parent / "index.html" if (path.parent / "index.html").is_file() else path
        href = None
        if links_from is not None:  # a relative URL: quoted ("#", "%" in folder names), never a scheme
            href = relative_url(os.path.relpath(page, links_from))
        docs.append({**doc, "path": str(path.parent), "href": href})
    return docs


OTHER_COLOURS = ("#8e5ea2", "#c0504d", "#4bacc6", "#9c7a3c", "#d462a6")


def category_colours(categories) -> dict[str, str]:
    """A colour per category present: the figures' for object/part/material, then a fixed cycle for the rest."""
    names = list(dict.fromkeys(categories))
    others = [c for c in names if c not in CATEGORY_COLOURS]
    extra = {c: OTHER_COLOURS[i % len(OTHER_COLOURS)] for i, c in enumerate(others)}
    return {c: CATEGORY_COLOURS.get(c) or extra[c] for c in names}


def page_data(diss: Dissection, shown: UnitImages, charts: dict[str, bytes], info: dict, causal: list[dict]) -> dict:
    """Everything the unit browser shows, as one JSON document (see browser.html)."""
    s = diss.settings
    layers = []
    for layer, res in diss.layers.items():
        slots = shown.slots[layer]
        maps, lo, hi = _quantized_maps(shown.maps[layer], slots)
        ranks = causal_ranks(causal, layer, res.num_units)
        iou = (res.iou.double().clamp(0, 1) * 10000).round().to(torch.int16).numpy().astype("<u2").tobytes()
        layers.append({
            "name": layer,
            "size": list(res.featuremap_size),
            "k": slots.shape[1],
            "summary": diss.summary(layer),
            "units": [{**u, "causal": ranks.get(u["unit"], [])} for u in diss.units(layer)],
            "slots": slots.tolist(),
            "ranks": _ranks(res, shown.samples, slots),
            "maps": base64.b64encode(maps).decode(),
            "map_lo": lo,
            "map_hi": hi,
            "iou": base64.b64encode(iou).decode(),
            "chart": base64.b64encode(charts[layer]).decode(),
        })  # fmt: skip
    counts = [lay["summary"]["interpretable"] for lay in layers]
    mode = f"top {1 - s.q:.3g} quantile per unit" if s.threshold == "quantile" else "IQR (paper Eq. 2)"
    meta = (
        f"generator {info.get('generator', '?')}, segmenter {info.get('segmenter', '?')}, {s.n} samples (seed "
        f"{s.seed}), threshold mode {s.threshold}"
        + (f" q={s.q}" if s.threshold == "quantile" else f" on {s.iqr_n} validation samples (seed {s.iqr_seed})")
    )
    return {
        "meta": meta,
        "mode": mode,
        "causal_runs": [{"concept": d["concept"], "layer": d["layer"], "href": d.get("href")} for d in causal],
        "iou_threshold": s.iou_threshold,
        "concepts": list(diss.vocabulary.names),
        "concept_categories": list(diss.vocabulary.categories),
        "colours": category_colours(diss.vocabulary.categories),
        "samples": shown.samples.tolist(),
        "images": [_jpeg_b64(im) for im in shown.images],
        **_segmentations(shown),
        "layers": layers,
        "start": layers[counts.index(max(counts))]["name"],  # open on the layer with the most interpretable units
    }


def _finite(value):
    """The page's data with NaN and ±inf as null (JSON has no such numbers: one would stop the page loading)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_html(path: Path, data: dict, title: str) -> None:
    template = (resources.files("lightning_gd.reports") / "browser.html").read_text()
    # every "<" as a JSON escape: neither "</script>" nor "<!--" can change how the HTML parser reads the block
    blob = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    page = template.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob)
    atomic_write(path, page.encode())


def _ranks(res, samples: torch.Tensor, slots: torch.Tensor) -> list[list[int]]:
    """Per unit and shown image, its rank (1 = best) among the unit's own top images (0: not among them): the
    distinct selection can show a unit its #12 where another unit shows its #1, and the page says so."""
    pool = (res.candidates if res.candidates is not None else res.top_indices).tolist()
    ranks = []
    for u, row in enumerate(slots.tolist()):
        place = {int(i): r for r, i in enumerate(pool[u], start=1) if i >= 0}
        ranks.append([place.get(int(samples[s]), 0) for s in row if s >= 0])
    return ranks


def shown_images(
    generator, diss: Dissection, z_dim: int, k: int | None = None, segmenter: Segmenter | None = None
) -> UnitImages:
    """The browser's top images of every unit of every layer (`LayerDissection.shown_images`: distinct between
    units where possible), each sample generated once; with the dissection's `segmenter`, their segmentations too
    (the evidence the browser shows beside each label), taken now so the report never runs a network again."""
    shown = {}
    for layer, res in diss.layers.items():
        shown[layer] = (res, list(range(res.num_units)), res.shown_images(k))
    return unit_images(generator, shown, z_dim, diss.settings.seed, segmenter=segmenter, vocabulary=diss.vocabulary)


def markdown_table(diss: Dissection, layer: str, top: int = 20) -> str:
    units = sorted(diss.units(layer), key=lambda u: -u["iou"])[:top]
    lines = ["| unit | label | category | IoU |", "|---|---|---|---|"]
    lines += [f"| {u['unit']} | {u['label']} | {u['category']} | {u['iou']:.3f} |" for u in units]
    return "\n".join(lines)


def write_dissection(
    diss: Dissection,
    out: str | Path,
    shown: UnitImages | None = None,
    info: dict | None = None,
    tb_dir: str | Path | None = None,
    tb_name: str = "dissect",
    causal: list[dict] | None = None,
) -> dict:
    """Write everything a dissection produces into `out`; returns the JSON document.

    `shown`: the browser's top images (`shown_images`); `causal`: `causal.json` documents (`find_causal`) whose
    ranks the browser shows beside the labels."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = info or {}
    shown = shown or _no_images(diss)
    cats = dict(zip(diss.vocabulary.names, diss.vocabulary.categories))
    doc = to_json(diss, info)
    for layer, res in diss.layers.items():
        buf = io.BytesIO()
        np.save(buf, res.iou.numpy())
        atomic_write(out / f"iou-{layer}.npy", buf.getvalue())
    DissectionResult.from_document(doc, "the dissection").save(out)
    mode = diss.settings.threshold
    charts = {
        layer: concept_bar_chart(
            diss.summary(layer)["per_concept"],
            cats,
            f"{layer}: interpretable units per concept (threshold {mode})",
            out / f"concepts-{layer}.png",
        )
        for layer in diss.layers
    }
    summaries = [diss.summary(layer) for layer in diss.layers]
    if len(summaries) > 1:
        layer_summary_figure(summaries, cats, f"{len(summaries)} layers, threshold {mode}", out / "layers.png")
    title = f"Dissection: {', '.join(diss.layers)}"
    write_html(out / "report.html", page_data(diss, shown, charts, info, causal or []), title)
    if tb_dir is not None:
        log_tensorboard(diss, tb_dir, tb_name, shown, charts)
    return doc


def _no_images(diss: Dissection) -> UnitImages:
    """A `UnitImages` without images (a report written without the generator)."""
    empty = {layer: torch.full((res.num_units, 0), -1, dtype=torch.long) for layer, res in diss.layers.items()}
    return UnitImages(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
        empty,
        {layer: torch.zeros(res.num_units, 0, *res.featuremap_size) for layer, res in diss.layers.items()},
        {layer: res.thresholds.float() for layer, res in diss.layers.items()},
    )


SUMMARY_TAGS = ("interpretable_share", "interpretable_units", "distinct_concepts", "mean_iou")


def log_tensorboard(
    diss: Dissection,
    tb_dir: str | Path,
    name: str,
    shown: UnitImages,
    charts: dict[str, bytes],
) -> None:
    """Per layer: the best-IoU histogram, the concept chart, the top units' images captioned with unit, label and
    IoU, and a table of the top units; across layers, the summary scalars with step = the layer's position
    (1 = first dissected layer), so several layers draw a curve, under a custom-scalars layout that opens on it."""
    from torch.utils.tensorboard import SummaryWriter

    from lightning_gd.reports.images import unit_rows_image

    with SummaryWriter(str(Path(tb_dir) / name)) as w:
        layout = {"dissection across layers (step = layer position)": {
            tag: ["Multiline", [f"layers/{tag}"]] for tag in SUMMARY_TAGS
        }}  # fmt: skip
        w.add_custom_scalars(layout)
        for step, (layer, res) in enumerate(diss.layers.items(), start=1):
            best_iou, best = res.iou.max(1)
            summ = diss.summary(layer)
            values = {**summ, "interpretable_units": summ["interpretable"],
                      "interpretable_share": summ["interpretable"] / max(1, summ["units"])}  # fmt: skip
            for tag in SUMMARY_TAGS:
                w.add_scalar(f"layers/{tag}", values[tag], step)
            w.add_histogram(f"{layer}/best_iou", best_iou, step)
            w.add_text(f"{layer}/top_units", markdown_table(diss, layer), step)
            chart = np.array(Image.open(io.BytesIO(charts[layer])).convert("RGB"))
            w.add_image(f"{layer}/concepts", chart, step, dataformats="HWC")
            top_units = best_iou.argsort(descending=True)[:8].tolist()
            strips = {u: shown.strip(layer, u) for u in top_units if shown.count(layer, u)}
            if strips:
                record = {
                    "best_iou": best_iou.tolist(),
                    "best_concept": [diss.vocabulary.names[int(c)] for c in best],
                    "iou_threshold": diss.settings.iou_threshold,
                }
                w.add_image(f"{layer}/top_units_images", unit_rows_image(strips, record), step, dataformats="HWC")

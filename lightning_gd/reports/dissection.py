"""A dissection's pages, drawn from its results folder alone — `dissect.json`, `iou-<layer>.npy` and the top
images the dissection stored (`unit_images.safetensors`): `report.html` (the unit browser), figures, and
TensorBoard (IoU histogram, markdown table of top units, concept bar chart, image grids of top units)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import threading
import warnings
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from lightning_gd.cache import atomic_write
from lightning_gd.reports.figures import CATEGORY_COLOURS, concept_bar_chart, layer_summary_figure
from lightning_gd.reports.page_parts import relative_url
from lightning_gd.results import CausalSearchResult, DissectionResult
from lightning_gd.results.images import UnitImages, iou_table

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


def page_data(
    result: DissectionResult, iou: dict[str, torch.Tensor], shown: UnitImages, charts: dict[str, bytes], causal: list
) -> dict:
    """Everything the unit browser shows, as one JSON document (see browser.html); `iou`: each layer's table."""
    s = result.settings
    layers = []
    for layer in result.layers:
        slots = shown.slots[layer]
        maps, lo, hi = _quantized_maps(shown.maps[layer], slots)
        units = result.units(layer)
        ranks = causal_ranks(causal, layer, len(units))
        table = (iou[layer].double().clamp(0, 1) * 10000).round().to(torch.int16).numpy().astype("<u2").tobytes()
        pool = (shown.pools or {}).get(layer)
        layers.append(
            {
                "name": layer,
                "size": list(result.layers[layer].get("featuremap_size", [0, 0])),
                "k": slots.shape[1],
                "summary": result.summary(layer),
                "units": [{**u, "causal": ranks.get(u["unit"], [])} for u in units],
                "slots": slots.tolist(),
                "ranks": _ranks(pool, shown.samples, slots),
                "maps": base64.b64encode(maps).decode(),
                "map_lo": lo,
                "map_hi": hi,
                "iou": base64.b64encode(table).decode(),
                "chart": base64.b64encode(charts[layer]).decode(),
            }
        )
    counts = [lay["summary"]["interpretable"] for lay in layers]
    quantile = s["threshold"] == "quantile"
    mode = f"top {1 - s.get('q', 0.99):.3g} quantile per unit" if quantile else "IQR (paper Eq. 2)"
    meta = (
        f"generator {s.get('generator') or '?'}, segmenter {s.get('segmenter') or '?'}, {s.get('n', '?')} samples "
        f"(seed {s.get('seed', '?')}), threshold mode {s['threshold']}"
        + (f" q={s.get('q')}" if quantile else f" on {s.get('iqr_n')} validation samples (seed {s.get('iqr_seed')})")
    )
    names, categories = result.vocabulary["names"], result.vocabulary["categories"]
    return {
        "meta": meta,
        "mode": mode,
        "causal_runs": [{"concept": d["concept"], "layer": d["layer"], "href": d.get("href")} for d in causal],
        "iou_threshold": s.get("iou_threshold", 0.05),
        "concepts": list(names),
        "concept_categories": list(categories),
        "colours": category_colours(categories),
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


def _ranks(pool: torch.Tensor | None, samples: torch.Tensor, slots: torch.Tensor) -> list[list[int]]:
    """Per unit and shown image, its rank (1 = best) among the unit's own top images `pool` (U, C) (0: not among
    them, or no pool stored): the distinct selection can show a unit its #12 where another unit shows its #1, and
    the page says so."""
    pool = pool.tolist() if pool is not None else [[] for _ in range(len(slots))]
    ranks = []
    for u, row in enumerate(slots.tolist()):
        place = {int(i): r for r, i in enumerate(pool[u], start=1) if i >= 0}
        ranks.append([place.get(int(samples[s]), 0) for s in row if s >= 0])
    return ranks


def markdown_table(result: DissectionResult, layer: str, top: int = 20) -> str:
    units = sorted(result.units(layer), key=lambda u: -u["iou"])[:top]
    lines = ["| unit | label | category | IoU |", "|---|---|---|---|"]
    lines += [f"| {u['unit']} | {u['label']} | {u['category']} | {u['iou']:.3f} |" for u in units]
    return "\n".join(lines)


def write_pages(
    folder: str | Path,
    result: DissectionResult,
    iou: dict[str, torch.Tensor],
    shown: UnitImages,
    causal: list[dict] | None = None,
    tb_dir: str | Path | None = None,
    tb_name: str = "dissect",
) -> list[Path]:
    """The concept charts, the layers' figure, `report.html` and TensorBoard of the dissection `result` (with
    `iou`, each layer's table, and `shown`, its stored top images); `causal`: `causal.json` documents
    (`find_causal`) whose ranks the browser shows beside the labels. Returns the files written."""
    folder = Path(folder)
    names, categories = result.vocabulary["names"], result.vocabulary["categories"]
    cats = dict(zip(names, categories))
    mode = result.threshold
    charts, written = {}, []
    for layer in result.layers:
        path = folder / f"concepts-{layer}.png"
        title = f"{layer}: interpretable units per concept (threshold {mode})"
        charts[layer] = concept_bar_chart(result.summary(layer)["per_concept"], cats, title, path)
        written.append(path)
    summaries = [result.summary(layer) for layer in result.layers]
    if len(summaries) > 1:
        layer_summary_figure(summaries, cats, f"{len(summaries)} layers, threshold {mode}", folder / "layers.png")
        written.append(folder / "layers.png")
    title = f"Dissection: {', '.join(result.layers)}"
    write_html(folder / "report.html", page_data(result, iou, shown, charts, causal or []), title)
    if tb_dir is not None:
        log_tensorboard_or_warn(result, iou, tb_dir, tb_name, shown, charts)
    return [*written, folder / "report.html"]


def log_tensorboard_or_warn(result, iou, tb_dir, name, shown, charts) -> None:
    """`log_tensorboard`, whose failure to write (a read-only or full --tb_dir) is a warning: TensorBoard is a
    view of results the output folder holds, so it never costs the finished run (it did: the error came after
    the work and nothing was written). The event writer's own thread reports the same failure with a traceback;
    it is kept to the warning."""
    hook = threading.excepthook

    def quiet(args):
        if not issubclass(args.exc_type, OSError):
            hook(args)

    threading.excepthook = quiet
    try:
        log_tensorboard(result, iou, tb_dir, name, shown, charts)
    except OSError as err:
        warnings.warn(
            f"TensorBoard log in {tb_dir} not written ({err}); the results are written without it", stacklevel=2
        )
    finally:
        threading.excepthook = hook


def iou_tables(folder: str | Path, result: DissectionResult) -> dict[str, torch.Tensor]:
    """Each layer's unit×concept IoU table, stored beside `dissect.json` in `folder`."""
    n = len(result.vocabulary["names"])
    return {layer: iou_table(folder, layer, (len(result.units(layer)), n)) for layer in result.layers}


def rebuild_pages(folder: str | Path) -> list[Path]:
    """The pages of the dissection in `folder` drawn again from its files alone (no network is loaded), with the
    causal searches found beside it."""
    folder = Path(folder)
    result = DissectionResult.load(folder)
    shown = UnitImages.load(folder)
    causal = find_causal(folder.resolve().parent, result.settings, links_from=folder.resolve())
    return write_pages(folder, result, iou_tables(folder, result), shown, causal)


SUMMARY_TAGS = ("interpretable_share", "interpretable_units", "distinct_concepts", "mean_iou")


def log_tensorboard(
    result: DissectionResult,
    iou: dict[str, torch.Tensor],
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
        tags = {tag: ["Multiline", [f"layers/{tag}"]] for tag in SUMMARY_TAGS}
        w.add_custom_scalars({"dissection across layers (step = layer position)": tags})
        for step, layer in enumerate(result.layers, start=1):
            best_iou, best = iou[layer].max(1)
            summ = result.summary(layer)
            share = summ["interpretable"] / max(1, summ["units"])
            values = {**summ, "interpretable_units": summ["interpretable"], "interpretable_share": share}
            for tag in SUMMARY_TAGS:
                w.add_scalar(f"layers/{tag}", values[tag], step)
            w.add_histogram(f"{layer}/best_iou", best_iou, step)
            w.add_text(f"{layer}/top_units", markdown_table(result, layer), step)
            chart = np.array(Image.open(io.BytesIO(charts[layer])).convert("RGB"))
            w.add_image(f"{layer}/concepts", chart, step, dataformats="HWC")
            top_units = best_iou.argsort(descending=True)[:8].tolist()
            strips = {u: shown.strip(layer, u) for u in top_units if shown.count(layer, u)}
            if strips:
                record = {
                    "best_iou": best_iou.tolist(),
                    "best_concept": [result.vocabulary["names"][int(c)] for c in best],
                    "iou_threshold": result.settings.get("iou_threshold", 0.05),
                }
                w.add_image(f"{layer}/top_units_images", unit_rows_image(strips, record), step, dataformats="HWC")

"""Write a dissection to disk: `dissect.json` (+ one `iou-<layer>.npy` per layer), `report.html`, figures,
and TensorBoard (IoU histogram, markdown table of top units, concept bar chart, image grids of top units)."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_gd.cache import atomic_write
from lightning_gd.dissection.results import Dissection
from lightning_gd.reports.figures import concept_bar_chart, layer_summary_figure

JSON_VERSION = 1


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


def _jpeg_b64(images: torch.Tensor, k: int = 6) -> str:
    """uint8 (k, 3, H, W) → base64 JPEG of the first k images side by side. JPEG at native size keeps a
    page of hundreds of units at a few MB (noisy PNGs of all layers ran to over 100 MB); CSS scales it up."""
    row = torch.cat(list(images[:k]), dim=2).permute(1, 2, 0).numpy()  # (H, k·W, 3)
    buf = io.BytesIO()
    Image.fromarray(row).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse}}
th{{cursor:pointer;background:#eee;position:sticky;top:0}} th,td{{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:left}} td img{{image-rendering:pixelated;display:block}} .object{{color:#3b75af}} .part{{color:#ef8636}}
.material{{color:#519e3e}} .dim{{color:#aaa}} nav a{{margin-right:1em}}</style></head><body>
<h1>{title}</h1><p>{meta}</p><nav>{nav}</nav>{sections}
<script>
document.querySelectorAll("table.units").forEach(function(t){{
  t.querySelectorAll("th").forEach(function(th,i){{th.addEventListener("click",function(){{
    var rows=Array.from(t.tBodies[0].rows), asc=th.dataset.asc!=="1"; th.dataset.asc=asc?"1":"0";
    rows.sort(function(a,b){{var x=a.cells[i].dataset.v, y=b.cells[i].dataset.v;
      var nx=parseFloat(x), ny=parseFloat(y); var c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;
      return asc?c:-c;}});
    rows.forEach(function(r){{t.tBodies[0].appendChild(r);}});}});}});
}});
</script></body></html>"""


def write_html(
    path: Path, diss: Dissection, strips: dict[str, dict[int, torch.Tensor]], charts: dict[str, bytes], info: dict
) -> None:
    esc = html.escape
    sections, nav = [], []
    for layer in diss.layers:
        summ = diss.summary(layer)
        rows = []
        for u in diss.units(layer):
            img = strips.get(layer, {}).get(u["unit"])
            cell = (
                f'<img class="strip" src="data:image/jpeg;base64,{_jpeg_b64(img)}" '
                f'width="{2 * img.shape[-1] * min(6, img.shape[0])}">'
                if img is not None
                else ""
            )
            cls = esc(u["category"]) if u["interpretable"] else "dim"
            rows.append(
                f'<tr><td data-v="{u["unit"]}">{u["unit"]}</td>'
                f'<td data-v="{esc(u["label"])}" class="{cls}">{esc(u["label"])}</td>'
                f'<td data-v="{esc(u["category"])}">{esc(u["category"])}</td>'
                f'<td data-v="{u["iou"]:.6f}">{u["iou"]:.3f}</td>'
                f'<td data-v="{u["threshold"]:.6g}">{u["threshold"]:.3g}</td><td data-v="">{cell}</td></tr>'
            )
        chart = base64.b64encode(charts[layer]).decode()
        anchor = f"layer-{esc(layer)}"
        nav.append(f'<a href="#{anchor}">{esc(layer)}</a>')
        sections.append(
            f'<h2 id="{anchor}">{esc(layer)}</h2><p>{summ["interpretable"]} of {summ["units"]} units interpretable '
            f"(IoU &gt; {diss.settings.iou_threshold}), {summ['distinct_concepts']} distinct concepts, mean IoU "
            f"{summ['mean_iou']:.3f}. Click a column header to sort.</p>"
            f'<img src="data:image/png;base64,{chart}"><table class="units"><thead><tr><th>unit</th><th>label</th>'
            f"<th>category</th><th>IoU</th><th>threshold</th><th>top images (region above threshold outlined)</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    s = diss.settings
    meta = esc(
        f"generator {info.get('generator', '?')}, segmenter {info.get('segmenter', '?')}, {s.n} samples (seed "
        f"{s.seed}), threshold mode {s.threshold}"
        + (f" q={s.q}" if s.threshold == "quantile" else f" on {s.iqr_n} validation samples (seed {s.iqr_seed})")
    )
    page = _PAGE.format(
        title=esc(f"Dissection: {', '.join(diss.layers)}"), meta=meta, nav="".join(nav), sections="".join(sections)
    )
    atomic_write(path, page.encode())


def markdown_table(diss: Dissection, layer: str, top: int = 20) -> str:
    units = sorted(diss.units(layer), key=lambda u: -u["iou"])[:top]
    lines = ["| unit | label | category | IoU |", "|---|---|---|---|"]
    lines += [f"| {u['unit']} | {u['label']} | {u['category']} | {u['iou']:.3f} |" for u in units]
    return "\n".join(lines)


def write_dissection(
    diss: Dissection,
    out: str | Path,
    strips: dict[str, dict[int, torch.Tensor]] | None = None,
    info: dict | None = None,
    tb_dir: str | Path | None = None,
    tb_name: str = "dissect",
) -> dict:
    """Write everything a dissection produces into `out`; returns the JSON document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = info or {}
    cats = dict(zip(diss.vocabulary.names, diss.vocabulary.categories))
    doc = to_json(diss, info)
    for layer, res in diss.layers.items():
        buf = io.BytesIO()
        np.save(buf, res.iou.numpy())
        atomic_write(out / f"iou-{layer}.npy", buf.getvalue())
    atomic_write(out / "dissect.json", json.dumps(doc, indent=1).encode())
    charts = {
        layer: concept_bar_chart(
            diss.summary(layer)["per_concept"],
            cats,
            f"{layer}: interpretable units per concept",
            out / f"concepts-{layer}.png",
        )
        for layer in diss.layers
    }
    summaries = [diss.summary(layer) for layer in diss.layers]
    if len(summaries) > 1:
        layer_summary_figure(
            summaries, cats, f"{len(summaries)} layers, threshold {diss.settings.threshold}", out / "layers.png"
        )
    write_html(out / "report.html", diss, strips or {}, charts, info)
    if tb_dir is not None:
        log_tensorboard(diss, tb_dir, tb_name, strips or {}, charts)
    return doc


def log_tensorboard(
    diss: Dissection,
    tb_dir: str | Path,
    name: str,
    strips: dict[str, dict[int, torch.Tensor]],
    charts: dict[str, bytes],
    step: int = 0,
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(tb_dir) / name)) as w:
        for layer, res in diss.layers.items():
            best = res.iou.max(1).values
            w.add_histogram(f"{layer}/best_iou", best, step)
            summ = diss.summary(layer)
            w.add_scalar(f"{layer}/interpretable_units", summ["interpretable"], step)
            w.add_scalar(f"{layer}/distinct_concepts", summ["distinct_concepts"], step)
            w.add_scalar(f"{layer}/mean_iou", summ["mean_iou"], step)
            w.add_text(f"{layer}/top_units", markdown_table(diss, layer), step)
            chart = np.array(Image.open(io.BytesIO(charts[layer])).convert("RGB"))
            w.add_image(f"{layer}/concepts", chart, step, dataformats="HWC")
            top_units = best.argsort(descending=True)[:8].tolist()
            rows = [strips[layer][u] for u in top_units if u in strips.get(layer, {})]
            if rows:
                k = min(r.shape[0] for r in rows)
                import torchvision

                grid = torchvision.utils.make_grid(torch.cat([r[:k] for r in rows]), nrow=k, padding=1)
                w.add_image(f"{layer}/top_units_images", grid, step)

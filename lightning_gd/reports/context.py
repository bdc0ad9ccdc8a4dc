"""Reports of the context job, drawn from its stored results (`context.json`, `context_images.safetensors`): the
insertion effect by background (paper Fig. 11's bar chart), the responsive locations outlined on images (Fig. 11's
boxes), the tracing plot and heatmap (Fig. 17), the results page and TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lightning_gd.reports.figures import figure, save
from lightning_gd.reports.images import outline, save_rows
from lightning_gd.reports.pages import write_page
from lightning_gd.results import ContextResult
from lightning_gd.results.images import ContextImages


def context_figure(doc: dict, path: Path | None = None, min_count: int = 20) -> bytes:
    """Left: the mean insertion effect by background with its 95 % interval over images; right: the share of
    concept-free windows where the concept appears. Backgrounds with fewer than `min_count` locations are left
    out (said in the title)."""
    rows = {k: v for k, v in doc["by_background"].items() if v["count"] >= min_count}
    names = list(rows)
    fig = figure(max(7.5, 0.9 * len(names) + 3), 3.6)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    values = [rows[k]["effect"] for k in names]
    lo = [max(0.0, rows[k]["effect"] - rows[k]["ci"][0]) for k in names]
    hi = [max(0.0, rows[k]["ci"][1] - rows[k]["effect"]) for k in names]
    ax.bar(range(len(names)), values, color="#3b75af")
    spread = [i for i in range(len(names)) if lo[i] + hi[i] > 0]  # no caps on zero-width intervals
    if spread:
        ax.errorbar(
            spread,
            [values[i] for i in spread],
            [[lo[i] for i in spread], [hi[i] for i in spread]],
            fmt="none",
            capsize=3,
            ecolor="#333333",
            lw=1,
        )
    ax.axhline(0, color="#999999", lw=0.8)
    ticks = [f"{k}\nn={rows[k]['count']}" for k in names]
    ax.set_xticks(range(len(names)), ticks, fontsize=8)
    tops = [v + h for v, h in zip(values, hi)] + [0.0]
    bottoms = [v - lo_ for v, lo_ in zip(values, lo)] + [0.0]
    span = max(tops) - min(bottoms) or 1.0
    ax.set_ylim(min(bottoms) - 0.08 * span, max(tops) + 0.08 * span)
    s = doc["settings"]
    ax.set_ylabel(f"{s['concept']}'s share of the window gained", fontsize=9)
    ax.set_title("mean effect (bars) and 95 % interval over images", fontsize=9)
    rates = [rows[k]["appear_rate"] or 0.0 for k in names]
    guarded = [rows[k].get("appear_rate_guarded") or 0.0 for k in names]
    ax2.bar([i - 0.2 for i in range(len(names))], rates, width=0.4, color="#f4a582", label="raw")
    ax2.bar([i + 0.2 for i in range(len(names))], guarded, width=0.4, color="#d62728", label="guarded (realism)")
    ax2.set_xticks(range(len(names)), names, fontsize=8, rotation=45, ha="right")
    ax2.set_ylim(0, max(rates + [0.01]) * 1.15)
    ax2.legend(fontsize=7, frameon=False)
    ax2.set_title(f"share of {s['concept']}-free windows where it appears", fontsize=9)
    for a in (ax, ax2):
        a.spines[["top", "right"]].set_visible(False)
    where = "one location" if s["region"] == 1 else f"a {s['region']}×{s['region']} region"
    left_out = len(doc["by_background"]) - len(names)
    note = f"; {left_out} background(s) with < {min_count} locations not shown" if left_out else ""
    fig.suptitle(
        f"inserting {s['top_n']} {s['concept']} units of {s['layer']} at {where}, by the background "
        f"there ({s['n']} images{note})",
        fontsize=10,
    )
    return save(fig, path)


def trace_figure(trace: dict, path: Path | None = None) -> bytes:
    """Mean normalised change per later layer, interventions with and without a visible effect (Fig. 17)."""
    fig = figure(5.0, 3.2)
    ax = fig.subplots()
    xs = range(len(trace["layers"]))
    for key, colour, label in (("visible", "#d62728", "visible effect"), ("not_visible", "#1f77b4", "no effect")):
        ys = [math.nan if v is None else v for v in trace[key]]
        ax.plot(xs, ys, "o-", color=colour, label=f"{label} (n={trace[key + '_count']})")
    ax.set_xticks(list(xs), trace["layers"])
    ax.set_ylim(0, None)
    ax.set_ylabel("mean |change| / mean |activation|")
    ax.set_title("how an insertion travels through the later layers", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return save(fig, path)


def heatmap_figure(trace: dict, path: Path | None = None) -> bytes:
    heat = np.array(trace["heatmap"], dtype=float)
    fig = figure(3.6, 3.2)
    ax = fig.subplots()
    im = ax.imshow(heat, cmap="magma", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, label="normalised change")
    unsampled = "; white: not sampled" if np.isnan(heat).any() else ""
    ax.set_title(f"change of {trace['layers'][-1]} by insertion location\n(mean over images{unsampled})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return save(fig, path)


def where_figure(result: ContextResult, shown: ContextImages, path: Path) -> Path:
    """Two rows: the images with the most responsive insertion locations, and the same images with those
    locations outlined in yellow (Fig. 11's boxes)."""
    s = result.settings
    marked = outline(shown.images, shown.regions)
    labels = ["generated", f"where inserting\n{s['concept']} adds ≥ {s['respond']:.0%}\nof the window\n(outlined)"]
    return save_rows([shown.images, marked], path, scale=3, row_labels=labels)


def context_figures(folder: Path, tb_dir: Path | None = None) -> list[Path]:
    """From a context run's stored results in `folder` (`context.json`, and `context_images.safetensors` where
    it kept images): context.png, where.png, and when traced trace.png and trace_heatmap.png; the table and the
    figures to TensorBoard under `tb_dir` if given. Returns the figures written."""
    folder = Path(folder)
    result = ContextResult.load(folder)
    doc = result.document()
    written = [folder / "context.png"]
    context_figure(doc, written[0])
    if (folder / ContextImages.FILE).is_file():
        written.append(where_figure(result, ContextImages.load(folder), folder / "where.png"))
    if result.trace:
        trace_figure(result.trace, folder / "trace.png")
        heatmap_figure(result.trace, folder / "trace_heatmap.png")
        written += [folder / "trace.png", folder / "trace_heatmap.png"]
    if tb_dir is not None:
        s = result.settings
        _tensorboard(doc, folder, Path(tb_dir) / f"context-{s['concept']}-{s['layer']}")
    return written


def write_context_pages(folder: Path, tb_dir: Path | None = None) -> list[Path]:
    """`context_figures` and the folder's results page (index.html). Returns the files written."""
    return [*context_figures(folder, tb_dir), write_page(folder)]


def _tensorboard(doc: dict, out: Path, run: Path) -> None:
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run)) as w:
        # one value per background: drawn along the step axis (step = the background's row in the table logged
        # beside it), so the run opens on two curves rather than a scatter of single dots
        rows = list(doc["by_background"].items())
        w.add_custom_scalars(
            {
                "context (step = background, see context/backgrounds)": {
                    "effect": ["Multiline", ["context/effect"]],
                    "appears": ["Multiline", ["context/appear_rate", "context/appear_rate_guarded"]],
                }
            }
        )
        table = ["| step | background | locations | effect | appears | guarded |", "|---|---|---|---|---|---|"]
        for step, (name, row) in enumerate(rows, start=1):
            w.add_scalar("context/effect", row["effect"], step)
            rates = [row.get(k) for k in ("appear_rate", "appear_rate_guarded")]
            for key, rate in zip(("appear_rate", "appear_rate_guarded"), rates):
                if rate is not None:  # a background with no concept-free window has no rate
                    w.add_scalar(f"context/{key}", rate, step)
            shown = ["-" if v is None else f"{v:.1%}" for v in rates]
            table.append(f"| {step} | {name} | {row['count']} | {row['effect']:.4f} | {shown[0]} | {shown[1]} |")
        w.add_text("context/backgrounds", "\n".join(table), 0)
        w.add_text("context/settings", json.dumps(doc["settings"]), 0)
        for png in ("context.png", "where.png", "trace.png", "trace_heatmap.png"):
            if (out / png).is_file():
                w.add_image(
                    f"context/{png[:-4]}", np.asarray(Image.open(out / png).convert("RGB")), 0, dataformats="HWC"
                )

"""Every matplotlib figure of the project, drawn on `Figure` + `FigureCanvasAgg` (never pyplot, so importing
this module picks no backend): dissection (paper Figs. 5, 6/19, 7), unit emergence (Fig. 18, in `emergence_figures`),
causal search (Figs. 4, 9) and artifact units (Fig. 12). Each `*_plot` builds the Figure (tests read its axes); the
`*_figure`/`*_chart`/`*_image` beside it renders it as PNG bytes (written to `path` if given) or an RGB array.

Every axis holds every value it plots (shares below zero included), counts get whole-number ticks and a zero
origin, and every band and line has a legend entry."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter, StrMethodFormatter
from PIL import Image

CATEGORY_COLOURS = {"object": "#3b75af", "part": "#ef8636", "material": "#519e3e"}


def figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A matplotlib Figure drawn by the Agg canvas, without pyplot: no GUI backend is picked and notebooks
    keep their inline plots. Constrained layout keeps titles, suptitles and rotated ticks from overlapping."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_array(fig: Figure) -> np.ndarray:
    """The figure rendered as an RGB array (H, W, 3)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save(fig: Figure, path: str | Path | None) -> bytes:
    """PNG bytes of the figure (tight bounding box), also written to `path` if given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def fit_ylim(ax, values, include_zero: bool = True, margin: float = 0.06) -> None:
    """y-limits that hold every finite value (and 0, where bars or shares start from it), with a margin."""
    v = np.asarray([x for x in _flat(values) if np.isfinite(x)] + [0.0] * include_zero)
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    pad = margin * ((hi - lo) or max(abs(hi), 1.0))
    ax.set_ylim(lo - pad if lo < 0 or not include_zero else 0.0, hi + pad)


def _flat(values) -> list[float]:
    """Numbers from nested sequences of unequal lengths (curves of several lines); None counts as NaN."""
    if values is None:
        return [float("nan")]
    if isinstance(values, (list, tuple, np.ndarray, torch.Tensor)):
        return [x for v in values for x in _flat(v)]
    return [float(values)]


def count_axis(ax, axis: str = "y", nbins: int | str = "auto") -> None:
    """An axis of counts: whole-number ticks only (at most `nbins` intervals)."""
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(nbins=nbins, integer=True))


def tidy(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


# ----------------------------------------------------------------------------------------------- dissection


def concept_bar_plot(per_concept: dict[str, int], categories: dict[str, str], title: str) -> Figure:
    """Bars of interpretable units per concept, grouped and coloured by category (paper Fig. 5)."""
    order = sorted(
        per_concept,
        key=lambda c: (
            list(CATEGORY_COLOURS).index(categories.get(c, "object"))
            if categories.get(c, "object") in CATEGORY_COLOURS
            else 9,
            -per_concept[c],
            c,
        ),
    )
    fig = figure(max(4, 0.45 * len(order) + 1.5), 3)
    ax = fig.subplots()
    colours = [CATEGORY_COLOURS.get(categories.get(c, "object"), "#888") for c in order]
    bars = ax.bar(range(len(order)), [per_concept[c] for c in order], color=colours)
    ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(order)), order, rotation=60, ha="right")
    ax.set_ylabel("interpretable units")
    count_axis(ax)
    fit_ylim(ax, [per_concept[c] for c in order] + [1])
    ax.set_title(title, fontsize=10)
    if not order:
        ax.text(0.5, 0.5, "no interpretable units", transform=ax.transAxes, ha="center", color="0.4")
    handles = [
        Patch(color=col, label=cat)
        for cat, col in CATEGORY_COLOURS.items()
        if any(categories.get(c) == cat for c in order)
    ]
    if handles:
        ax.legend(handles=handles, fontsize=8, frameon=False)
    tidy(ax)
    return fig


def concept_bar_chart(
    per_concept: dict[str, int], categories: dict[str, str], title: str, path: str | Path | None = None
) -> bytes:
    return save(concept_bar_plot(per_concept, categories, title), path)


def layer_summary_plot(summaries: list[dict], categories: dict[str, str], title: str) -> Figure:
    """Per layer: the share of its units that are interpretable, stacked by category, with "k of U" above each
    bar (layers differ in width, so counts alone would compare unlike things); and the number of distinct
    concepts (Figs. 6/19)."""
    layers = [s["layer"] for s in summaries]
    totals = [s["units"] for s in summaries]
    fig = figure(max(6, 1.2 * len(layers) + 3), 3.2)
    a1, a2 = fig.subplots(1, 2)
    bottom = np.zeros(len(layers))
    for cat, col in CATEGORY_COLOURS.items():
        vals = [sum(n for c, n in s["per_concept"].items() if categories.get(c, "object") == cat) for s in summaries]
        if any(vals):
            share = np.asarray(vals) / np.asarray(totals)
            a1.bar(layers, share, bottom=bottom, color=col, label=cat)
            bottom += share
    for i, s in enumerate(summaries):
        a1.annotate(
            f"{s['interpretable']} of {s['units']}",
            (i, bottom[i]),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    a1.set_ylabel("share of the layer's units\nthat are interpretable")
    a1.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    fit_ylim(a1, list(bottom) + [0.01], margin=0.15)
    if a1.get_legend_handles_labels()[0]:
        a1.legend(fontsize=8, frameon=False)
    distinct = [s["distinct_concepts"] for s in summaries]
    a2.bar(layers, distinct, color="#444")
    a2.set_ylabel("distinct concepts")
    count_axis(a2)
    fit_ylim(a2, distinct + [1])
    for a in (a1, a2):
        tidy(a)
        a.tick_params(axis="x", rotation=45)
    fig.suptitle(title, fontsize=10)
    return fig


def layer_summary_figure(
    summaries: list[dict], categories: dict[str, str], title: str, path: str | Path | None = None
) -> bytes:
    return save(layer_summary_plot(summaries, categories, title), path)


def comparison_plot(rows: list[dict], title: str) -> Figure:
    """Side by side models/checkpoints (paper Fig. 7): units matching objects, distinct concepts, mean IoU. Each
    bar is named by its row, with the layer and threshold mode beneath (they change what is counted)."""
    names = ["\n".join(dict.fromkeys(str(r[k]) for k in ("name", "layer", "threshold") if k in r)) for r in rows]
    fig = figure(max(7, 1.6 * len(names) + 4), 3.4)
    axes = fig.subplots(1, 3)
    for ax, key, label in zip(
        axes,
        ("object_units", "distinct_concepts", "mean_iou"),
        ("units matching objects", "distinct concepts", "mean IoU\n(interpretable units)"),
    ):
        # bars at positions, not at categorical names: two rows with the same name must not share one bar
        values = [r[key] for r in rows]
        ax.bar(range(len(rows)), values, color="#3b75af")
        ax.set_xticks(range(len(rows)), names, fontsize=8)
        ax.set_title(label, fontsize=9)
        fit_ylim(ax, values)
        if key != "mean_iou":
            count_axis(ax)
        tidy(ax)
    fig.suptitle(title, fontsize=10)
    return fig


def comparison_figure(rows: list[dict], title: str, path: str | Path | None = None) -> bytes:
    return save(comparison_plot(rows, title), path)


# ----------------------------------------------------------------------------------------------- emergence


RANKING_STYLE = {"alpha": ("α (causal search)", "#d62728"), "iou": ("IoU (dissection)", "#1f77b4")}


def ace_zoom_limit(top_n: int) -> int:
    """The largest n of the ablation curve's first panel: the reported top-n and a little beyond (30 for 20)."""
    return max(30, -(-3 * top_n // 2))


def ace_curve_plot(summary: dict) -> Figure:
    """Share of c's pixels removed against the number of ablated units, per ranking (Fig. 4, right), in two
    panels: n up to `ace_zoom_limit` on a linear axis (left), where the reported top-n lies and the rankings
    differ, with its own y-range, so the tail of many ablated units (a broken image the segmenter labels anew,
    removal far below zero) does not squash it; and every n on a log axis (right, `fig.axes[0]`). Negative shares
    stay on the axes; the band is the random draws' spread."""
    fig = figure(8.6, 3.4)
    grid = fig.add_gridspec(1, 2, width_ratios=(1, 1.25))
    full, zoom = fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[0, 0])  # fig.axes: [all n, n ≤ the limit]
    limit = ace_zoom_limit(summary["top_n"])
    keep = [i for i, n in enumerate(summary["sizes"]) if n <= limit]
    fit_ylim(full, _ace_lines(full, summary, range(len(summary["sizes"]))), margin=0.04)
    fit_ylim(zoom, _ace_lines(zoom, summary, keep), margin=0.04)
    full.set_xscale("log")
    full.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # 1, 10, 100 rather than powers of ten
    full.set_title(f"every n (log scale; {summary['sizes'][-1]} = all units)", fontsize=9)
    zoom.set_xlim(0, limit)
    zoom.set_title(f"n ≤ {limit}, where the top-{summary['top_n']} lies", fontsize=9)
    zoom.set_ylabel(f"share of {summary['concept']} pixels removed")
    for ax in (full, zoom):
        ax.set_xlabel("units ablated (n)")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        tidy(ax)
    fig.suptitle(f"ablating {summary['concept']} units ({summary.get('layer', '')})", fontsize=10)
    full.legend(fontsize=7, frameon=False, loc="best")
    return fig


def _ace_lines(ax, summary: dict, keep) -> list[float]:
    """The rankings' curves and the random baseline at the sizes `keep` (indices), the reported n marked;
    returns every value drawn, for the y-limits."""
    sizes, curves = np.asarray(summary["sizes"])[list(keep)], summary["ablation_removed"]
    plotted = [0.0, 1.0] if sizes.size and sizes[-1] == summary["sizes"][-1] else [0.0]
    for name, (label, colour) in RANKING_STYLE.items():
        if name in curves:
            values = np.asarray(_flat(curves[name]))[list(keep)]
            ax.plot(sizes, values, marker="o", ms=3, color=colour, label=label, clip_on=False)
            plotted += list(values)
    if "random_mean" in curves:
        mean = np.asarray(_flat(curves["random_mean"]))[list(keep)]
        std = np.asarray(_flat(curves["random_std"]))[list(keep)]
        ax.plot(sizes, mean, color="#7f7f7f", ls="--", label="random units (mean)", clip_on=False)
        if np.any(std > 0):
            ax.fill_between(sizes, mean - std, mean + std, color="#7f7f7f", alpha=0.2, lw=0, label="random ± 1 s.d.")
        plotted += list(mean - std) + list(mean + std)
    ax.axhline(0, color="#999", lw=0.6)
    ax.axvline(summary["top_n"], color="#555", lw=0.8, ls=":", label=f"n = {summary['top_n']} (reported)")
    return plotted


def ace_curve_figure(summary: dict, path: str | Path | None = None) -> bytes:
    return save(ace_curve_plot(summary), path)


def removal_plot(summaries: list[dict]) -> Figure:
    """Per concept, the share of its pixels removed by ablating its top-n units, α vs IoU vs random (Fig. 9).
    The random bars carry ±1 s.d. over draws where the draws differ; negative shares go below the zero line."""
    fig = figure(max(4, 1.1 * len(summaries) + 1.5), 3.4)
    ax = fig.subplots()
    width, plotted = 0.26, [0.0, 1.0]
    for j, (name, label, colour) in enumerate(
        [("alpha", "α top-n", "#d62728"), ("iou", "IoU top-n", "#1f77b4"), ("random_mean", "n random", "#7f7f7f")]
    ):
        values = np.array([s["removed_at_top_n"].get(name, np.nan) for s in summaries], dtype=float)
        xs = np.arange(len(summaries)) + (j - 1) * width
        ax.bar(xs, values, width, color=colour, label=label)
        plotted += list(values)
        if name == "random_mean":
            std = np.array([s["removed_at_top_n"].get("random_std", 0.0) for s in summaries], dtype=float)
            spread = std > 0  # a zero-length bar with caps would read as a tight interval
            if spread.any():
                ax.errorbar(
                    xs[spread],
                    values[spread],
                    std[spread],
                    fmt="none",
                    ecolor="#333",
                    capsize=2,
                    lw=1,
                    label="random ± 1 s.d.",
                )
                plotted += list(values[spread] - std[spread]) + list(values[spread] + std[spread])
    ax.axhline(0, color="#999", lw=0.6)
    ax.set_xticks(range(len(summaries)), [f"{s['concept']}\n({s.get('layer', '')})" for s in summaries])
    ax.set_ylabel("share of pixels removed")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    fit_ylim(ax, plotted, margin=0.04)
    n = {s["top_n"] for s in summaries}
    ax.set_title(f"ablating the top-{'/'.join(map(str, sorted(n)))} units of each concept", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    tidy(ax)
    return fig


def removal_figure(summaries: list[dict], path: str | Path | None = None) -> bytes:
    return save(removal_plot(summaries), path)


# ----------------------------------------------------------------------------------------------- artifacts


def unit_fid_plot(unit_fid: torch.Tensor, n_top: int, title: str) -> Figure:
    """Per-unit FID, units sorted from worst to best, the top-n (the ablated ones) highlighted; bars from 0 so
    their heights compare."""
    values, _ = torch.sort(unit_fid, descending=True)
    fig = figure(max(4.5, 0.035 * len(values) + 2), 3)
    ax = fig.subplots()
    top = min(n_top, len(values))
    ax.bar(range(top), values[:top].tolist(), color="#d62728", width=1.0, label=f"top {top} (ablated)")
    ax.bar(range(top, len(values)), values[top:].tolist(), color="#9aa9bd", width=1.0, label="other units")
    ax.set_xlabel(f"{len(values)} units, sorted by FID of their top-activating images")
    ax.set_ylabel("per-unit FID")
    count_axis(ax, "x")
    fit_ylim(ax, values.tolist(), margin=0.04)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    tidy(ax)
    return fig


def unit_fid_figure(unit_fid: torch.Tensor, n_top: int, title: str, path: str | Path | None = None) -> bytes:
    return save(unit_fid_plot(unit_fid, n_top, title), path)

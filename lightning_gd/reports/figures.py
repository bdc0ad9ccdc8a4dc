"""Every matplotlib figure of the project, drawn on `Figure` + `FigureCanvasAgg` (never pyplot, so importing
this module picks no backend): dissection (paper Figs. 5, 6/19, 7), unit emergence (Fig. 18), causal search
(Figs. 4, 9) and artifact units (Fig. 12)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

CATEGORY_COLOURS = {"object": "#3b75af", "part": "#ef8636", "material": "#519e3e"}


def figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A matplotlib Figure drawn by the Agg canvas, without pyplot: no GUI backend is picked and notebooks
    keep their inline plots."""
    fig = Figure(figsize=(width, height), dpi=dpi)
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


def concept_bar_chart(
    per_concept: dict[str, int], categories: dict[str, str], title: str, path: str | Path | None = None
) -> bytes:
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
    ax.bar(range(len(order)), [per_concept[c] for c in order], color=colours)
    ax.set_xticks(range(len(order)), order, rotation=60, ha="right")
    ax.set_ylabel("interpretable units")
    ax.set_title(title, fontsize=10)
    handles = [
        Patch(color=col, label=cat)
        for cat, col in CATEGORY_COLOURS.items()
        if any(categories.get(c) == cat for c in order)
    ]
    if handles:
        ax.legend(handles=handles, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return save(fig, path)


def layer_summary_figure(
    summaries: list[dict], categories: dict[str, str], title: str, path: str | Path | None = None
) -> bytes:
    """Per layer: interpretable units stacked by category, and the number of distinct concepts (Figs. 6/19)."""
    layers = [s["layer"] for s in summaries]
    fig = figure(max(6, 1.2 * len(layers) + 3), 3)
    a1, a2 = fig.subplots(1, 2)
    bottom = [0] * len(layers)
    for cat, col in CATEGORY_COLOURS.items():
        vals = [sum(n for c, n in s["per_concept"].items() if categories.get(c, "object") == cat) for s in summaries]
        if any(vals):
            a1.bar(layers, vals, bottom=bottom, color=col, label=cat)
            bottom = [b + v for b, v in zip(bottom, vals)]
    a1.set_ylabel("interpretable units")
    a1.legend(fontsize=8, frameon=False)
    a2.plot(layers, [s["distinct_concepts"] for s in summaries], "o-", color="#444")
    a2.set_ylabel("distinct concepts")
    for a in (a1, a2):
        a.spines[["top", "right"]].set_visible(False)
        a.tick_params(axis="x", rotation=45)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def comparison_figure(rows: list[dict], title: str, path: str | Path | None = None) -> bytes:
    """Side by side models/checkpoints (paper Fig. 7): units matching objects, distinct concepts, mean IoU."""
    names = [r["name"] for r in rows]
    fig = figure(max(7, 1.5 * len(names) + 4), 3)
    axes = fig.subplots(1, 3)
    for ax, key, label in zip(
        axes,
        ("object_units", "distinct_concepts", "mean_iou"),
        ("units matching objects", "distinct concepts", "mean IoU (interpretable)"),
    ):
        # bars at positions, not at categorical names: two rows with the same name must not share one bar
        ax.bar(range(len(rows)), [r[key] for r in rows], color="#3b75af")
        ax.set_xticks(range(len(rows)), names, rotation=45)
        ax.set_title(label, fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


# ----------------------------------------------------------------------------------------------- emergence


def heatmap_image(history: list[dict]) -> np.ndarray:
    """Best IoU of every unit (rows, sorted by the latest measurement) at every measurement (columns)."""
    iou = np.array([r["best_iou"] for r in history]).T  # (U, T)
    order = np.argsort(-iou[:, -1], kind="stable")
    fig = figure(max(4.0, 0.35 * len(history) + 2.5), 4.0)
    ax = fig.subplots()
    im = ax.imshow(iou[order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    steps = [r["step"] for r in history]
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int)
    ax.set_xticks(ticks, [str(steps[t]) for t in ticks], rotation=45, fontsize=7)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"unit (sorted by best IoU at step {steps[-1]})", fontsize=8)
    ax.set_yticks([])
    ax.set_title(f"{history[-1]['layer']}: best IoU per unit", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return to_array(fig)


def emergence_figure(history: list[dict], title: str = "") -> np.ndarray:
    """Interpretable units, distinct concepts, mean IoU and units per concept against training step."""
    steps = [r["step"] for r in history]
    fig = figure(13.0, 3.0)
    axes = fig.subplots(1, 4)
    for ax, key, label in zip(
        axes,
        ("interpretable", "distinct_concepts", "mean_iou"),
        ("interpretable units", "distinct concepts", "mean IoU (interpretable units)"),
    ):
        ax.plot(steps, [r[key] for r in history], "o-", color="#3b75af", ms=3)
        ax.set_title(label, fontsize=9)
    concepts = [c for c in history[-1]["per_concept"] if any(r["per_concept"].get(c, 0) for r in history)]
    for c in concepts:
        axes[3].plot(steps, [r["per_concept"].get(c, 0) for r in history], "o-", ms=2, label=c)
    axes[3].set_title("interpretable units per concept", fontsize=9)
    if concepts:
        axes[3].legend(fontsize=6, frameon=False, ncol=2)
    for ax in axes:
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return to_array(fig)


def units_over_time_figure(columns: list[tuple[dict, dict[int, torch.Tensor]]], units: list[int]) -> np.ndarray:
    """Paper Fig. 18: per fixed unit (rows), its top image at each measurement (columns) with concept and IoU."""
    fig = figure(1.25 * len(columns) + 0.6, 1.5 * len(units) + 0.3)
    axes = np.array(fig.subplots(len(units), len(columns), squeeze=False))
    for j, (record, strips) in enumerate(columns):
        for i, u in enumerate(units):
            ax = axes[i, j]
            if u in strips:
                ax.imshow(strips[u][0].permute(1, 2, 0).numpy(), interpolation="nearest")
            iou = record["best_iou"][u]
            ax.set_title(
                f"{record['best_concept'][u]} {iou:.2f}",
                fontsize=6,
                color="k" if iou > record["iou_threshold"] else "0.6",
            )
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"unit {u}", fontsize=7)
            if i == len(units) - 1:
                ax.set_xlabel(f"step {record['step']}", fontsize=6)
    fig.tight_layout(pad=0.3)
    return to_array(fig)


# ----------------------------------------------------------------------------------------------- causal

RANKING_STYLE = {"alpha": ("α (causal search)", "#d62728"), "iou": ("IoU (dissection)", "#1f77b4")}


def ace_curve_figure(summary: dict, path: str | Path | None = None) -> bytes:
    """Share of c's pixels removed against the number of ablated units, per ranking (Fig. 4, right)."""
    sizes, curves = summary["sizes"], summary["ablation_removed"]
    fig = figure(4.6, 3.2)
    ax = fig.subplots()
    for name, (label, colour) in RANKING_STYLE.items():
        if name in curves:
            ax.plot(sizes, curves[name], marker="o", ms=3, color=colour, label=label)
    if "random_mean" in curves:
        mean, std = np.asarray(curves["random_mean"]), np.asarray(curves["random_std"])
        ax.plot(sizes, mean, color="#7f7f7f", ls="--", label="random units")
        ax.fill_between(sizes, mean - std, mean + std, color="#7f7f7f", alpha=0.2, lw=0)
    ax.axvline(summary["top_n"], color="#bbb", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("units ablated (n)")
    ax.set_ylabel(f"share of {summary['concept']} pixels removed")
    ax.set_ylim(-0.05, 1.02)
    ax.set_title(f"ablating {summary['concept']} units ({summary.get('layer', '')})", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return save(fig, path)


def removal_figure(summaries: list[dict], path: str | Path | None = None) -> bytes:
    """Per concept, the share of its pixels removed by ablating its top-n units, α vs IoU vs random (Fig. 9)."""
    fig = figure(max(4, 1.1 * len(summaries) + 1.5), 3.2)
    ax = fig.subplots()
    width = 0.26
    for j, (name, label, colour) in enumerate(
        [("alpha", "α top-n", "#d62728"), ("iou", "IoU top-n", "#1f77b4"), ("random_mean", "n random", "#7f7f7f")]
    ):
        values = [s["removed_at_top_n"].get(name, 0.0) for s in summaries]
        errors = [s["removed_at_top_n"].get("random_std", 0.0) if name == "random_mean" else 0.0 for s in summaries]
        xs = [i + (j - 1) * width for i in range(len(summaries))]
        ax.bar(xs, values, width, yerr=errors, color=colour, label=label, capsize=2)
    ax.set_xticks(range(len(summaries)), [f"{s['concept']}\n({s.get('layer', '')})" for s in summaries])
    ax.set_ylabel("share of pixels removed")
    ax.set_ylim(0, 1.02)
    n = {s["top_n"] for s in summaries}
    ax.set_title(f"ablating the top-{'/'.join(map(str, sorted(n)))} units of each concept", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return save(fig, path)


# ----------------------------------------------------------------------------------------------- artifacts


def unit_fid_figure(unit_fid: torch.Tensor, n_top: int, title: str, path: str | Path | None = None) -> bytes:
    """Per-unit FID, units sorted from worst to best, the top-n highlighted."""
    values, order = torch.sort(unit_fid, descending=True)
    fig = figure(max(4.5, 0.035 * len(values) + 2), 3)
    ax = fig.subplots()
    colours = ["#d62728" if i < n_top else "#9aa9bd" for i in range(len(values))]
    ax.bar(range(len(values)), values.tolist(), color=colours, width=1.0)
    ax.set_xlabel("units, sorted by FID of their top-activating images")
    ax.set_ylabel("per-unit FID")
    lo = float(values.min())
    ax.set_ylim(lo - 0.1 * (float(values.max()) - lo + 1e-9), None)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return save(fig, path)

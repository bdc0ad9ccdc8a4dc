"""The unit-emergence figures (paper Fig. 18), on the shared helpers of `figures`: the per-concept heatmap over
training steps, interpretable units and concepts over steps, and fixed units' top images over time."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from lightning_gd.reports.figures import count_axis, figure, fit_ylim, tidy, to_array


def heatmap_plot(history: list[dict]) -> Figure:
    """Best IoU of every unit (rows, sorted by the latest measurement) at every measurement (columns); the
    interpretability cut is marked on the colour bar."""
    iou = np.array([r["best_iou"] for r in history]).T  # (U, T)
    order = np.argsort(-iou[:, -1], kind="stable")
    fig = figure(max(4.0, 0.35 * len(history) + 2.5), 4.0)
    ax = fig.subplots()
    im = ax.imshow(iou[order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    steps = [r["step"] for r in history]
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
    ax.set_xticks(ticks, [str(steps[t]) for t in ticks], rotation=45, fontsize=7)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{iou.shape[0]} units (sorted by best IoU at step {steps[-1]})", fontsize=8)
    ax.set_yticks([])
    ax.set_title(f"{history[-1]['layer']}: best IoU per unit", fontsize=9)
    cut = history[-1].get("iou_threshold")
    shown = cut is not None and cut <= iou.max()
    bar = fig.colorbar(im, ax=ax, fraction=0.05, label=f"best IoU (white line: cut {cut:g})" if shown else "best IoU")
    if shown:
        bar.ax.axhline(cut, color="w", lw=1.5)
    return fig


def heatmap_image(history: list[dict]) -> np.ndarray:
    return to_array(heatmap_plot(history))


def emergence_plot(history: list[dict], title: str = "") -> Figure:
    """Interpretable units (share and count), distinct concepts, mean IoU and units per concept against step."""
    steps = [r["step"] for r in history]
    last = history[-1]
    cut = f"IoU > {last['iou_threshold']:g}" if "iou_threshold" in last else "interpretable"
    fig = figure(13.0, 3.2)
    axes = fig.subplots(1, 4)
    for ax, key, label in zip(
        axes,
        ("interpretable", "distinct_concepts", "mean_iou"),
        (
            f"interpretable units ({cut}) of {last.get('units', '?')}",
            "distinct concepts",
            "mean IoU of interpretable units",
        ),
    ):
        values = [r[key] for r in history]
        ax.plot(steps, values, "o-", color="#3b75af", ms=3)
        ax.set_title(label, fontsize=9)
        fit_ylim(ax, values + [1e-3])
        if key != "mean_iou":
            count_axis(ax)
    concepts = [c for c in last["per_concept"] if any(r["per_concept"].get(c, 0) for r in history)]
    per_concept = [[r["per_concept"].get(c, 0) for r in history] for c in concepts]
    for c, values in zip(concepts, per_concept):
        axes[3].plot(steps, values, "o-", ms=2, label=c)
    axes[3].set_title("interpretable units per concept", fontsize=9)
    count_axis(axes[3])
    fit_ylim(axes[3], per_concept + [[1]])
    if concepts:
        axes[3].legend(fontsize=6, frameon=False, ncol=2)
    for ax in axes:
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(steps) <= 8:
            ax.set_xticks(steps)  # the measured steps themselves, not round numbers between them
        else:  # at most 5 round steps: six-digit labels side by side in a quarter-width panel would touch
            count_axis(ax, "x", nbins=5)
        tidy(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def emergence_figure(history: list[dict], title: str = "") -> np.ndarray:
    return to_array(emergence_plot(history, title))


def units_over_time_plot(columns: list[tuple[dict, dict[int, torch.Tensor]]], units: list[int]) -> Figure:
    """Paper Fig. 18: per fixed unit (rows), its top image at each measurement (columns) with concept and IoU;
    grey captions are below the interpretability cut (said in the title)."""
    fig = figure(1.25 * len(columns) + 0.9, 1.5 * len(units) + 0.6)
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
    if columns:
        fig.suptitle(f"top image, best concept, IoU\n(grey: IoU ≤ {columns[-1][0]['iou_threshold']:g})", fontsize=7)
    return fig


def units_over_time_figure(columns: list[tuple[dict, dict[int, torch.Tensor]]], units: list[int]) -> np.ndarray:
    return to_array(units_over_time_plot(columns, units))


# ----------------------------------------------------------------------------------------------- causal

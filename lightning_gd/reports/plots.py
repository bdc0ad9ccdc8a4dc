"""Figures of dissections: interpretable units per concept (Fig. 5), per layer (Figs. 6/19), per model (Fig. 7)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

CATEGORY_COLOURS = {"object": "#3b75af", "part": "#ef8636", "material": "#519e3e"}


def _save(fig, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
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
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(order) + 1.5), 3))
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
    return _save(fig, path)


def layer_summary_figure(
    summaries: list[dict], categories: dict[str, str], title: str, path: str | Path | None = None
) -> bytes:
    """Per layer: interpretable units stacked by category, and the number of distinct concepts (Figs. 6/19)."""
    layers = [s["layer"] for s in summaries]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(layers) + 3), 3))
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
    return _save(fig, path)


def comparison_figure(rows: list[dict], title: str, path: str | Path | None = None) -> bytes:
    """Side by side models/checkpoints (paper Fig. 7): units matching objects, distinct concepts, mean IoU."""
    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(max(7, 1.5 * len(names) + 4), 3))
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
    return _save(fig, path)

"""Reports of causal searches: the ablation curve (paper Fig. 4), the share of each concept removed by its
top-n units (Fig. 9), before/after image grids (Figs. 1c, 1d, 4), JSON and TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_gd.ace import window_mask
from lightning_gd.images import to_uint8
from lightning_gd.interventions import intervene, location_mask, unit_indicator
from lightning_gd.io import atomic_write
from lightning_gd.reports.images import outline
from lightning_gd.reports.plots import _save, plt
from lightning_gd.viz import colorize, save_rows

RANKING_STYLE = {"alpha": ("α (causal search)", "#d62728"), "iou": ("IoU (dissection)", "#1f77b4")}


def ace_curve_figure(summary: dict, path: str | Path | None = None) -> bytes:
    """Share of c's pixels removed against the number of ablated units, per ranking (Fig. 4, right)."""
    sizes, curves = summary["sizes"], summary["ablation_removed"]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for name, (label, colour) in RANKING_STYLE.items():
        if name in curves:
            ax.plot(sizes, curves[name], marker="o", ms=3, color=colour, label=label)
    if "random_mean" in curves:
        mean, std = torch.tensor(curves["random_mean"]), torch.tensor(curves["random_std"])
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
    return _save(fig, path)


def removal_figure(summaries: list[dict], path: str | Path | None = None) -> bytes:
    """Per concept, the share of its pixels removed by ablating its top-n units, α vs IoU vs random (Fig. 9)."""
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(summaries) + 1.5), 3.2))
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
    return _save(fig, path)


@torch.no_grad()
def image_grids(module, z: torch.Tensor, locations: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Rows of uint8 images: ablation (original, its labels, the α top-n ablated, its labels, the IoU top-n
    ablated, its labels) and insertion (original with the window marked, α top-n inserted, its labels)."""
    split, seg, n = module.split, module.segmenter, module.top_n
    r = split.h(z)
    everywhere = torch.ones(1, 1, *r.shape[-2:], device=r.device)
    x = split.f(r, z)

    def ablated(order: torch.Tensor) -> torch.Tensor:
        return split.f(intervene(r, unit_indicator(order[:n], r.shape[1], r.device), everywhere), z)

    xa, xb = ablated(module.ranking()), ablated(module.iou_ranking())
    locations = locations.to(r.device)
    alpha = unit_indicator(module.ranking()[:n], r.shape[1], r.device)
    xi = split.f(intervene(r, alpha, location_mask(locations, tuple(r.shape[-2:])), module.k), z)
    window = window_mask(locations, tuple(r.shape[-2:]), tuple(x.shape[-2:]))
    ablation_rows = [
        to_uint8(x),
        colorize(seg.labels(x)),
        to_uint8(xa),
        colorize(seg.labels(xa)),
        to_uint8(xb),
        colorize(seg.labels(xb)),
    ]
    insertion_rows = [outline(to_uint8(x), window), outline(to_uint8(xi), window), colorize(seg.labels(xi))]
    return {"ablation": [row.cpu() for row in ablation_rows], "insertion": [row.cpu() for row in insertion_rows]}


def write_ace(module, summary: dict, grid_batch, tensorboard=None) -> Path:
    """ace.json, ace_curve.png and the image grids under the run's folder; the same to TensorBoard."""
    out = Path(module.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "ace.json", json.dumps(summary, indent=1).encode())
    ace_curve_figure(summary, out / "ace_curve.png")
    written = [out / "ace.json", out / "ace_curve.png"]
    grids = image_grids(module, *grid_batch) if grid_batch is not None else {}
    for name, rows in grids.items():
        written.append(save_rows(rows, out / f"grid_{name}.png"))
    if tensorboard is not None:
        import numpy as np
        from PIL import Image

        step = module.global_step
        tensorboard.add_image(
            "ace_curve", np.asarray(Image.open(out / "ace_curve.png").convert("RGB")), step, dataformats="HWC"
        )
        for name, rows in grids.items():
            tensorboard.add_images(f"grid_{name}", torch.cat(rows), step)
    at_n = summary["removed_at_top_n"]
    print(
        f"{summary['concept']} @ {summary.get('layer')}: ablating the top-{summary['top_n']} units removes "
        f"{at_n.get('alpha', float('nan')):.1%} of its pixels (α), {at_n.get('iou', float('nan')):.1%} (IoU), "
        f"{at_n.get('random_mean', float('nan')):.1%} ± {at_n.get('random_std', 0.0):.1%} (random)"
    )
    print("wrote " + ", ".join(str(p) for p in written))
    return out


def summary_table(summaries: list[dict]) -> str:
    """A markdown table of finished runs: share of c removed by the top-n units of each ranking, insertion effect."""
    lines = [
        "| concept | layer | c's pixel share | top-n | removed, α top-n | removed, IoU top-n | removed, n random "
        "| insertion effect, α top-n | held-out z |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        at_n, ins = s["removed_at_top_n"], s["insertion_at_top_n"]
        lines.append(
            f"| {s['concept']} | {s.get('layer', '')} | {s['presence']:.1%} | {s['top_n']} | {at_n['alpha']:.1%} "
            f"| {at_n['iou']:.1%} | {at_n['random_mean']:.1%} ± {at_n['random_std']:.1%} "
            f"| {ins['alpha']['ace']:.3f} | {s.get('n_test', '')} |"
        )
    return "\n".join(lines)

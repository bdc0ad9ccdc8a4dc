"""Unit emergence in TensorBoard: scalars with a custom-scalars layout, the best-IoU histogram, the units × time
heatmap and the fixed units' top images at each measurement."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightning_gd.dissection.results import Dissection
from lightning_gd.dissection.top_images import unit_strips
from lightning_gd.models.generators import quiet_measurement, z_dim_of
from lightning_gd.reports.emergence_figures import emergence_figure, heatmap_image, units_over_time_figure
from lightning_gd.reports.figures import save_png
from lightning_gd.reports.images import unit_rows_image
from lightning_gd.reports.pages import write_page
from lightning_gd.results import EmergenceResult

TAG = "emergence"
_LAID_OUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # writer → custom-scalar layouts it holds


def custom_scalars_layout(layer: str, tag: str = TAG) -> dict:
    """One TensorBoard "custom scalars" section per layer: the three measures and units per concept together."""
    base = f"{tag}/{layer}"
    return {
        base: {
            "interpretable units": ["Multiline", [f"{base}/interpretable_units"]],
            "distinct concepts": ["Multiline", [f"{base}/distinct_concepts"]],
            "mean IoU of interpretable units": ["Multiline", [f"{base}/mean_iou"]],
            "interpretable units per concept": ["Multiline", [f"{base}/units_per_concept/.*"]],
        }
    }


def scalars(record: dict, tag: str = TAG) -> dict[str, float]:
    base = f"{tag}/{record['layer']}"
    out = {
        f"{base}/interpretable_units": float(record["interpretable"]),
        f"{base}/distinct_concepts": float(record["distinct_concepts"]),
        f"{base}/mean_iou": float(record["mean_iou"]),
    }
    out.update({f"{base}/units_per_concept/{c}": float(k) for c, k in record["per_concept"].items()})
    return out


def write_unit_emergence(
    writer,
    record: dict,
    result: Dissection,
    generator: nn.Module,
    history: list[dict],
    seed: int = 0,
    z_dim: int | None = None,
    tag: str = TAG,
) -> None:
    """Scalars, custom-scalar layout (once per writer), best-IoU histogram, units × time heatmap, fixed units."""
    layer, step = record["layer"], record["step"]
    base = f"{tag}/{layer}"
    laid_out = _LAID_OUT.setdefault(writer, set())
    if base not in laid_out:
        writer.add_custom_scalars(custom_scalars_layout(layer, tag))
        laid_out.add(base)
    for name, value in scalars(record, tag).items():
        writer.add_scalar(name, value, step)
    writer.add_histogram(f"{base}/best_iou", np.asarray(record["best_iou"]), step)
    writer.add_image(f"{base}/best_iou_heatmap", heatmap_image(history), step, dataformats="HWC")
    if record["fixed_units"]:
        strips = fixed_unit_strips(generator, result, record["fixed_units"], seed, z_dim)
        writer.add_image(f"{base}/fixed_units", unit_rows_image(strips, record), step, dataformats="HWC")
    writer.flush()


def fixed_unit_strips(
    generator: nn.Module, result: Dissection, units: list[int], seed: int = 0, z_dim: int | None = None
) -> dict[int, torch.Tensor]:
    """Top images (k, 3, H, W) uint8 of each fixed unit, its region outlined, generated in eval mode."""
    layer = result.settings.layers[0]
    with quiet_measurement(generator):
        return unit_strips(generator, result.layers[layer], z_dim_of(generator, z_dim), seed, units=units)


def write_emergence(
    runs: Iterable[tuple[dict, Dissection, nn.Module]],
    history: list[dict],
    out: Path,
    tb_dir: Path | None,
    title: str,
    seed: int = 0,
    z_dim: int | None = None,
) -> list[Path]:
    """Measurements of checkpoints in step order — (record, dissection, generator) each — as emergence.json,
    emergence.png, emergence_heatmap.png, emergence_units.png (Fig. 18) under `out`, and TensorBoard."""
    writer = None
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tb_dir))
    columns = []
    try:
        for i, (record, result, G) in enumerate(runs):
            columns.append((record, fixed_unit_strips(G, result, record["fixed_units"], seed, z_dim)))
            if writer is not None:
                write_unit_emergence(writer, record, result, G, history[: i + 1], seed, z_dim)
    finally:
        if writer is not None:
            writer.close()
    EmergenceResult(history).save(out)
    written = [
        save_png(emergence_figure(history, title), out / "emergence.png"),
        save_png(heatmap_image(history), out / "emergence_heatmap.png"),
    ]
    keep = np.unique(np.linspace(0, len(columns) - 1, min(len(columns), 8)).round().astype(int))
    fixed = history[-1]["fixed_units"]
    written.append(save_png(units_over_time_figure([columns[i] for i in keep], fixed), out / "emergence_units.png"))
    written.append(write_page(out))
    return [out / "emergence.json", *written]

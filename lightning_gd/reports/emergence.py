"""Unit emergence drawn from its results: in TensorBoard, scalars with a custom-scalars layout, the best-IoU
histogram, the units × time heatmap and the followed units' top images at each measurement; in a results folder,
the figures of paper Fig. 18 and the page, from `emergence.json` and `emergence_images.safetensors` alone."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from lightning_gd.reports.emergence_figures import emergence_figure, heatmap_image, units_over_time_figure
from lightning_gd.reports.figures import save_png
from lightning_gd.reports.images import unit_rows_image
from lightning_gd.reports.pages import write_page
from lightning_gd.results import EmergenceResult
from lightning_gd.results.emergence import EmergenceImages, fixed_strips
from lightning_gd.results.images import UnitImages

TAG = "emergence"
_LAID_OUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # writer → custom-scalar layouts it holds
MAX_COLUMNS = 8  # measurements shown side by side in emergence_units.png


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
    writer, record: dict, history: list[dict], images: UnitImages | None = None, tag: str = TAG
) -> None:
    """One measurement (`record`, with its `step`) in TensorBoard: scalars, the custom-scalar layout (once per
    writer), best-IoU histogram, the units × time heatmap of `history` (the measurements so far, this one
    last) and the followed units' top images (`images`, rows in the order of `record["fixed_units"]`)."""
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
    if images is not None and record.get("fixed_units"):
        strips = fixed_strips(images, layer, record["fixed_units"])
        writer.add_image(f"{base}/fixed_units", unit_rows_image(strips, record), step, dataformats="HWC")
    writer.flush()


def load_emergence(folder: str | Path) -> tuple[EmergenceResult, EmergenceImages | None]:
    """A folder's `emergence.json` and, when it holds them, the followed units' images (checked to be of the same
    measurements and units)."""
    folder = Path(folder)
    result = EmergenceResult.load(folder)
    if not (folder / EmergenceImages.FILE).is_file():
        return result, None
    images = EmergenceImages.load(folder)
    images.check(result, folder / EmergenceImages.FILE)
    return result, images


def emergence_figures(folder: str | Path) -> list[Path]:
    """emergence.png, emergence_heatmap.png and, when the folder holds the followed units' images,
    emergence_units.png (Fig. 18: each unit's top image at up to `MAX_COLUMNS` measurements), drawn from the
    folder's results."""
    folder = Path(folder)
    result, images = load_emergence(folder)
    history = result.history
    n = history[-1].get("n")
    title = f"{result.layer}: unit emergence over training" + (f" ({n} samples)" if n is not None else "")
    written = [
        save_png(emergence_figure(history, title), folder / "emergence.png"),
        save_png(heatmap_image(history), folder / "emergence_heatmap.png"),
    ]
    if images is not None and images.units:
        keep = np.unique(np.linspace(0, len(history) - 1, min(len(history), MAX_COLUMNS)).round().astype(int))
        columns = [(history[t], images.strips(int(t))) for t in keep]
        written.append(save_png(units_over_time_figure(columns, images.units), folder / "emergence_units.png"))
    return written


def write_emergence(folder: str | Path, tb_dir: Path | None = None) -> list[Path]:
    """A folder's stored emergence results drawn: the figures, the page and, with `tb_dir`, TensorBoard (one
    step per measurement, the checkpoints' steps as the x-axis). Returns the files written in the folder."""
    folder = Path(folder)
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        result, images = load_emergence(folder)
        with SummaryWriter(str(tb_dir)) as writer:
            for t, record in enumerate(result.history):
                shown = images.at(t) if images is not None else None
                write_unit_emergence(writer, record, result.history[: t + 1], shown)
    return [*emergence_figures(folder), write_page(folder)]

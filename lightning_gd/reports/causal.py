"""Reports of causal searches, from their stored results: the ablation curve (paper Fig. 4), the share of each
concept removed by its top-n units (Fig. 9), before/after image grids (Figs. 1c, 1d, 4) and TensorBoard."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_gd.reports.figures import ace_curve_figure, save_png
from lightning_gd.reports.grids import Grid, concept_legend
from lightning_gd.reports.grids import colorize as draw_labels
from lightning_gd.reports.images import outline
from lightning_gd.reports.page_parts import num, pct
from lightning_gd.reports.pages import write_page
from lightning_gd.results import AceResult
from lightning_gd.results.images import AceImages

WINDOW_ON_LABELS = torch.tensor([0, 0, 0], dtype=torch.uint8)  # black: yellow is the sun's label colour


def image_grids(shown: AceImages) -> dict[str, Grid]:
    """Labelled grids of the test's stored images. Ablation: the originals, the α top-n ablated, the IoU top-n
    ablated, each above its segmentation. Insertion: the originals with the window of the insertion marked, their
    labels, the α top-n inserted there, its labels. Each with the legend of the concepts its label rows show."""
    im, lab, window, n, c = shown.images, shown.labels, shown.window, shown.top_n, shown.concept

    def colorize(labels: torch.Tensor) -> torch.Tensor:
        return draw_labels(labels, shown.colours)

    ablation = Grid(
        [
            im["original"],
            colorize(lab["original"]),
            im["ablated_alpha"],
            colorize(lab["ablated_alpha"]),
            im["ablated_iou"],
            colorize(lab["ablated_iou"]),
        ],
        [
            "original",
            "its labels",
            f"{c} units\nby α (top {n})\nablated",
            "labels",
            f"{c} units\nby IoU (top {n})\nablated",
            "labels",
        ],
        concept_legend([lab["original"], lab["ablated_alpha"], lab["ablated_iou"]], shown.concepts, shown.colours),
    )
    insertion = Grid(
        [
            outline(im["original"], window),
            outline(colorize(lab["original"]), window, WINDOW_ON_LABELS),
            outline(im["inserted"], window),
            outline(colorize(lab["inserted"]), window, WINDOW_ON_LABELS),
        ],
        ["original,\nwindow marked", "labels before", f"{c} units\nby α (top {n})\ninserted", "labels after"],
        concept_legend([lab["original"], lab["inserted"]], shown.concepts, shown.colours),
    )
    return {"ablation": ablation, "insertion": insertion}


def _undefined_as_nan(value):
    """A stored share that is undefined (null) as NaN, the gap a curve leaves."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _undefined_as_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undefined_as_nan(v) for v in value]
    return value


def write_ace_pages(folder: str | Path, tensorboard=None, step: int = 0) -> list[Path]:
    """From a causal test's stored results in `folder` (`ace.json`, and `ace_images.safetensors` where the test
    kept images): ace_curve.png, the labelled image grids and the folder's results page (index.html); the curve
    and the same grids to `tensorboard` (a SummaryWriter) at `step`. Returns the files written."""
    folder = Path(folder)
    result = AceResult.load(folder)
    summary = _undefined_as_nan(result.document())
    curve = ace_curve_figure(summary, folder / "ace_curve.png")
    grids = {}
    if (folder / AceImages.FILE).is_file():
        grids = {name: grid.image() for name, grid in image_grids(AceImages.load(folder)).items()}
    for name, image in grids.items():
        save_png(image, folder / f"grid_{name}.png")
    page = write_page(folder)
    if tensorboard is not None:
        image = np.asarray(Image.open(io.BytesIO(curve)).convert("RGB"))
        tensorboard.add_image("ace_curve", image, step, dataformats="HWC")
        for name, image in grids.items():
            tensorboard.add_image(f"grid_{name}", image, step, dataformats="HWC")
    return [folder / "ace_curve.png", *[folder / f"grid_{name}.png" for name in grids], page]


def summary_table(summaries: list[dict]) -> str:
    """A markdown table of finished runs (`ace.json` documents): share of c removed by the top-n units of each
    ranking, insertion effect ("–" where undefined)."""
    lines = [
        "| concept | layer | c's pixel share | top-n | removed, α top-n | removed, IoU top-n | removed, n random "
        "| insertion effect, α top-n | held-out z |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        at_n, ins = s["removed_at_top_n"], s["insertion_at_top_n"]
        lines.append(
            f"| {s['concept']} | {s.get('layer', '')} | {pct(s['presence'])} | {s['top_n']} | {pct(at_n.get('alpha'))} "
            f"| {pct(at_n.get('iou'))} | {pct(at_n.get('random_mean'))} ± {pct(at_n.get('random_std'))} "
            f"| {num(ins.get('alpha', {}).get('ace'))} | {s.get('n_test', '')} |"
        )
    return "\n".join(lines)

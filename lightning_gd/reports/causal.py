"""Reports of causal searches: the ablation curve (paper Fig. 4), the share of each concept removed by its
top-n units (Fig. 9), before/after image grids (Figs. 1c, 1d, 4), JSON and TensorBoard."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_gd.cache import staged
from lightning_gd.causal.ace import window_mask
from lightning_gd.causal.interventions import intervene, location_mask, unit_indicator
from lightning_gd.models.images import to_uint8
from lightning_gd.reports.figures import ace_curve_figure, save_png
from lightning_gd.reports.grids import Grid, colorize, concept_legend
from lightning_gd.reports.images import outline
from lightning_gd.reports.page_parts import num, pct
from lightning_gd.results import AceResult

WINDOW_ON_LABELS = torch.tensor([0, 0, 0], dtype=torch.uint8)  # black: yellow is the sun's label colour


@torch.no_grad()
def image_grids(module, z: torch.Tensor, locations: torch.Tensor) -> dict[str, Grid]:
    """Labelled grids of uint8 images. Ablation: the originals, the α top-n ablated, the IoU top-n ablated, each
    above its segmentation. Insertion: the originals with the window of the insertion marked, their labels, the α
    top-n inserted there, its labels. Each with the legend of the concepts its label rows show."""
    split, seg, n, c = module.split, module.segmenter, module.top_n, module.hparams.concept
    r = split.h(z)
    everywhere = torch.ones(1, 1, *r.shape[-2:], device=r.device)
    x = split.f(r, z)

    def ablated(order: torch.Tensor) -> torch.Tensor:
        return split.f(intervene(r, unit_indicator(order[:n], r.shape[1], r.device), everywhere), z)

    xa, xb = ablated(module.ranking()), ablated(module.iou_ranking())
    locations = locations.to(r.device)
    alpha = unit_indicator(module.ranking()[:n], r.shape[1], r.device)
    xi = split.f(intervene(r, alpha, location_mask(locations, tuple(r.shape[-2:])), module.k_c), z)
    window = window_mask(locations, tuple(r.shape[-2:]), tuple(x.shape[-2:]))
    labels = {name: seg.labels(images).cpu() for name, images in (("x", x), ("xa", xa), ("xb", xb), ("xi", xi))}
    window = window.cpu()
    ablation = Grid(
        [to_uint8(x).cpu(), colorize(labels["x"]), to_uint8(xa).cpu(), colorize(labels["xa"]), to_uint8(xb).cpu(),
         colorize(labels["xb"])],
        ["original", "its labels", f"{c} units\nby α (top {n})\nablated", "labels", f"{c} units\nby IoU (top {n})"
         "\nablated", "labels"],
        concept_legend([labels["x"], labels["xa"], labels["xb"]], seg.concepts),
    )  # fmt: skip
    insertion = Grid(
        [outline(to_uint8(x).cpu(), window), outline(colorize(labels["x"]), window, WINDOW_ON_LABELS),
         outline(to_uint8(xi).cpu(), window), outline(colorize(labels["xi"]), window, WINDOW_ON_LABELS)],
        ["original,\nwindow marked", "labels before", f"{c} units\nby α (top {n})\ninserted", "labels after"],
        concept_legend([labels["x"], labels["xi"]], seg.concepts),
    )  # fmt: skip
    return {"ablation": ablation, "insertion": insertion}


def write_ace(module, summary: dict, grid_batch, tensorboard=None) -> list[Path]:
    """ace.json, ace_curve.png, the labelled image grids and the folder's results page (index.html) under the
    run's folder (replaced together); the curve and the same grids to TensorBoard. Returns the files written (the
    command line lists them once, with the rest of the run's)."""
    from lightning_gd.reports.pages import write_page

    out = Path(module.out)
    summary = {**summary, "generator": module.names["generator"]}  # what the results page matches pages by
    grids = {name: grid.image() for name, grid in image_grids(module, *grid_batch).items()} if grid_batch else {}
    result = AceResult.from_summary(summary)  # an undefined share (the concept never present) as null, not NaN
    with staged(out) as stage:
        result.save(stage)
        curve = ace_curve_figure(summary, stage / "ace_curve.png")
        for name, image in grids.items():
            save_png(image, stage / f"grid_{name}.png")
    page = write_page(out)
    written = [out / "ace.json", out / "ace_curve.png", *[out / f"grid_{name}.png" for name in grids], page]
    if tensorboard is not None:
        import io

        import numpy as np
        from PIL import Image

        step = module.global_step
        image = np.asarray(Image.open(io.BytesIO(curve)).convert("RGB"))
        tensorboard.add_image("ace_curve", image, step, dataformats="HWC")
        for name, image in grids.items():
            tensorboard.add_image(f"grid_{name}", image, step, dataformats="HWC")
    at_n = result.removed_at_top_n
    print(
        f"{result.concept} @ {result.layer}: ablating the top-{result.top_n} units removes {pct(at_n.get('alpha'))} "
        f"of its pixels (α), {pct(at_n.get('iou'))} (IoU), {pct(at_n.get('random_mean'))} ± "
        f"{pct(at_n.get('random_std'))} (random)"
    )
    return written


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

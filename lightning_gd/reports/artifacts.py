"""Reports of artifact units, drawn from their stored results (`unit_fid.json`, `artifact_images.safetensors`): the
per-unit FID ranking (paper Fig. 12), the ablation table (Tables 1–2), image rows of the worst units and of the
same samples before and after ablation (Figs. 8, 13), and the results page."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_gd.cache import atomic_write
from lightning_gd.reports.figures import unit_fid_figure
from lightning_gd.reports.images import save_rows
from lightning_gd.reports.pages import write_page
from lightning_gd.results import UnitFidResult
from lightning_gd.results.images import ArtifactImages


def ablation_markdown(rows: list[dict]) -> str:
    focus = "fid_focus" in rows[0]

    def cell(row: dict, key: str) -> str:
        return f"{row[key]:.2f}" + (f" ± {row[key + '_std']:.2f}" if key + "_std" in row else "")

    head = "| ablation | FID, the evaluation sample |" + (
        " FID, where the top-n FID units fire most |" if focus else ""
    )
    lines = [head, "|---|---|" + ("---|" if focus else "")]
    for row in rows:
        lines.append(f"| {row['ablation']} | {cell(row, 'fid')} |" + (f" {cell(row, 'fid_focus')} |" if focus else ""))
    return "\n".join(lines)


def image_rows(result: UnitFidResult, shown: ArtifactImages, n_top: int, folder: Path) -> list[Path]:
    """top_units.png (each shown unit's top images, one row each) and before_after.png (the same samples as
    generated, with the `n_top` top FID units ablated, with the random units of the table's first draw ablated)."""
    labels = [f"unit {u}\nFID {result.unit_fid[u]:.1f}" for u in shown.units.tolist()]
    top = save_rows(list(shown.top), folder / "top_units.png", row_labels=labels)
    names = {"original": "original", "ablated_top": f"top-{n_top}\nFID units\nablated"}
    if "ablated_random" in shown.rows:
        names["ablated_random"] = f"{len(result.ablation[-1]['units'][0])} random\nunits ablated"
    rows = [shown.rows[k] for k in names]
    return [top, save_rows(rows, folder / "before_after.png", row_labels=list(names.values()))]


def artifact_figures(folder: Path) -> list[Path]:
    """From an artifact run's stored results in `folder` (`unit_fid.json`, and `artifact_images.safetensors` where
    it kept images): unit_fid.png, ablation.md, top_units.png and before_after.png. Returns the files written."""
    folder = Path(folder)
    result = UnitFidResult.load(folder)
    n_top = len(result.ablation[1]["units"]) if len(result.ablation) > 1 else 0
    title = f"{result.layer}: per-unit FID (top {result.top_k} of {result.n} images each)"
    unit_fid = torch.tensor(result.unit_fid, dtype=torch.float64)
    written = [folder / "unit_fid.png", folder / "ablation.md"]
    unit_fid_figure(unit_fid, n_top, title, written[0])
    atomic_write(written[1], (ablation_markdown(result.ablation) + "\n").encode())
    if (folder / ArtifactImages.FILE).is_file():
        written += image_rows(result, ArtifactImages.load(folder), n_top, folder)
    return written


def write_artifact_pages(folder: Path) -> list[Path]:
    """`artifact_figures` and the folder's results page (index.html). Returns the files written."""
    return [*artifact_figures(folder), write_page(folder)]

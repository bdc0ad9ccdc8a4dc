"""`python -m lightning_gd report FOLDER`: a results folder's pages and figures drawn again from its stored
results alone — no generator, segmenter or checkpoint is loaded. Pictures of generated images are drawn from the
images the analysis stored beside its JSON (a dissection's `unit_images.safetensors`, a causal test's
`ace_images.safetensors`); those an analysis kept only as PNG (context's `where.png`, the artifact and emergence
image rows) stay as they are."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_gd.errors import InvalidValue
from lightning_gd.reports.pages import write_page
from lightning_gd.results import CLASSES, load_folder


def rebuild(folder: Path) -> list[Path]:
    """Draw a results folder's pages and figures again from its stored results, with no network loaded.

    A dissection's unit browser and figures, a causal search's curve, image grids and page, and the pages and
    JSON-drawn figures of context, artifacts and emergence folders. Returns the files written.

    Args:
        folder: a results folder (holding dissect.json, causal.json / ace.json, context.json, unit_fid.json or
            emergence.json).

    Examples:
        python -m lightning_gd report out/dissect
        python -m lightning_gd report out/causal/tree-layer4
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder at {folder}")
    found = load_folder(folder)  # every file checked before anything is drawn
    if "dissect.json" in found:
        from lightning_gd.reports.dissection import rebuild_pages

        return rebuild_pages(folder)
    if "ace.json" in found:
        from lightning_gd.reports.causal import write_ace_pages

        return write_ace_pages(folder)
    written = _figures(folder, {name: result.document() for name, result in found.items()})
    kinds = {"causal.json", "unit_fid.json", "emergence.json", "context.json"}
    if not kinds & set(found):
        raise InvalidValue(
            f"{folder} holds no results whose pages can be drawn ({', '.join(sorted(kinds | {'dissect.json'}))}); "
            f"it holds {', '.join(found) or 'none of ' + ', '.join(CLASSES)}"
        )
    return [*written, write_page(folder)]


def _figures(folder: Path, docs: dict[str, dict]) -> list[Path]:
    """The figures drawn from a folder's JSON alone: context's effect chart and tracing plots, the per-unit FID
    ranking."""
    written = []
    if "context.json" in docs:
        from lightning_gd.reports.context import context_figure, heatmap_figure, trace_figure

        doc = docs["context.json"]
        context_figure(doc, folder / "context.png")
        written.append(folder / "context.png")
        if doc.get("trace"):
            trace_figure(doc["trace"], folder / "trace.png")
            heatmap_figure(doc["trace"], folder / "trace_heatmap.png")
            written += [folder / "trace.png", folder / "trace_heatmap.png"]
    if "unit_fid.json" in docs:
        from lightning_gd.reports.figures import unit_fid_figure

        doc = docs["unit_fid.json"]
        n_ablate = len(doc["ablation"][1]["units"]) if len(doc["ablation"]) > 1 else 0
        title = f"{doc['layer']}: per-unit FID (top {doc['top_k']} of {doc['n']} images each)"
        unit_fid_figure(torch.tensor(doc["unit_fid"]), n_ablate, title, folder / "unit_fid.png")
        written.append(folder / "unit_fid.png")
    return written

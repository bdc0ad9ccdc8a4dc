"""`python -m lightning_gd report FOLDER`: a results folder's pages and figures drawn again from its stored
results alone — no generator, segmenter or checkpoint is loaded. Pictures of generated images are drawn from the
images the analysis stored beside its JSON (a dissection's `unit_images.safetensors`, a causal test's
`ace_images.safetensors`, a context run's `context_images.safetensors`, an artifact run's
`artifact_images.safetensors`, an emergence run's `emergence_images.safetensors`); those of a folder written
before its analysis stored them stay as they are."""

from __future__ import annotations

from pathlib import Path

from lightning_gd.errors import InvalidValue
from lightning_gd.reports.pages import write_page
from lightning_gd.results import CLASSES, load_folder


def rebuild(folder: Path) -> list[Path]:
    """Draw a results folder's pages and figures again from its stored results, with no network loaded.

    A dissection's unit browser and figures, a causal search's curve, image grids and page, a context run's and an
    artifact run's figures, image rows and page, and an emergence run's figures and page. Returns the files
    written.

    Args:
        folder: a results folder (holding dissect.json, causal.json / ace.json, context.json, unit_fid.json or
            emergence.json).

    Examples:
        python -m lightning_gd report out/dissect
        python -m lightning_gd report out/causal/tree-layer4
        python -m lightning_gd report out/context/door
        python -m lightning_gd report out/artifacts
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
    written = _figures(folder, set(found))
    kinds = {"causal.json", "unit_fid.json", "emergence.json", "context.json"}
    if not kinds & set(found):
        raise InvalidValue(
            f"{folder} holds no results whose pages can be drawn ({', '.join(sorted(kinds | {'dissect.json'}))}); "
            f"it holds {', '.join(found) or 'none of ' + ', '.join(CLASSES)}"
        )
    return [*written, write_page(folder)]


def _figures(folder: Path, files: set[str]) -> list[Path]:
    """The figures drawn from a folder's stored results alone: context's effect chart, responsive locations and
    tracing plots; the per-unit FID ranking, ablation table and image rows of an artifact run; an emergence run's
    curves, heatmap and followed units."""
    written = []
    if "context.json" in files:
        from lightning_gd.reports.context import context_figures

        written += context_figures(folder)
    if "unit_fid.json" in files:
        from lightning_gd.reports.artifacts import artifact_figures

        written += artifact_figures(folder)
    if "emergence.json" in files:
        from lightning_gd.reports.emergence import emergence_figures

        written += emergence_figures(folder)
    return written

"""Reports of artifact units: the per-unit FID ranking (paper Fig. 12), the ablation table (Tables 1–2) and
before/after image grids (Figs. 8, 13)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lightning_gd.cache import atomic_write
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.images import to_uint8
from lightning_gd.realism.artifacts import generate_ablated
from lightning_gd.reports.figures import unit_fid_figure
from lightning_gd.reports.images import save_rows
from lightning_gd.reports.pages import write_page
from lightning_gd.results import UnitFidResult


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


@torch.no_grad()
def top_unit_images(
    generator: nn.Module, top: torch.Tensor, units: list[int], seed: int, per_unit: int = 8, z_dim: int | None = None
) -> list[torch.Tensor]:
    """Rows of uint8 images: for each unit, its highest-activating images (indices from `top` (K, U))."""
    z_dim = z_dim_of(generator, z_dim)
    rows = []
    for u in units:
        idx = top[:per_unit, u]
        rows.append(to_uint8(generator(latents(idx, z_dim, seed).to(device_of(generator)))).cpu())
    return rows


def write_artifacts(
    out: Path,
    layer: str,
    found: dict,
    top_k: int,
    n: int,
    generator: nn.Module,
    n_ablate: int,
    seed: int,
    eval_seed: int,
    info: dict,
    z_dim: int | None = None,
) -> dict:
    """unit_fid.json, unit_fid.png, ablation.md, top_units.png, before_after.png and the results page
    index.html under `out`, from what `lightning_gd.realism.artifacts.find_artifact_units` found."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unit_fid, ranking, rows, top = found["unit_fid"], found["ranking"], found["rows"], found["top_images"]
    doc = {
        "layer": layer,
        "n": n,
        "top_k": top_k,
        "score": "max activation over the featuremap",
        "ranking": ranking,
        "unit_fid": unit_fid.tolist(),
        "ablation": rows,
        **info,
    }
    UnitFidResult.from_document(doc, "the per-unit FIDs").save(out)
    unit_fid_figure(unit_fid, n_ablate, f"{layer}: per-unit FID (top {top_k} of {n} images each)", out / "unit_fid.png")
    atomic_write(out / "ablation.md", (ablation_markdown(rows) + "\n").encode())
    shown = ranking[:6]
    save_rows(
        top_unit_images(generator, top, shown, seed, z_dim=z_dim),
        out / "top_units.png",
        row_labels=[f"unit {u}\nFID {float(unit_fid[u]):.1f}" for u in shown],
    )
    random_units = rows[-1]["units"][0] if "fid_std" in rows[-1] else []
    before_after = [
        generate_ablated(generator, layer, [], 8, eval_seed, z_dim=z_dim),
        generate_ablated(generator, layer, ranking[:n_ablate], 8, eval_seed, z_dim=z_dim),
    ]
    labels = ["original", f"top-{n_ablate}\nFID units\nablated"]
    if random_units:  # without a random draw a third row would repeat the originals under a wrong label
        before_after.append(generate_ablated(generator, layer, random_units, 8, eval_seed, z_dim=z_dim))
        labels.append(f"{len(random_units)} random\nunits ablated")
    save_rows(before_after, out / "before_after.png", row_labels=labels)
    write_page(out)
    return doc

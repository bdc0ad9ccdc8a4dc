"""Reports of artifact units: the per-unit FID ranking (paper Fig. 12), the ablation table (Tables 1–2) and
before/after image grids (Figs. 8, 13)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lightning_gd.artifacts import generate_ablated
from lightning_gd.generators import device_of, latents, z_dim_of
from lightning_gd.images import to_uint8
from lightning_gd.io import atomic_write
from lightning_gd.reports.plots import _save, plt
from lightning_gd.viz import save_rows


def unit_fid_figure(unit_fid: torch.Tensor, n_top: int, title: str, path: str | Path | None = None) -> bytes:
    """Per-unit FID, units sorted from worst to best, the top-n highlighted."""
    values, order = torch.sort(unit_fid, descending=True)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.035 * len(values) + 2), 3))
    colours = ["#d62728" if i < n_top else "#9aa9bd" for i in range(len(values))]
    ax.bar(range(len(values)), values.tolist(), color=colours, width=1.0)
    ax.set_xlabel("units, sorted by FID of their top-activating images")
    ax.set_ylabel("per-unit FID")
    lo = float(values.min())
    ax.set_ylim(lo - 0.1 * (float(values.max()) - lo + 1e-9), None)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


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
    unit_fid: torch.Tensor,
    k: int,
    n: int,
    rows: list[dict],
    generator: nn.Module,
    top: torch.Tensor,
    n_ablate: int,
    seed: int,
    eval_seed: int,
    info: dict,
    z_dim: int | None = None,
) -> dict:
    """unit_fid.json, unit_fid.png, ablation.md, top_units.png and before_after.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranking = torch.sort(unit_fid, descending=True, stable=True).indices.tolist()
    doc = {
        "layer": layer,
        "n": n,
        "k": k,
        "score": "max activation over the featuremap",
        "ranking": ranking,
        "unit_fid": unit_fid.tolist(),
        "ablation": rows,
        **info,
    }
    atomic_write(out / "unit_fid.json", json.dumps(doc, indent=1).encode())
    unit_fid_figure(unit_fid, n_ablate, f"{layer}: per-unit FID (top {k} of {n} images each)", out / "unit_fid.png")
    (out / "ablation.md").write_text(ablation_markdown(rows) + "\n")
    save_rows(top_unit_images(generator, top, ranking[:6], seed, z_dim=z_dim), out / "top_units.png")
    random_units = rows[-1]["units"][0] if "fid_std" in rows[-1] else []
    before_after = [
        generate_ablated(generator, layer, [], 8, eval_seed, z_dim=z_dim),
        generate_ablated(generator, layer, ranking[:n_ablate], 8, eval_seed, z_dim=z_dim),
        generate_ablated(generator, layer, random_units, 8, eval_seed, z_dim=z_dim),
    ]
    save_rows(before_after, out / "before_after.png")
    return doc

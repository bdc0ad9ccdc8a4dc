"""The images an artifact page shows (paper Figs. 8, 13), made once by the analysis and stored beside
`unit_fid.json` (`lightning_gd.results.images.ArtifactImages`), so that its page is drawn again without the
generator: the highest-FID units' top-activating images, and the same evaluation samples before and after
ablating the top FID units and a random draw of as many units."""

from __future__ import annotations

import torch
from torch import nn

from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.images import to_uint8
from lightning_gd.realism.artifacts import generate_ablated
from lightning_gd.results.images import ArtifactImages


@torch.no_grad()
def top_unit_images(
    generator: nn.Module, top: torch.Tensor, units: list[int], seed: int, per_unit: int = 8, z_dim: int | None = None
) -> torch.Tensor:
    """(R, per_unit, 3, H, W) uint8: for each unit, its highest-activating images (sample indices from `top`
    (K, U), z of `seed`)."""
    z_dim = z_dim_of(generator, z_dim)
    rows = []
    for u in units:
        idx = top[:per_unit, u]
        rows.append(to_uint8(generator(latents(idx, z_dim, seed).to(device_of(generator)))).cpu())
    return torch.stack(rows)


def artifact_images(
    generator: nn.Module,
    layer: str,
    found: dict,
    n_ablate: int,
    seed: int,
    eval_seed: int,
    z_dim: int | None = None,
    shown: int = 6,
    per_row: int = 8,
) -> ArtifactImages:
    """From what `recipe.find_artifact_units` found: the `shown` highest-FID units with `per_row` of their top
    images (of the per-unit FID sample, `seed`), and the first `per_row` evaluation samples (`eval_seed`) as
    generated, with the top `n_ablate` FID units ablated, and with the table's first random draw ablated."""
    ranking, rows = found["ranking"], found["rows"]
    units = ranking[:shown]
    random_units = rows[-1]["units"][0] if "fid_std" in rows[-1] else []

    def ablated(ablate: list[int]) -> torch.Tensor:
        return generate_ablated(generator, layer, ablate, per_row, eval_seed, z_dim=z_dim)

    before_after = {"original": ablated([]), "ablated_top": ablated(ranking[:n_ablate])}
    if random_units:  # without a random draw a third row would repeat the originals
        before_after["ablated_random"] = ablated(random_units)
    top = top_unit_images(generator, found["top_images"], units, seed, per_row, z_dim)
    return ArtifactImages(torch.tensor(units, dtype=torch.long), top, before_after)

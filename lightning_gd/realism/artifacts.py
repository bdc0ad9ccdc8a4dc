"""Artifact units (paper §4.2, Tables 1–2; §S-6.1): per-unit FID in one generation pass, and FID after
ablating units against ablating random ones.

Per-unit FID: generate N images once; for each image record every unit's activation score — its **maximum
over the featuremap**, so a unit that fires strongly anywhere in an image (a local artifact) ranks that image
high, as in the dissection's top images — and the image's FID feature vector. For each unit, the K images
with the highest score give a mean and covariance, and their FID against the real statistics needs no new
images: one eigen-decomposition per unit with the real covariance's square root precomputed
(`lightning_gd.realism.fid.statistics_to_fid`). A unit with a high FID makes unrealistic images when it is on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lightning_gd.causal.interventions import ablate
from lightning_gd.errors import InvalidValue, OutOfRange
from lightning_gd.latents import latent_batches, latents, rng
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.hooks import Trace, resolve_layer
from lightning_gd.models.images import to_uint8
from lightning_gd.models.split import check_featuremap
from lightning_gd.realism.fid import Extractor, RealStatistics, feature_sets_to_fid, fid_to_real


@torch.no_grad()
def scores_and_features(
    generator: nn.Module,
    layer: str,
    extractor: Extractor,
    n: int = 10_000,
    seed: int = 0,
    batch_size: int = 100,
    z_dim: int | None = None,
    progress: bool = True,
    storage: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over n samples: per-unit scores (N, U) (max activation over the featuremap) and FID features
    (N, D) float32 of the generated images; kept in memory-mapped files under `storage` if given (for N too
    large for the machine's memory), else in RAM."""
    resolve_layer(generator, layer)
    z_dim = z_dim_of(generator, z_dim)
    dev = device_of(generator)
    extractor.to(dev)
    scores = feats = None
    start = 0
    for _, z in latent_batches(n, z_dim, seed, batch_size, dev, "scores + features", progress, sharded=False):
        with Trace(generator, layer) as tr:
            x = generator(z)
        s = check_featuremap(tr.output, layer).amax((2, 3)).cpu()  # (B, U)
        f = extractor(to_uint8(x)).float().cpu()  # (B, D)
        if scores is None:
            scores, feats = allocate(n, s.shape[1], storage, "scores"), allocate(n, f.shape[1], storage, "features")
        scores[start : start + len(s)], feats[start : start + len(f)] = s, f
        start += len(s)
    return scores, feats


def allocate(n: int, width: int, storage: str | Path | None, name: str) -> torch.Tensor:
    """A float32 (n, width) tensor in RAM, or backed by a memory-mapped file `<storage>/<name>.f32`."""
    if storage is None:
        return torch.empty(n, width)
    import numpy as np

    path = Path(storage) / f"{name}.f32"
    path.parent.mkdir(parents=True, exist_ok=True)
    return torch.from_numpy(np.memmap(path, dtype=np.float32, mode="w+", shape=(n, width)))


def storage_bytes(n: int, num_units: int, feature_dim: int) -> int:
    """Bytes that `scores_and_features` keeps for n samples."""
    return 4 * n * (num_units + feature_dim)


def top_images(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """(K, U) indices of the K = top_k images with the highest score per unit (ties: smaller index first)."""
    n = scores.shape[0]
    if top_k > n:
        raise InvalidValue(
            f"top_k = {top_k} top images per unit, but only n = {n} samples: use top_k ≤ n (the paper: n/20)"
        )
    if top_k < 2:
        raise InvalidValue(f"top_k must be at least 2 for a covariance, got {top_k}")
    order = torch.sort(-scores, dim=0, stable=True).indices
    return order[:top_k]


def per_unit_fid(
    scores: torch.Tensor,
    features: torch.Tensor,
    real: RealStatistics,
    top_k: int,
    chunk: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """(U,) FID of each unit's top_k top-activating images against the real statistics, from stored features."""
    return top_images_fid(top_images(scores, top_k), features, real, chunk, progress)


def top_images_fid(
    top: torch.Tensor, features: torch.Tensor, real: RealStatistics, chunk: int = 16, progress: bool = True
) -> torch.Tensor:
    """(U,) FID of each unit's images against the real statistics: `top` (K, U) indexes the rows of `features`."""
    out = []
    units = torch.arange(top.shape[1])
    for part in tqdm(units.split(chunk), desc="per-unit FID", disable=not progress, leave=False):
        f = features[top[:, part]].transpose(0, 1)  # (c, K, D)
        out.append(feature_sets_to_fid(f, real).cpu())
    return torch.cat(out)


@torch.no_grad()
def generate_ablated(
    generator: nn.Module,
    layer: str | None,
    units: list[int] | torch.Tensor,
    n: int,
    seed: int,
    batch_size: int = 100,
    z_dim: int | None = None,
    progress: bool = False,
    indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 images (n, 3, H, W) from the seeded z (samples 0 … n−1, or the given sample `indices`) with `units`
    of `layer` set to 0 everywhere (no units: the generator as it is, and `layer` may be None)."""
    if len(units) and layer is None:
        raise InvalidValue("name the layer of the units to ablate")
    z_dim = z_dim_of(generator, z_dim)
    dev = device_of(generator)
    indices = torch.arange(n) if indices is None else torch.as_tensor(indices).long()

    def edit(r: torch.Tensor, layer: str) -> torch.Tensor:
        return ablate(r, units)

    out = []
    for idx in tqdm(indices.split(batch_size), desc="generate", disable=not progress, leave=False):
        z = latents(idx, z_dim, seed).to(dev)
        if len(units):
            with Trace(generator, layer, edit_output=edit, retain_output=False):
                x = generator(z)
        else:
            x = generator(z)
        out.append(to_uint8(x).cpu())
    return torch.cat(out)


def ablation_fid(
    generator: nn.Module,
    layer: str | None,
    units: list[int] | torch.Tensor,
    extractor: Extractor,
    real: RealStatistics,
    n: int,
    seed: int,
    batch_size: int = 100,
    z_dim: int | None = None,
    indices: torch.Tensor | None = None,
) -> float:
    """FID against the real statistics of n samples (or the given sample `indices`) with `units` ablated
    (none: the original generator)."""
    images = generate_ablated(generator, layer, units, n, seed, batch_size, z_dim, indices=indices)
    feats = torch.cat([extractor(b.to(device_of(extractor.module))) for b in images.split(batch_size)])
    return fid_to_real(feats.cpu(), real)


def firing_most(scores: torch.Tensor, units: list[int], n: int) -> torch.Tensor:
    """The n sample indices where any of `units` fires most (max score over them; ties: smaller index)."""
    if n > scores.shape[0]:
        raise InvalidValue(f"{n} images wanted, but only {scores.shape[0]} samples were scored")
    return torch.sort(-scores[:, units].amax(1), stable=True).indices[:n]


def check_units(units: list[int], num_units: int, what: str = "units") -> list[int]:
    bad = [u for u in units if not 0 <= int(u) < num_units]
    if bad:
        raise OutOfRange(f"{what} out of range: {bad}; the layer has units 0 … {num_units - 1}")
    return [int(u) for u in units]


def ablation_table(
    generator: nn.Module,
    layer: str,
    fid_ranking: list[int],
    extractor: Extractor,
    real: RealStatistics,
    n_ablate: int = 20,
    user_units: list[int] | None = None,
    random_draws: int = 5,
    n: int = 2000,
    seed: int = 1,
    batch_size: int = 100,
    z_dim: int | None = None,
    progress: bool = True,
    focus: tuple[torch.Tensor, int] | None = None,
) -> list[dict]:
    """Tables 1–2: FID of the original generator; after ablating the top-n FID units; a user-given list;
    their union; and n random units (mean ± std over draws). Every row uses the same n seeded z (`fid`).

    `focus` = (sample indices, their seed): every row is measured on those samples too (`fid_focus`), e.g.
    the images where the top-n FID units fire most, as the paper's Table 1 does."""
    rows, draws = ablation_sets(fid_ranking, n_ablate, user_units, random_draws, seed)

    def measure(units: list[int]) -> dict[str, float]:
        out = {"fid": ablation_fid(generator, layer, units, extractor, real, n, seed, batch_size, z_dim)}
        if focus is not None:
            idx, focus_seed = focus
            out["fid_focus"] = ablation_fid(
                generator, layer, units, extractor, real, len(idx), focus_seed, batch_size, z_dim, indices=idx
            )
        return out

    measured = [measure(units) for _, units in tqdm(rows, desc="ablation FID", disable=not progress, leave=False)]
    randoms = [measure(units) for units in tqdm(draws, desc="random ablations", disable=not progress, leave=False)]
    return ablation_rows(rows, draws, measured, randoms)


def ablation_sets(
    fid_ranking: list[int], n_ablate: int, user_units: list[int] | None, random_draws: int, seed: int
) -> tuple[list[tuple[str, list[int]]], list[list[int]]]:
    """The rows of the ablation table as (name, units): the original, the top n_ablate FID units, the user's units
    and their union; and the random draws of as many units (seeded by `seed`)."""
    num_units = len(fid_ranking)
    top = fid_ranking[:n_ablate]
    rows: list[tuple[str, list[int]]] = [("original", []), (f"top-{len(top)} FID units", top)]
    if user_units:
        user = check_units(user_units, num_units, "user units")
        rows.append((f"user units ({len(user)})", user))
        rows.append((f"union ({len(set(top) | set(user))})", sorted(set(top) | set(user))))
    gen = rng(seed, stream="ablation_draws")
    draws = [torch.randperm(num_units, generator=gen)[: len(top)].tolist() for _ in range(random_draws)]
    return rows, draws


def ablation_rows(
    rows: list[tuple[str, list[int]]], draws: list[list[int]], measured: list[dict], randoms: list[dict]
) -> list[dict]:
    """The table: each row's measured FIDs, then one row of the random draws (mean, std and each draw)."""
    out = [{"ablation": name, "units": units, **m} for (name, units), m in zip(rows, measured)]
    if randoms:
        row: dict = {"ablation": f"{len(draws[0])} random units ({len(draws)} draws)", "units": draws}
        for key in randoms[0]:
            t = torch.tensor([r[key] for r in randoms], dtype=torch.float64)
            row[key] = float(t.mean())
            row[f"{key}_std"] = float(t.std()) if len(t) > 1 else 0.0
            row[f"{key}_draws"] = t.tolist()
        out.append(row)
    return out

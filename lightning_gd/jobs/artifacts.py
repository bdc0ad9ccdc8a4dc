"""The artifact-unit job (paper §4.2, §S-6.1): per-unit FID, and FID after ablating the worst units."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import fingerprint


def artifacts(
    layer: str = "layer4",
    generator: nn.Module | str | None = None,
    generator_weights: Path | None = None,
    z_dim: int | None = None,
    n: int = 10_000,
    top_k: int = 1_000,
    seed: int = 0,
    n_ablate: int = 20,
    units: list[int] | None = None,
    random_draws: int = 5,
    n_eval: int = 2_000,
    eval_seed: int = 1,
    feature_extractor: Literal["world", "inception"] = "world",
    feature_extractor_weights_path: Path | None = None,
    real_images: Path | None = None,
    real_n: int = 2_000,
    batch_size: int = 100,
    out: Path = Path("out/artifacts"),
    cache_dir: Path | None = Path("out/cache"),
    device: str = "cpu",
) -> dict:
    """Find artifact units by per-unit FID and report FID before/after ablating them vs random units.

    Paper §4.2, §S-6.1, Tables 1–2. Writes unit_fid.json, unit_fid.png, ablation.md, top_units.png and
    before_after.png; returns the unit_fid.json document.

    Args:
        layer: the generator layer whose units are scored.
        generator: a zoo spec or a generator module (class_path + init_args); default: the embedded world's GAN.
        generator_weights: a local weights file for `generator` (safetensors, or a torch file read weights-only).
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: images generated once for the per-unit FID (the paper: 200,000 on a GPU).
        top_k: top-activating images per unit whose FID is measured (the paper: 10,000).
        seed: seed of those n samples of z.
        n_ablate: how many of the highest-FID units to ablate.
        units: a user-chosen list of units to ablate too (e.g. picked by eye in the dissection's HTML report).
        random_draws: random unit sets of size n_ablate for the baseline (mean ± std).
        n_eval: samples per FID of the ablation table (the same seeded z for every row).
        eval_seed: seed of those samples (differs from `seed`).
        feature_extractor: `world` (world FID) or `inception` (needs feature_extractor_weights_path).
        feature_extractor_weights_path: local weights of the extractor (Inception: torch-fidelity's layout).
        real_images: a folder of real images for the real statistics (default: world renders).
        real_n: world renders for the real statistics when real_images is not given.
        batch_size: images per forward pass.
        out: output folder (unit_fid.json, unit_fid.png, ablation.md, top_units.png, before_after.png).
        cache_dir: where real-image statistics are cached (None: no cache).
        device: torch device.
    """
    from lightning_gd.realism.artifacts import find_artifact_units
    from lightning_gd.realism.fid import real_statistics
    from lightning_gd.reports.artifacts import write_artifacts

    if n_ablate < 1 or random_draws < 1 or n_eval < 2:
        raise ValueError("n_ablate and random_draws must be positive and n_eval at least 2")
    if top_k > n:
        raise ValueError(f"top_k = {top_k} images per unit, but only n = {n} samples: use top_k ≤ n (the paper: n/20)")
    G = zoo.generator(generator, weights=generator_weights).to(device).eval()
    extractor = zoo.feature_extractor(feature_extractor, weights_path=feature_extractor_weights_path).to(device)
    if real_images is None and generator is not None and feature_extractor != "world":
        raise ValueError("name the real images of your model's domain with --real_images (a folder of PNG/JPEG)")
    if real_images is None:
        source = zoo.real_images("world", n=real_n)
    else:
        source = zoo.real_images(f"folder:{real_images}")
    real = real_statistics(extractor, source, cache_dir, batch_size)
    found = find_artifact_units(
        G, layer, extractor, real, n, top_k, seed, n_ablate, units, random_draws, n_eval, eval_seed, batch_size, z_dim
    )
    info = {
        "generator": zoo.describe(generator),
        "generator_fingerprint": fingerprint(G),
        "feature_extractor": extractor.identity,
        "real": "world renders" if real_images is None else str(real_images),
        "real_n": real.n,
        "n_eval": n_eval,
    }
    return write_artifacts(out, layer, found, top_k, n, G, n_ablate, seed, eval_seed, info, z_dim)

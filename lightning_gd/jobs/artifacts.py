"""The artifact-unit job (paper §4.2, §S-6.1): per-unit FID, and FID after ablating the worst units."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import check_writable, fingerprint, staged
from lightning_gd.errors import InvalidValue
from lightning_gd.jobs.trainer import ONE_CPU, TrainerOptions
from lightning_gd.models.generators import default_layer
from lightning_gd.results.base import VERSION_KEY


def artifacts(
    layer: str | None = None,
    generator: nn.Module | str | None = None,
    generator_weights: Path | None = None,
    z_dim: int | None = None,
    n: PositiveInt = 10_000,
    top_k: PositiveInt = 1_000,
    seed: int = 0,
    n_ablate: PositiveInt = 20,
    units: list[int] | None = None,
    random_draws: PositiveInt = 5,
    n_eval: PositiveInt = 2_000,
    eval_seed: int = 1,
    feature_extractor: str | None = None,
    feature_extractor_weights_path: Path | None = None,
    real_images: Path | None = None,
    real_n: PositiveInt = 2_000,
    batch_size: PositiveInt = 100,
    out: Path = Path("out/artifacts"),
    cache_dir: Path | None = Path("out/cache"),
    trainer: TrainerOptions = ONE_CPU,
) -> dict | None:
    """Find artifact units by per-unit FID and report FID before/after ablating them vs random units.

    Paper §4.2, §S-6.1, Tables 1–2. Writes unit_fid.json, artifact_images.safetensors (the images of the two image
    rows, so that `python -m lightning_gd report OUT` draws the page again with no network), unit_fid.png,
    ablation.md, top_units.png, before_after.png and index.html; returns the unit_fid.json document.

    Args:
        layer: the generator layer whose units are scored (default: the generator's default layer).
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
        feature_extractor: a zoo spec of the FID feature extractor: the default's (the embedded world's feature
            net: world FID), or `inception` (needs feature_extractor_weights_path).
        feature_extractor_weights_path: local weights of the extractor (Inception: torch-fidelity's layout).
        real_images: a folder of real images for the real statistics (default: the default real-image source,
            the world's renders; needed with another generator and extractor).
        real_n: images of the default source for the real statistics when real_images is not given.
        batch_size: images per forward pass.
        out: output folder (unit_fid.json, artifact_images.safetensors, unit_fid.png, ablation.md, top_units.png,
            before_after.png, index.html).
        cache_dir: where real-image statistics are cached (None: no cache).
        trainer: where the passes run: Lightning's accelerator, devices, num_nodes, strategy and precision, as
            for `fit` (`--trainer.devices 2 --trainer.strategy ddp`: two processes, which give the same per-unit
            FIDs and table as one; only global rank 0 writes the outputs, the other ranks return None).

    Examples:
        python -m lightning_gd artifacts
        python -m lightning_gd artifacts --units "[3, 17, 42]"
        python -m lightning_gd artifacts --n 2000 --top_k 200 --out out/artifacts-small
    """
    from lightning_gd.realism.artifact_images import artifact_images
    from lightning_gd.realism.fid import real_statistics
    from lightning_gd.realism.recipe import find_artifact_units, unit_fid_result
    from lightning_gd.reports.artifacts import write_artifact_pages

    if n_ablate < 1 or random_draws < 1 or n_eval < 2:
        raise InvalidValue("n_ablate and random_draws must be positive and n_eval at least 2")
    if top_k > n:
        raise InvalidValue(
            f"top_k = {top_k} images per unit, but only n = {n} samples: use top_k ≤ n (the paper: n/20)"
        )
    check_writable(out)
    engine = trainer.trainer()
    device = engine.strategy.root_device  # this process's device: the real statistics and the figures run there too
    G = zoo.generator(generator, weights=generator_weights).to(device).eval()
    layer = layer if layer is not None else default_layer(G)
    extractor = zoo.feature_extractor(feature_extractor, weights_path=feature_extractor_weights_path).to(device)
    defaults = (None, zoo.default_name("feature_extractor"))  # the default extractor goes with the default images
    if real_images is None and generator is not None and feature_extractor not in defaults:
        raise InvalidValue("name the real images of your model's domain with --real_images (a folder of PNG/JPEG)")
    if real_images is None:
        source = zoo.real_images(None, n=real_n)
    else:
        source = zoo.real_images(f"folder:{real_images}")
    real = real_statistics(extractor, source, cache_dir, batch_size)
    with feature_storage(G, layer, extractor, n, z_dim, out) as storage:
        sample = {"n": n, "top_k": top_k, "seed": seed, "n_eval": n_eval, "eval_seed": eval_seed}
        table = {"n_ablate": n_ablate, "units": units, "random_draws": random_draws}
        found = find_artifact_units(
            G,
            layer,
            extractor,
            real,
            **sample,
            **table,
            batch_size=batch_size,
            z_dim=z_dim,
            storage=storage,
            trainer=engine,
        )
    if not engine.is_global_zero:  # every rank holds the same result; one writes it
        return None
    info = {
        "generator": zoo.describe(generator, "generator"),
        "generator_fingerprint": fingerprint(G, code=False),
        "feature_extractor": extractor.identity,
        "real": zoo.describe(None, "real_images") if real_images is None else str(real_images),
        "real_n": real.n,
        "n_eval": n_eval,
    }
    result = unit_fid_result(layer, found, top_k, n, info)
    shown = artifact_images(G, layer, found, n_ablate, seed, eval_seed, z_dim)
    with staged(out) as stage:
        result.save(stage)
        shown.save(stage)
        write_artifact_pages(stage)
    return {k: v for k, v in result.document().items() if k != VERSION_KEY}


def available_memory() -> int:
    """Bytes of physical memory free now."""
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def feature_storage(G: nn.Module, layer: str, extractor, n: int, z_dim: int | None, out: Path) -> Iterator[Path | None]:
    """Where the n samples' per-unit scores and FID features are kept: in RAM when they fit in half the free
    memory, else in memory-mapped files in a temporary folder under `out` (deleted afterwards); a ValueError
    before any work when they fit on neither."""
    from lightning_gd.latents import latents
    from lightning_gd.models.generators import device_of, z_dim_of
    from lightning_gd.models.hooks import Trace
    from lightning_gd.models.images import to_uint8
    from lightning_gd.realism.artifacts import storage_bytes

    with torch.no_grad(), Trace(G, layer) as tr:
        x = G(latents([0], z_dim_of(G, z_dim), 0).to(device_of(G)))
    need = storage_bytes(n, tr.output.shape[1], extractor(to_uint8(x)).shape[1])
    ram = available_memory()
    if need <= ram // 2:
        yield None
        return
    existing = next(p for p in [Path(out), *Path(out).absolute().parents] if p.exists())
    disk = shutil.disk_usage(existing).free
    if need > 0.9 * disk:
        raise InvalidValue(
            f"n = {n} samples need {need / 1e9:.1f} GB for their per-unit scores and FID features: more than half "
            f"the free memory ({ram / 1e9:.1f} GB) and more than the free disk at {out} ({disk / 1e9:.1f} GB); "
            "use a smaller --n or free some space"
        )
    Path(out).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".features-", dir=out))
    print(f"n = {n}: {need / 1e9:.1f} GB of scores and features kept in memory-mapped files under {folder}")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

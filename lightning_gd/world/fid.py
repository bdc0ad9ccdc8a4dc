"""The world's FID pieces: its feature net as a project `Extractor` ("world FID", never to be compared with
Inception FID), and its renders as the real images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lightning_gd.models.images import to_uint8
from lightning_gd.realism.fid import Extractor, ImageSource, file_hash
from lightning_gd.world.data import render_batch
from lightning_gd.world.features import FEATURE_NAME, WorldFeatureExtractor, register_world_feature_extractor
from lightning_gd.world.render import DEFAULT_VIEW
from lightning_gd.world.weights import default_path

REAL_SEED = 777_777  # renders of the real statistics: a seed no other world sample uses


def world_extractor(argument: str | None = None, weights_path: str | Path | None = None) -> Extractor:
    """The world's FID feature net, as registered with torch-fidelity (`world` or `world:PATH`)."""
    weights_path = argument or weights_path
    name = register_world_feature_extractor()
    path = Path(weights_path) if weights_path is not None else default_path("features")
    module = WorldFeatureExtractor(name, [FEATURE_NAME], None if weights_path is None else str(weights_path))
    return Extractor(module, FEATURE_NAME, f"{name}-{file_hash(path)}")


def world_renders(argument: str | None = None, n: int = 2000, seed: int = REAL_SEED) -> ImageSource:
    """n world renders (seeded per index) as real images."""

    def batches(batch_size: int) -> Iterator:
        for start in range(0, n, batch_size):
            images, _ = render_batch(min(batch_size, n - start), seed=seed, start=start)
            yield to_uint8(images)

    return ImageSource(batches, f"world-renders-{DEFAULT_VIEW}-n{n}-seed{seed}")

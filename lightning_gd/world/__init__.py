"""The embedded default world: a procedural scene renderer with exact labels, and the GAN, segmenter and
FID feature net the project trained on it and ships. It registers itself with the zoo (`register`), so the
rest of the project asks `lightning_gd.zoo` for "world" and never imports this package.

    >>> from lightning_gd import world
    >>> G, seg = world.load_generator(), world.load_segmenter()
    >>> x = G(G.sample_z(2, seed=0))
    >>> tuple(x.shape), tuple(seg.labels(x).shape), seg.concepts[:3]
    ((2, 3, 64, 64), (2, 64, 64), ('sky', 'cloud', 'sun'))
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_gd.errors import InvalidValue
from lightning_gd.models.segmenters import ModuleSegmenter
from lightning_gd.world.models import FeatureNet, UNet
from lightning_gd.world.render import CATEGORIES, COLOURS, CONCEPTS, render_scene
from lightning_gd.world.weights import default_path, load_module, to_device
from lightning_gd.zoo.progan import ProGAN

__all__ = [
    "CATEGORIES",
    "CONCEPTS",
    "render_scene",
    "load_generator",
    "load_segmenter",
    "load_feature_net",
    "register",
]


def load_generator(path: str | Path | None = None, device: torch.device | str | None = None) -> ProGAN:
    """The world's GAN generator, a `ProGAN` (EMA weights, eval mode): z (B, z_dim) → images (B, 3, 64, 64) in
    [-1, 1]; `layer4` is 8×8."""
    return to_device(load_module(ProGAN, path or default_path("generator"), "generator"), device)


def load_segmenter(path: str | Path | None = None, device: torch.device | str | None = None) -> ModuleSegmenter:
    """The world's segmenter over `CONCEPTS`: `probs(x)` (soft, differentiable) and `labels(x)` (hard)."""

    def build(num_classes: int, width: int) -> UNet:
        if num_classes != len(CONCEPTS):
            raise InvalidValue(f"segmenter weights have {num_classes} classes; this world has {len(CONCEPTS)}")
        return UNet(num_classes, width)

    # The file holds the bare UNet's state dict (what `export` writes); wrap it after loading.
    net = load_module(build, path or default_path("segmenter"), "segmenter")
    return to_device(ModuleSegmenter(net, CONCEPTS, CATEGORIES, colours=COLOURS).eval().requires_grad_(False), device)


def load_feature_net(path: str | Path | None = None, device: torch.device | str | None = None) -> FeatureNet:
    """The world's FID feature net: `forward_features(x)` → (B, 256)."""
    return to_device(load_module(FeatureNet, path or default_path("features"), "feature net"), device)


def _generator(
    argument: str | None = None,
    weights: str | Path | None = None,
    hyper_parameters: dict | None = None,
    device: torch.device | str | None = None,
) -> ProGAN:
    """`world` (the shipped weights), `world:PATH` or weights=PATH (an exported safetensors file); with the
    `hyper_parameters` of a world GAN training checkpoint, an untrained generator of that run's size."""
    if hyper_parameters is not None:
        if "sizes" not in hyper_parameters:
            raise InvalidValue(
                "this checkpoint's hyper-parameters have no 'sizes': it is not a world ProGAN training checkpoint "
                "(the earlier DCGAN world generator is no longer supported)"
            )
        return to_device(ProGAN([int(v) for v in hyper_parameters["sizes"]], tanh=True), device)
    path = argument or weights
    if path is not None and Path(path).suffix != ".safetensors":  # a plain torch state dict of the shipped size
        from lightning_gd.models.weights import load_weights

        return to_device(load_weights(load_generator(), path).eval(), device)
    return load_generator(path, device)


def _segmenter(argument: str | None = None, device: torch.device | str | None = None) -> ModuleSegmenter:
    return load_segmenter(argument, device)


def register(zoo) -> None:
    """Register the world's networks, FID pieces and subcommands with the zoo, each as its kind's default (the
    zoo calls this through the `lightning_gd.zoo` entry point declared in pyproject.toml)."""
    from lightning_gd.world import commands
    from lightning_gd.world.fid import world_extractor, world_renders

    zoo.register("generator", "world", _generator, "the embedded world's GAN (world or world:PATH)", default=True)
    zoo.register("segmenter", "world", _segmenter, "the embedded world's segmenter (world or world:PATH)", default=True)
    zoo.register("feature_extractor", "world", world_extractor, "the world's FID feature net (world FID)", default=True)
    zoo.register("real_images", "world", world_renders, "world renders", default=True)
    for name, fn in commands.COMMANDS.items():
        zoo.register_command(name, fn)

"""Generators: any `nn.Module` mapping z (B, z_dim) to images (B, 3, H, W) in [-1, 1].

z is seeded per sample index, so a sample is the same whatever the batch size, the number of batches or
the DDP rank that draws it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def z_dim_of(generator: nn.Module, z_dim: int | None = None) -> int:
    """The latent size: given, or the generator's `z_dim` attribute."""
    z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
    if z_dim is None:
        raise ValueError(
            f"cannot tell the latent size of {type(generator).__name__}: give z_dim=… or set a `z_dim` attribute"
        )
    return int(z_dim)


def latents(indices: torch.Tensor | range | list[int], z_dim: int, seed: int = 0) -> torch.Tensor:
    """z (len(indices), z_dim) where row i depends only on (seed, indices[i])."""
    rows = []
    gen = torch.Generator()
    for i in indices:
        gen.manual_seed(int(seed) * 1_000_003 + int(i))
        rows.append(torch.randn(z_dim, generator=gen))
    return torch.stack(rows) if rows else torch.zeros(0, z_dim)


def device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every submodule gets back its own mode (even on error), so a frozen
    eval-mode block inside a training generator stays in eval mode."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode

"""Shipped weights of the embedded world: safetensors files whose metadata holds the constructor
arguments, so a loader rebuilds the right architecture and a mismatched file is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save
from torch import nn

from lightning_gd.cache import atomic_write
from lightning_gd.errors import InvalidValue

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FILES = {"generator": "generator.safetensors", "segmenter": "segmenter.safetensors", "features": "features.safetensors"}


def save_module(module: nn.Module, path: str | Path, kwargs: dict, extra: dict | None = None) -> Path:
    """Write `module`'s state dict (contiguous float tensors) with its constructor kwargs as metadata."""
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    meta = {"kwargs": json.dumps(kwargs), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    return atomic_write(path, save(state, metadata=meta))


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_module(build, path: str | Path, what: str) -> nn.Module:
    """Build `build(**kwargs)` from the file's metadata and load its weights strictly, in eval mode."""
    path = Path(path)
    if not path.is_file():
        hint = " (the shipped weights are missing from the package; reinstall it)" if path.parent == WEIGHTS_DIR else ""
        raise FileNotFoundError(f"{what} weights not found: {path}{hint}")
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InvalidValue(f"{path} is not a readable safetensors file of {what} weights: {err}") from err
    if "kwargs" not in meta:
        raise InvalidValue(f"{path} has no 'kwargs' metadata; it was not written by lightning_gd's exporter")
    module = build(**meta["kwargs"])
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InvalidValue(f"{path} does not match the {what} architecture {meta['kwargs']}: {err}") from err
    return module.eval().requires_grad_(False)


def default_path(name: str) -> Path:
    return WEIGHTS_DIR / FILES[name]


def to_device(module: nn.Module, device: torch.device | str | None) -> nn.Module:
    return module.to(device) if device is not None else module

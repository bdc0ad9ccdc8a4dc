"""File helpers: atomic writes (readers see the old file or the whole new one, never half of it), a
safetensors cache, and loading weights into a module without unpickling code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return path


def load_weights(module, path: Path | None):
    """Load a state dict from safetensors or a torch file (weights only, never pickle code) into `module`."""
    if path is None:
        return module
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit {type(module).__name__}: {err}") from err
    return module


def save_atomic(tensors: dict, path: str | Path) -> None:
    """Write a dict of tensors as safetensors, atomically."""
    from safetensors.torch import save

    atomic_write(path, save({k: v.contiguous() for k, v in tensors.items()}))


def cached_tensors(path: str | Path | None, compute: Callable[[], dict], write: bool = True) -> dict:
    """The tensors stored at `path` if the file exists; else `compute()`, written there atomically when `write`
    (e.g. on one DDP rank only). No path: just `compute()`."""
    if path is not None and Path(path).is_file():
        from safetensors.torch import load_file

        return load_file(str(path))
    result = compute()
    if path is not None and write:
        save_atomic({k: v.cpu() for k, v in result.items()}, path)
    return result

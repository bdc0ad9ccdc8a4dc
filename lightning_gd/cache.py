"""Files that are written whole or not at all, and caches of finished work keyed by what it depends on.

- `atomic_write` / `save_atomic`: readers see the old file or the whole new one, never half of it;
- `fingerprint(module)`: a content hash of a network (class, parameters and buffers);
- `cache_key(payload)`: a short hash of a JSON-able description of a result;
- `Cache`: safetensors files under a folder, named by stage and key, loaded when present and readable,
  else computed and written atomically (on one rank only under DDP).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

CACHE_VERSION = 2  # part of every key: bump when a cached computation changes


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_atomic(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a dict of tensors as safetensors, atomically."""
    from safetensors.torch import save

    return atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata))


def fingerprint(module: nn.Module) -> str:
    """A content hash of a module's class, parameters and buffers (names, shapes and values)."""
    h = hashlib.sha1(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(payload: dict) -> str:
    blob = json.dumps({**payload, "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class Cache:
    """Finished results as safetensors files `<folder>/<stage>-<label>-<key>.safetensors`.

    `folder=None` caches nothing (every call computes). `write=False` reads but never writes (e.g. the
    ranks other than 0 under DDP). A file that cannot be read is reported by name and recomputed."""

    def __init__(self, folder: str | Path | None, write: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.write = write

    def path(self, stage: str, payload: dict, label: str = "") -> Path | None:
        if self.folder is None:
            return None
        name = "-".join(part for part in (stage, label, cache_key({"stage": stage, "label": label, **payload})) if part)
        return self.folder / f"{name}.safetensors"

    def _load(self, path: Path | None) -> dict[str, torch.Tensor] | None:
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # a truncated or foreign file: recompute rather than fail every run
            warnings.warn(f"cache file {path} is unreadable ({err}); recomputing it", stacklevel=3)
            return None

    def tensors(
        self, stage: str, payload: dict, compute: Callable[[], dict[str, torch.Tensor]], label: str = ""
    ) -> dict[str, torch.Tensor]:
        """The cached tensors of (stage, payload), or `compute()`, stored for next time."""
        return self.per_label(stage, payload, lambda: {label: compute()}, [label])[label]

    def per_label(
        self,
        stage: str,
        payload: dict,
        compute: Callable[[], dict[str, dict[str, torch.Tensor]]],
        labels: list[str],
    ) -> dict[str, dict[str, torch.Tensor]]:
        """One result per label (e.g. per layer) computed together: loaded if every label's file is readable,
        else all recomputed by `compute()` → {label: tensors} and written one file per label."""
        paths = {label: self.path(stage, {**payload, "label": label}, label) for label in labels}
        loaded = {label: self._load(path) for label, path in paths.items()}
        if all(v is not None for v in loaded.values()):
            return loaded
        result = compute()
        if self.write:
            for label, path in paths.items():
                if path is not None:
                    save_atomic(result[label], path)
        return result

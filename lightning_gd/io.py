"""Atomic file writes: readers see the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return path

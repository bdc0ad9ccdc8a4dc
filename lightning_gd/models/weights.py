"""Weights and checkpoints from local files, never unpickling code: the one loader of the project.

A file is read as safetensors (`.safetensors`) or with `torch.load(weights_only=True)` (anything else: plain
state dicts, `{"state_dict": ...}` wrappers, Lightning checkpoints). A URL is refused: nothing is downloaded.
Errors name the file and say what was expected.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import torch
from torch import nn

from lightning_gd.errors import InvalidValue, UnknownName


def _local(path: str | Path, what: str) -> Path:
    text = str(path)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise InvalidValue(f"{what}: {text} is a URL; lightning_gd loads local files only (download it yourself)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_file(path: str | Path, what: str = "weights file") -> dict:
    """The tensors (safetensors) or the weights-only object (a dict) stored in a local file."""
    path = _local(path, what)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # every unreadable file gets the same actionable message
        raise InvalidValue(
            f"{what} {path} is not readable as weights (safetensors, or a torch file of tensors loaded with "
            f"weights_only=True): {err}"
        ) from err
    if not isinstance(obj, dict):
        raise InvalidValue(f"{what} {path} holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    return obj


def state_dict_of(obj: dict, prefix: str | None = None, source: str | Path = "the file") -> dict[str, torch.Tensor]:
    """The state dict inside `obj` (itself, or its "state_dict" entry), restricted to the keys under `prefix.`
    with the prefix removed."""
    state = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
    if prefix is None:
        return state
    head = prefix.rstrip(".") + "."
    sub = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
    if not sub:
        prefixes = sorted({k.split(".")[0] for k in state})
        raise UnknownName(f"{source} has no weights under '{head}'; its state_dict prefixes: {', '.join(prefixes)}")
    return sub


def load_weights(module: nn.Module, path: str | Path | None, prefix: str | None = None) -> nn.Module:
    """Load a local weights file (state dict, wrapper or checkpoint; keys under `prefix`) into `module`,
    strictly. `path=None` leaves the module as it is."""
    if path is None:
        return module
    state = state_dict_of(read_file(path), prefix, path)
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise InvalidValue(f"{path} does not fit {type(module).__name__}: {err}") from err
    return module


# ----------------------------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint (or any weights-only dict) from a local file."""
    return read_file(path, "checkpoint")


def checkpoint_files(paths) -> list[Path]:
    """Checkpoint files from a file, folder (its `*.ckpt`) or glob pattern, or a list of them, in the order given."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise InvalidValue("--checkpoints is empty: name a checkpoint file, a folder of them or a glob pattern")
    files: list[Path] = []
    for p in map(str, paths):
        if any(ch in p for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(p))
            if not matches:
                raise FileNotFoundError(f"no checkpoint matches the pattern {p}")
            files += matches
        elif Path(p).is_dir():
            found = sorted(Path(p).glob("*.ckpt"))
            if not found:
                raise FileNotFoundError(f"no *.ckpt files in {p}")
            files += found
        elif Path(p).is_file():
            files.append(Path(p))
        else:
            raise FileNotFoundError(f"checkpoint not found: {p}")
    return files


def training_order(path: Path) -> tuple:
    """Sort key: step=N files by N (so a log reads in training order), others after them, last.ckpt (a repeat)
    last."""
    found = re.findall(r"step=(\d+)", path.name)
    return (path.name == "last.ckpt", int(found[-1]) if found else float("inf"), path.name)


def checkpoint_step(ckpt: dict, path: Path) -> int:
    """The checkpoint's global step: recorded, or from its name (step=N)."""
    if isinstance(ckpt.get("global_step"), int):
        return ckpt["global_step"]
    found = re.findall(r"step=(\d+)", path.name)
    if not found:
        raise InvalidValue(f"{path} has no global_step and its name has no step=N; cannot place it on the step axis")
    return int(found[-1])


def checkpoint_batches(ckpt: dict) -> int | None:
    """Training batches done at the checkpoint (Lightning's batch progress), when the file records it."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"])
    except (KeyError, TypeError):
        return None


def state_differences(
    expected: dict[str, torch.Size | tuple], given: dict[str, torch.Size | tuple], optional: tuple[str, ...] = ()
) -> str | None:
    """What keeps `given` (key → shape) from loading strictly where `expected` is wanted, as one line (missing
    keys, unexpected keys, shapes that differ), or None. Keys ending in an `optional` suffix may be absent."""
    missing = [k for k in expected if k not in given and not k.endswith(optional or ("\0",))]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {tuple(given[k])} (expected {tuple(expected[k])})"
        for k in expected
        if k in given and tuple(given[k]) != tuple(expected[k])
    ]
    parts = [
        f"{label} ({len(keys)}): {', '.join(keys[:8])}{', …' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shapes differ", shapes))
        if keys
    ]
    return "; ".join(parts) or None


def shapes_of(state: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) if isinstance(v, torch.Tensor) else (type(v).__name__,) for k, v in state.items()}

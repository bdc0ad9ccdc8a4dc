"""Files that are written whole or not at all, and caches of finished work keyed by what it depends on.

- `atomic_write` / `save_atomic`: readers see the old file or the whole new one, never half of it;
- `fingerprint(module)`: a hash of a network: its classes' code and settings, parameters and buffers;
- `cache_key(payload)`: a short hash of a JSON-able description of a result (with `CACHE_VERSION`);
- `check_writable(folder)`, `staged(folder)`: outputs checked before the work and replaced together after it;
- `Cache`: safetensors files under a folder, named by stage and key, each carrying a checksum of its tensors;
  loaded when present, readable, intact and valid, else (named in a warning) computed again and written
  atomically (on one rank only under DDP).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from lightning_gd.outputs import check_owned, record_written

CACHE_VERSION = 3  # part of every key: bump when a cached computation changes


TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 3600  # a temporary file this old belongs to no running writer


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path` through a temporary file and a rename, which is removed if anything fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the folder of {path}: {err.strerror or err}") from err
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, path)
    except OSError as err:  # the message names the file being written, not its hidden temporary
        raise type(err)(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: str | Path, age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete temporary files that writers killed mid-write left behind (older than `age` seconds)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        try:  # another writer may rename or remove it at any moment
            if time.time() - p.stat().st_mtime > age:
                p.unlink(missing_ok=True)
                stale.append(p)
        except FileNotFoundError:
            continue
    return stale


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha1()
    for name, t in sorted(tensors.items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_atomic(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a dict of tensors as safetensors, atomically, with a checksum of the tensors in its metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, save(tensors, {**(metadata or {}), "checksum": tensors_checksum(tensors)}))


def _code(cls: type) -> str:
    """The compiled code of a class's own methods (and its bases' up to nn.Module). Module-level helpers they call
    and default arguments are not included: a change there needs `CACHE_VERSION` bumped."""
    parts = []
    for base in cls.__mro__:
        if base in (nn.Module, object):
            break
        for name, value in sorted(vars(base).items()):
            fn = getattr(value, "__func__", value)
            code = getattr(fn, "__code__", None)
            if code is not None:
                parts.append(f"{base.__qualname__}.{name}:{_bytecode(code)}")
    return "\n".join(parts)


def _bytecode(code) -> str:
    """Instructions, names and constants of a code object, nested code included (never a memory address)."""
    consts = [
        _bytecode(c) if hasattr(c, "co_code") else repr(sorted(map(repr, c))) if isinstance(c, frozenset) else repr(c)
        for c in code.co_consts
    ]  # frozensets sorted: their order follows string hashing, which differs between processes
    return f"{code.co_code.hex()}|{code.co_names}|{consts}"


def fingerprint(module: nn.Module, code: bool = True) -> str:
    """A hash of what a network computes: every submodule's class (module and name) and settings (`extra_repr`,
    and `fingerprint_settings()` where a module defines it: options that are no tensors, e.g. a truncation ψ),
    its parameters and all its buffers; with `code`, also the compiled methods of its classes (torch's own
    excepted), so a changed `forward` or two parameter-free networks with one class name differ. Cache keys use
    the code; identity checks (a checkpoint's networks, a scored generator) do not, so they survive an upgrade."""
    h = hashlib.sha1()
    for name, sub in module.named_modules():
        cls = type(sub)
        settings = sub.fingerprint_settings() if hasattr(sub, "fingerprint_settings") else {}
        h.update(f"{name}:{cls.__module__}.{cls.__qualname__}({sub.extra_repr()}){sorted(settings.items())}".encode())
        if code and not cls.__module__.startswith("torch."):
            h.update(hashlib.sha1(_code(cls).encode()).digest())
    tensors = {**dict(module.named_buffers()), **module.state_dict()}  # non-persistent buffers too
    for name, t in sorted(tensors.items()):
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

    def _load(self, path: Path | None, check: Callable[[dict], str | None] | None) -> dict[str, torch.Tensor] | None:
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:  # tensors and checksum from one read
                stored = (f.metadata() or {}).get("checksum")
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as err:  # a truncated or foreign file: recompute rather than fail every run
            problem = f"unreadable ({err})"
        else:
            problem = None
            if stored is None:
                problem = "without a checksum (not written by this version)"
            elif stored != tensors_checksum(tensors):
                problem = "changed since it was written (checksum mismatch)"
            elif any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors.values()):
                problem = "holding NaN or Inf"
            elif check is not None:
                problem = check(tensors)
            if problem is None:
                return tensors
        warnings.warn(f"cache file {path} is {problem}; computing it again", stacklevel=5)
        return None

    def _store(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Write one cache file; a failure (a full or read-only cache disk) is a warning that names the file, never
        the end of the run: the result in hand is still used and written to the output folder."""
        try:
            save_atomic(tensors, path)
        except OSError as err:
            warnings.warn(f"{err}; the result is used without caching it", stacklevel=2)

    def tensors(
        self,
        stage: str,
        payload: dict,
        compute: Callable[[], dict[str, torch.Tensor]],
        label: str = "",
        check: Callable[[dict], str | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The cached tensors of (stage, payload), or `compute()`, stored for next time. `check(tensors)` returns
        what is wrong with a loaded result (e.g. a shape), or None."""
        return self.per_label(stage, payload, lambda: {label: compute()}, [label], check)[label]

    def per_label(
        self,
        stage: str,
        payload: dict,
        compute: Callable[[], dict[str, dict[str, torch.Tensor]]],
        labels: list[str],
        check: Callable[[dict], str | None] | None = None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """One result per label (e.g. per layer) computed together: loaded if every label's file is intact,
        else all recomputed by `compute()` → {label: tensors} and written one file per label."""
        loaded = self.load_labels(stage, payload, labels, check)
        if loaded is not None:
            return loaded
        result = compute()
        self.save_labels(stage, payload, {label: result[label] for label in labels})
        return result

    def load_labels(
        self, stage: str, payload: dict, labels: list[str], check: Callable[[dict], str | None] | None = None
    ) -> dict[str, dict[str, torch.Tensor]] | None:
        """Every label's stored result when all are intact on every rank, else None (then every rank computes:
        the computation reduces across ranks, and a rank that loaded would leave the others waiting)."""
        if self.folder is not None and self.write:
            remove_stale_temporaries(self.folder)
        loaded = {label: self._load(self._label_path(stage, payload, label), check) for label in labels}
        return loaded if _all_ranks_agree(all(v is not None for v in loaded.values())) else None

    def save_labels(self, stage: str, payload: dict, result: dict[str, dict[str, torch.Tensor]]) -> None:
        """Store each label's tensors of `result` in its own file (nothing where this cache does not write)."""
        if not self.write:
            return
        for label, tensors in result.items():
            path = self._label_path(stage, payload, label)
            if path is not None:
                self._store(tensors, path)

    def _label_path(self, stage: str, payload: dict, label: str) -> Path | None:
        return self.path(stage, {**payload, "label": label}, label)


def _all_ranks_agree(hit: bool) -> bool:
    """Under torch.distributed, whether every rank found the cache (then all load; else all compute, since the
    computation reduces across ranks and a rank that loaded would leave the others waiting)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return hit
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    flag = torch.tensor(int(hit), device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def check_writable(folder: str | Path) -> Path:
    """Check, before any long computation, that `folder` is one a run may own (`outputs.check_owned`) and can be
    created and written to (nothing is created)."""
    folder = check_owned(folder)
    existing = folder
    while not existing.exists():
        if existing.is_symlink() or existing.parent == existing:
            break
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        raise FileNotFoundError(f"output folder {folder}: {existing} is a link to a missing {existing.readlink()}")
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"output folder {folder}: {existing} is a file; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to the output folder {folder} ({existing} is not writable)")
    return folder


@contextlib.contextmanager
def staged(folder: str | Path) -> Iterator[Path]:
    """A temporary folder inside `folder` to write a run's outputs into. When the block fails they are deleted and
    the previous outputs stay as they were; when it succeeds they are moved into place after all the work, each
    file atomically (a reader sees an old or a new file, never half of one; a file of a previous run that this run
    does not write stays). Staging folders of killed runs are removed after an hour."""
    folder = check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(".staging-*"):
        try:
            if time.time() - old.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            continue
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield stage
        for src in sorted(stage.rglob("*")):
            if src.is_file():
                dst = folder / src.relative_to(stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                record_written(dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

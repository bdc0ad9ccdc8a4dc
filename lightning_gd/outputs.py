"""Output folders a run may own, one run at a time in each, and the files a run wrote there.

- `check_owned(folder)`: refuses `/`, system folders, the home and working folders and their ancestors, the
  installed package and the Python environment: places where a run's files would mix with files it does not own
  (a report moved into `/` as root, a listing of `/proc`).
- `output_lock(folder)`: the folder's lock file, held with `flock` for the whole run, so a second run into the same
  folder stops at once with the other run's process instead of both reporting success and the last one winning
  silently. The kernel releases the lock when a run dies, so a killed run never blocks the next.
- `record_written` / `written_under`: the files this process moved into place, so that "wrote:" lists exactly
  those (never every recent file under the folder).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lightning_gd.errors import InvalidValue

# Folders whose whole tree belongs to the system; a run may own no folder inside them.
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
# Shared folders that hold other people's files: a run may own a new folder inside them, never the folder itself.
SHARED_FOLDERS = ("/", "/home", "/root", "/tmp", "/var", "/var/tmp", "/opt", "/srv", "/mnt", "/media")
LOCK_NAME = ".lightning_gd.lock"


def _refusal(resolved: Path) -> str | None:
    """Why a run may not own `resolved` (an absolute path without links), or None."""
    package = Path(__file__).resolve().parent
    environments = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()} - {Path("/")}
    cwd = Path.cwd().resolve()
    if any(resolved.is_relative_to(tree) for tree in SYSTEM_TREES):
        return "a system folder"
    if str(resolved) in SHARED_FOLDERS or resolved == Path.home().resolve():
        return "a shared folder (name a new folder inside it)"
    if resolved.is_relative_to(package):
        return "inside the lightning_gd package"
    if any(resolved.is_relative_to(env) for env in environments):
        return "inside the Python environment"
    if cwd.is_relative_to(resolved):
        return "the working folder or one that holds it (name a new folder, e.g. out/NAME)"
    return None


def check_owned(folder: str | Path, what: str = "output folder") -> Path:
    """`folder`, if a run may write its files there; else a user error naming the folder and why."""
    folder = Path(folder)
    why = _refusal(folder.expanduser().resolve())
    if why is not None:
        raise InvalidValue(f"{what} {folder} is {why}; a run writes only into a folder it may own")
    return folder


def check_not_cache(out: str | Path, cache_dir: str | Path | None) -> None:
    """The cache holds stages keyed by what they depend on; reports written into it would mix with them."""
    if cache_dir is None:
        return
    out_r, cache_r = Path(out).expanduser().resolve(), Path(cache_dir).expanduser().resolve()
    if out_r.is_relative_to(cache_r):
        raise InvalidValue(f"--out {out} is inside --cache_dir {cache_dir}; name an output folder outside the cache")


def _owner(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold `folder`'s lock for the block; a user error naming the other run if one holds it. A folder this
    creates is removed again when the block leaves it empty (a run that failed before writing)."""
    import fcntl

    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _remove_empty(created)
            raise InvalidValue(
                f"another run is writing into {folder} ({_owner(path)}); wait for it to finish or choose another "
                "output folder"
            ) from None
        # the holder before us may have removed the file between our open and our lock: lock the current one
        if path.exists() and os.fstat(fd).st_ino == path.stat().st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}: {' '.join(sys.argv)[:500]}".encode())
        yield folder
    finally:
        path.unlink(missing_ok=True)  # removed while still held: a waiting opener sees the inode change
        os.close(fd)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    for p in created:  # deepest first
        try:
            p.rmdir()
        except OSError:
            return


_WRITTEN: list[tuple[float, Path]] = []


def record_written(path: str | Path) -> None:
    """Note that this process put `path` in place (`lightning_gd.cache.staged` calls it)."""
    _WRITTEN.append((time.time(), Path(path).absolute()))


def written_under(folder: str | Path, since: float) -> list[Path]:
    """The files recorded since `since` that lie under `folder` and still exist, each once, sorted."""
    root = Path(folder).absolute()
    found = {p for t, p in _WRITTEN if t >= since and p.is_relative_to(root) and p.is_file()}
    return sorted(found)


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK")


def first_process() -> bool:
    """Whether this is the first process of a launch (or the only one): torchrun, SLURM and Lightning's own
    launcher start the other ranks with the same command line and `--out`, and those must not take the lock
    the first one holds."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)

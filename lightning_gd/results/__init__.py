"""Typed, versioned results: one class per analysis, each the contents of one JSON file in a results folder,
with `save(folder)` and `load(folder or file)`; `load(path)` picks the class from the file's name.

| file | class | written by |
|---|---|---|
| `dissect.json` | `DissectionResult` | `dissect` |
| `causal.json` | `CausalSearchResult` | `fit` |
| `ace.json` | `AceResult` | `test` |
| `causal_summary.json` | `CausalSummaryResult` | `causal-summary` |
| `context.json` | `ContextResult` | `context` |
| `unit_fid.json` | `UnitFidResult` | `artifacts` |
| `emergence.json` | `EmergenceResult` | `dissect-checkpoints` |
| `compare.json` | `CompareResult` | `compare` |

Every file records its schema version; loading checks every field and raises `ResultError` naming the file and
the field (`out/dissect.json: layers.layer4.units[3].iou: expected a finite number, got NaN`).
"""

from __future__ import annotations

from pathlib import Path

from lightning_gd.results.base import ResultFile
from lightning_gd.results.causal import AceResult, CausalSearchResult, CausalSummaryResult
from lightning_gd.results.compare import CompareResult
from lightning_gd.results.context import ContextResult
from lightning_gd.results.dissection import DissectionResult
from lightning_gd.results.emergence import EmergenceResult
from lightning_gd.results.realism import UnitFidResult
from lightning_gd.results.schema import ResultError

CLASSES: dict[str, type[ResultFile]] = {
    cls.FILE: cls
    for cls in (
        DissectionResult,
        CausalSearchResult,
        AceResult,
        CausalSummaryResult,
        ContextResult,
        UnitFidResult,
        EmergenceResult,
        CompareResult,
    )
}

__all__ = [
    "CLASSES",
    "AceResult",
    "CausalSearchResult",
    "CausalSummaryResult",
    "CompareResult",
    "ContextResult",
    "DissectionResult",
    "EmergenceResult",
    "ResultError",
    "ResultFile",
    "UnitFidResult",
    "load",
    "load_folder",
]


def load(path: str | Path) -> ResultFile:
    """The result in `path`: a results file (its class from its name), or a folder holding exactly one."""
    path = Path(path)
    if path.is_dir():
        found = [name for name in CLASSES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds no results file (one of {', '.join(CLASSES)})")
        if len(found) > 1:
            raise ResultError(f"{path} holds {' and '.join(found)}: name the file to load")
        return CLASSES[found[0]].load(path / found[0])
    if path.name not in CLASSES:
        if not path.exists():
            raise FileNotFoundError(f"no results file or folder at {path}")
        raise ResultError(
            f"{path}: not a results file name ({', '.join(CLASSES)}); a renamed one loads through its class, "
            "e.g. lightning_gd.results.UnitFidResult.load(path)"
        )
    return CLASSES[path.name].load(path)


def load_folder(folder: str | Path) -> dict[str, ResultFile]:
    """Every results file in `folder`, by file name (e.g. a causal search's `causal.json` and `ace.json`)."""
    folder = Path(folder)
    return {name: cls.load(folder / name) for name, cls in CLASSES.items() if (folder / name).is_file()}

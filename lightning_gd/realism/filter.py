"""The realism filter (paper §S-6.3): leave units whose per-unit FID is above a threshold out of the dissection's
labels. The per-unit FIDs come from the `unit_fid.json` that `python -m lightning_gd artifacts` writes; this
module checks that file against the dissection before any long pass runs."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lightning_gd.cache import fingerprint
from lightning_gd.errors import InvalidValue
from lightning_gd.results import UnitFidResult


def load_unit_fid(path: str | Path, layers: list[str], generator: nn.Module) -> UnitFidResult:
    """The per-unit FIDs at `path`, checked: the file exists and is a per-unit FID result (every FID a finite
    number: a NaN would never exceed the threshold and would switch the filter off unseen), it scores one of
    `layers`, and was scored on these generator weights (when it records them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no per-unit FID file at {path} (run `python -m lightning_gd artifacts`)")
    doc = UnitFidResult.load(path)
    if doc.layer not in layers:
        raise InvalidValue(f"{path} scores layer '{doc.layer}', not one of the dissected {layers}")
    scored = doc.generator_fingerprint
    if scored is not None and scored != fingerprint(generator, code=False):
        raise InvalidValue(f"{path} was scored on another generator (weights fingerprint {scored})")
    return doc

"""The realism filter (paper §S-6.3): leave units whose per-unit FID is above a threshold out of the dissection's
labels. The per-unit FIDs come from the `unit_fid.json` that `python -m lightning_gd artifacts` writes; this
module checks that file against the dissection before any long pass runs."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from lightning_gd.cache import fingerprint
from lightning_gd.errors import InvalidValue


def load_unit_fid(path: str | Path, layers: list[str], generator: nn.Module) -> dict:
    """The per-unit FID document at `path`, checked: it exists, scores one of `layers`, and was scored on these
    generator weights (when it records them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no per-unit FID file at {path} (run `python -m lightning_gd artifacts`)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidValue(f"{path} is not a readable per-unit FID file: {err}") from err
    if doc.get("layer") not in layers:
        raise InvalidValue(f"{path} scores layer '{doc.get('layer')}', not one of the dissected {layers}")
    scored = doc.get("generator_fingerprint")
    if scored is not None and scored != fingerprint(generator, code=False):
        raise InvalidValue(f"{path} was scored on another generator (weights fingerprint {scored})")
    return doc

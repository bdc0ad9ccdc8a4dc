"""`emergence.json`: one dissection measurement per training checkpoint, in step order (paper §S-6.6, Fig. 18);
version 1 files written before the version field are a bare list of the measurements. Beside it,
`emergence_images.safetensors`: the followed units' top images at every measurement, which the figures and
TensorBoard show (`EmergenceImages`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from lightning_gd.cache import save_atomic
from lightning_gd.results.base import ResultFile
from lightning_gd.results.images import UnitImages, need_tensor, read_stored
from lightning_gd.results.schema import INT, NUMBER, STR, Fields, ListOf, MapOf, ResultError, require

RECORD = Fields(
    {
        "step": INT,
        "layer": STR,
        "units": INT,
        "interpretable": INT,
        "distinct_concepts": INT,
        "mean_iou": NUMBER,
        "per_concept": MapOf(INT),
        "iou_threshold": NUMBER,
    },
    {
        "batches": INT,
        "checkpoint": STR,
        "best_iou": ListOf(NUMBER),
        "best_concept": ListOf(STR),
        "seconds": NUMBER,
        "fixed_units": ListOf(INT),
        "n": INT,
        "seed": INT,
    },
)


@dataclass
class EmergenceResult(ResultFile):
    """`history`: per checkpoint, {step, batches, checkpoint, layer, units, interpretable, distinct_concepts,
    mean_iou, per_concept, best_iou, best_concept, iou_threshold, n, seed, fixed_units, seconds}."""

    FILE: ClassVar[str] = "emergence.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd dissect-checkpoints"
    SCHEMA: ClassVar[Fields] = Fields({"history": ListOf(RECORD, min_len=1)})
    LIST_FIELD: ClassVar[str] = "history"

    history: list[dict]

    @classmethod
    def rules(cls, doc: dict) -> None:
        steps = [r["step"] for r in doc["history"]]
        require(steps == sorted(steps), "history", f"expected measurements in step order, got steps {steps}")

    @property
    def last(self) -> dict:
        return self.history[-1]

    @property
    def layer(self) -> str:
        return self.last["layer"]


def fixed_strips(shown: UnitImages, layer: str, units: list[int]) -> dict[int, torch.Tensor]:
    """Each followed unit's top images (k, 3, H, W) uint8, dimmed outside its region; row r of `shown` is units[r]
    (a unit without images is left out)."""
    return {u: shown.strip(layer, row) for row, u in enumerate(units) if shown.count(layer, row)}


@dataclass
class EmergenceImages:
    """The followed `units` (R) of `layer` at every measurement (`steps`, T): `samples` (T, R, k) the probe sample
    of each top image (-1 = none), `images` (T, R, k, 3, H, W) uint8, `maps` (T, R, k, h, w) the unit's own
    featuremap on each of its images and `thresholds` (T, R) the unit's threshold at that measurement, from which
    a strip is drawn with everything outside the unit's region dimmed (`strips`)."""

    FILE: ClassVar[str] = "emergence_images.safetensors"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd dissect-checkpoints"

    layer: str
    steps: list[int]
    units: list[int]
    samples: torch.Tensor
    images: torch.Tensor
    maps: torch.Tensor
    thresholds: torch.Tensor

    @classmethod
    def stack(cls, layer: str, steps: list[int], units: list[int], shown: list[UnitImages]) -> EmergenceImages:
        """One measurement's `UnitImages` per step (row r: units[r]), as one record of the whole run."""
        parts = [_dense(s, layer) for s in shown]
        return cls(layer, list(steps), list(units), *(torch.stack(p) for p in zip(*parts)))

    def at(self, t: int) -> UnitImages:
        """Measurement t as `UnitImages` (row r: units[r])."""
        R, k = self.samples.shape[1:]
        slots = torch.where(self.samples[t] >= 0, torch.arange(R * k).view(R, k), -1)
        per_layer = {self.layer: slots}, {self.layer: self.maps[t]}, {self.layer: self.thresholds[t]}
        return UnitImages(self.samples[t].flatten(), self.images[t].flatten(0, 1), *per_layer)

    def strips(self, t: int) -> dict[int, torch.Tensor]:
        return fixed_strips(self.at(t), self.layer, self.units)

    def check(self, result: EmergenceResult, source: str | Path = FILE) -> None:
        """Raise `ResultError` unless these images are of `result`'s measurements and followed units."""
        steps, units = [r["step"] for r in result.history], result.last.get("fixed_units")
        if self.steps != steps or self.units != units or self.layer != result.layer:
            raise ResultError(
                f"{source}: images of {self.layer} at steps {self.steps} of units {self.units}, but emergence.json "
                f"holds {result.layer} at steps {steps} following units {units}: write both again with "
                f"`{self.WRITTEN_BY}`"
            )

    def save(self, folder: str | Path) -> Path:
        tensors = {"samples": self.samples.long(), "images": self.images, "maps": self.maps.float()}
        tensors["thresholds"] = self.thresholds.float()
        meta = {"layer": self.layer, "steps": [int(s) for s in self.steps], "units": [int(u) for u in self.units]}
        return save_atomic(tensors, Path(folder) / self.FILE, {"meta": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> EmergenceImages:
        path, t, meta = read_stored(cls, path)
        layer, steps, units = meta.get("layer"), meta.get("steps"), meta.get("units")
        ints = all(isinstance(v, list) and all(type(x) is int for x in v) for v in (steps, units))
        if not isinstance(layer, str) or not ints:
            raise ResultError(f"{path}: metadata: expected a layer and lists of steps and units, got {meta!r}")
        samples = need_tensor(t, path, "samples", torch.long, 3)
        images, maps = need_tensor(t, path, "images", torch.uint8, 6), need_tensor(t, path, "maps", torch.float32, 5)
        thresholds = need_tensor(t, path, "thresholds", torch.float32, 2)
        shape = (len(steps), len(units))
        if (
            tuple(samples.shape[:2]) != shape
            or images.shape[:3] != samples.shape
            or maps.shape[:3] != samples.shape
            or tuple(thresholds.shape) != shape
        ):
            raise ResultError(
                f"{path}: expected samples, images and maps of {len(steps)} steps × {len(units)} units × k images "
                f"and thresholds of {shape}, got {tuple(samples.shape)}, {tuple(images.shape)}, "
                f"{tuple(maps.shape)}, {tuple(thresholds.shape)}"
            )
        return cls(layer, steps, units, samples, images, maps, thresholds)


def _dense(shown: UnitImages, layer: str) -> tuple[torch.Tensor, ...]:
    """(samples (R, k), images (R, k, 3, H, W), maps (R, k, h, w), thresholds (R,)) of one layer's rows."""
    slots = shown.slots[layer]  # (R, k), -1 = none
    valid = slots >= 0
    # an empty slot points at one black image of sample -1 appended after the stored ones
    images = torch.cat([shown.images, torch.zeros(1, *shown.images.shape[1:], dtype=torch.uint8)])
    samples = torch.cat([shown.samples.long(), torch.tensor([-1])])
    picked = torch.where(valid, slots, len(shown.images))  # (R, k)
    return samples[picked], images[picked], shown.maps[layer].float(), shown.thresholds[layer].float()

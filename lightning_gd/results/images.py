"""The pictures a results page draws, stored by the analysis beside its JSON so that a page is rebuilt without a
network: a dissection's top images (`unit_images.safetensors`: each shown sample once, each unit's featuremap on
its images, the images' segmentations), a causal test's image grids (`ace_images.safetensors`: originals,
ablated and inserted images, their labels, the insertion window), a context run's responsive locations
(`context_images.safetensors`) and an artifact run's image rows (`artifact_images.safetensors`: the worst units'
top images, samples before and after ablation). Loaded only through `load`, which checks every tensor's shape and
type and names the file and the tensor that is wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from lightning_gd.cache import save_atomic
from lightning_gd.errors import InvalidValue
from lightning_gd.models.segmenters import checked_colours
from lightning_gd.results.schema import ResultError


def dim_outside(images: torch.Tensor, masks: torch.Tensor, keep: float = 0.3) -> torch.Tensor:
    """uint8 `images` (B, 3, H, W) darkened to `keep` of their brightness outside `masks` (B, H, W) bool: a unit's
    region stands out on any background (a thin outline vanished on clouds and the sun)."""
    dark = (images.float() * keep).round().to(torch.uint8)
    return torch.where(masks[:, None].to(images.device), images, dark)


def read_stored(cls, path: str | Path) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """The file of an images class (`cls.FILE` inside a folder, or the file named), its tensors and its JSON
    metadata, as `save_atomic` wrote them."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    path = path / cls.FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} at {path} (`{cls.WRITTEN_BY}` writes it)")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    except (SafetensorError, ValueError, OSError) as err:
        raise ResultError(f"{path} is not a readable {path.name}: {err}") from None
    return path, tensors, meta


def need_tensor(tensors: dict, path: Path, name: str, dtype: torch.dtype, dims: int) -> torch.Tensor:
    t = tensors.get(name)
    if t is None or t.dtype != dtype or t.dim() != dims:
        got = "missing" if t is None else f"{t.dtype} of {t.dim()} dimensions"
        raise ResultError(f"{path}: {name}: expected {dtype} of {dims} dimensions, got {got}")
    return t


@dataclass
class UnitImages:
    """Top images of many units, each distinct sample stored once: `images` (M, 3, H, W) uint8 of `samples` (M,),
    and per layer `slots` (U, k) rows of `images` (-1 = none), `maps` (U, k, h, w) each unit's own featuremap on
    each of its images, and the units' `thresholds` (U,). `segmentations` (M, G, H', W'): each image's label
    groups as vocabulary indices (-1 = none), the evidence a unit's label is checked against; None when the
    images were made without the segmenter. `pools` (U, C) per layer: each unit's own top samples, best first
    (-1 = none), from which the page tells a unit's #1 from the #12 it shows because another unit shows its #1."""

    FILE: ClassVar[str] = "unit_images.safetensors"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd dissect"

    samples: torch.Tensor
    images: torch.Tensor
    slots: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    thresholds: dict[str, torch.Tensor]
    segmentations: torch.Tensor | None = None
    pools: dict[str, torch.Tensor] | None = None

    def count(self, layer: str, row: int) -> int:
        return int((self.slots[layer][row] >= 0).sum())

    def strip(self, layer: str, row: int) -> torch.Tensor:
        """(k', 3, H, W) uint8: row `row`'s images, dimmed outside the region above its unit's threshold."""
        n = self.count(layer, row)
        images = self.images[self.slots[layer][row, :n]]
        maps = self.maps[layer][row, :n][:, None]
        act = F.interpolate(maps, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        return dim_outside(images, act > self.thresholds[layer][row])

    def save(self, folder: str | Path) -> Path:
        tensors = {"samples": self.samples.long(), "images": self.images}
        if self.segmentations is not None:
            tensors["segmentations"] = self.segmentations.to(torch.int16)
        layers = list(self.slots)
        for i, layer in enumerate(layers):  # layer names may hold any character: tensors are named by position
            tensors[f"slots.{i}"] = self.slots[layer].long()
            tensors[f"maps.{i}"] = self.maps[layer].float()
            tensors[f"thresholds.{i}"] = self.thresholds[layer].float()
            if self.pools is not None and layer in self.pools:
                tensors[f"pools.{i}"] = self.pools[layer].long()
        return save_atomic(tensors, Path(folder) / self.FILE, {"meta": json.dumps({"layers": layers})})

    @classmethod
    def load(cls, path: str | Path) -> UnitImages:
        path, t, meta = read_stored(cls, path)
        layers = meta.get("layers")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ResultError(f"{path}: metadata layers: expected a list of layer names, got {layers!r}")
        samples, images = need_tensor(t, path, "samples", torch.long, 1), need_tensor(t, path, "images", torch.uint8, 4)
        if len(samples) != len(images):
            raise ResultError(f"{path}: images: expected one per sample ({len(samples)}), got {len(images)}")
        seg = need_tensor(t, path, "segmentations", torch.int16, 4) if "segmentations" in t else None
        slots, maps, thresholds, pools = {}, {}, {}, {}
        for i, layer in enumerate(layers):
            slots[layer] = need_tensor(t, path, f"slots.{i}", torch.long, 2)
            maps[layer] = need_tensor(t, path, f"maps.{i}", torch.float32, 4)
            thresholds[layer] = need_tensor(t, path, f"thresholds.{i}", torch.float32, 1)
            if slots[layer].numel() and int(slots[layer].max()) >= len(samples):
                raise ResultError(f"{path}: slots.{i}: points past the {len(samples)} stored images")
            if f"pools.{i}" in t:
                pools[layer] = need_tensor(t, path, f"pools.{i}", torch.long, 2)
        return cls(samples, images, slots, maps, thresholds, seg, pools or None)


def iou_table(folder: str | Path, layer: str, shape: tuple[int, int]) -> torch.Tensor:
    """The unit×concept IoU table `iou-<layer>.npy` beside a `dissect.json`, (units, concepts) as `shape` says."""
    path = Path(folder) / f"iou-{layer}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} at {path} (`python -m lightning_gd dissect` writes it)")
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ResultError(f"{path} is not a readable IoU table: {err}") from None
    if table.shape != tuple(shape) or not np.issubdtype(table.dtype, np.floating):
        raise ResultError(f"{path}: expected floats of shape {tuple(shape)}, got {table.dtype} {table.shape}")
    return torch.from_numpy(np.ascontiguousarray(table))


@dataclass
class AceImages:
    """What a causal test's image grids show, on the same few held-out samples: `original`, `ablated_alpha` and
    `ablated_iou` (the top-n units of each ranking ablated everywhere), `inserted` (the α top-n inserted in
    `window`) as uint8 (B, 3, H, W); `labels` of each (B, H, W) int64; the segmenter's `concepts` (the legend) and
    the `colours` it declares for them (None in a file written before segmenters declared colours: the default)."""

    FILE: ClassVar[str] = "ace_images.safetensors"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd test"
    IMAGES: ClassVar[tuple[str, ...]] = ("original", "ablated_alpha", "ablated_iou", "inserted")

    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    window: torch.Tensor  # (B, H, W) bool
    concepts: list[str]
    concept: str
    top_n: int
    colours: list[tuple[int, int, int]] | None = None

    def save(self, folder: str | Path) -> Path:
        tensors = {f"images.{k}": v for k, v in self.images.items()}
        tensors |= {f"labels.{k}": v.long() for k, v in self.labels.items()}
        tensors["window"] = self.window.to(torch.uint8)
        meta = {"concepts": list(self.concepts), "concept": self.concept, "top_n": self.top_n}
        if self.colours is not None:
            meta["colours"] = [list(c) for c in self.colours]
        return save_atomic(tensors, Path(folder) / self.FILE, {"meta": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> AceImages:
        path, t, meta = read_stored(cls, path)
        concepts, concept, top_n = meta.get("concepts"), meta.get("concept"), meta.get("top_n")
        if not isinstance(concepts, list) or not isinstance(concept, str) or not isinstance(top_n, int):
            raise ResultError(f"{path}: metadata: expected concepts, concept and top_n, got {sorted(meta)}")
        images = {k: need_tensor(t, path, f"images.{k}", torch.uint8, 4) for k in cls.IMAGES}
        labels = {k: need_tensor(t, path, f"labels.{k}", torch.long, 3) for k in cls.IMAGES}
        window = need_tensor(t, path, "window", torch.uint8, 3).bool()
        sizes = {tuple(v.shape[-2:]) for v in labels.values()} | {tuple(window.shape[-2:])}
        if len(sizes) != 1 or {len(v) for v in [*images.values(), *labels.values(), window]} != {len(window)}:
            raise ResultError(f"{path}: images, labels and window disagree in number or size")
        return cls(images, labels, window, concepts, concept, top_n, _colours(meta.get("colours"), concepts, path))


def _colours(raw, concepts: list[str], path: Path) -> list[tuple[int, int, int]] | None:
    """The stored colour per concept, checked as a segmenter's are (absent: None, the default palette)."""
    if raw is None:
        return None
    try:
        if not isinstance(raw, list):
            raise InvalidValue(f"got {type(raw).__name__}")
        return checked_colours(raw, tuple(concepts))
    except (InvalidValue, TypeError) as err:
        raise ResultError(
            f"{path}: metadata: colours must be one [r, g, b] of integers 0–255 per concept ({err})"
        ) from None


@dataclass
class ContextImages:
    """What a context page's `where.png` shows: the generated `images` (M, 3, H, W) uint8 of the samples that
    `context.json` lists in `where_images` (most responsive first), and `regions` (M, H, W) bool: the pixels of
    each image's responsive insertion locations, outlined on the page."""

    FILE: ClassVar[str] = "context_images.safetensors"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd context"

    images: torch.Tensor
    regions: torch.Tensor

    def save(self, folder: str | Path) -> Path:
        tensors = {"images": self.images, "regions": self.regions.to(torch.uint8)}
        return save_atomic(tensors, Path(folder) / self.FILE)

    @classmethod
    def load(cls, path: str | Path) -> ContextImages:
        path, t, _ = read_stored(cls, path)
        images, regions = (
            need_tensor(t, path, "images", torch.uint8, 4),
            need_tensor(t, path, "regions", torch.uint8, 3),
        )
        if regions.shape != images.shape[:1] + images.shape[2:]:
            raise ResultError(
                f"{path}: regions: expected one mask per image {tuple(images.shape)}, got {regions.shape}"
            )
        return cls(images, regions.bool())


@dataclass
class ArtifactImages:
    """What an artifact page's image rows show: `units` (R,) the highest-FID units, with `top` (R, k, 3, H, W) their
    top-activating images of the per-unit FID sample (`top_units.png`); and `rows` of the first evaluation samples
    (`before_after.png`): as generated (`original`), with the top-n FID units ablated (`ablated_top`) and with the
    first random draw of as many units ablated (`ablated_random`, absent when the table drew none), each
    (B, 3, H, W). Every image uint8."""

    FILE: ClassVar[str] = "artifact_images.safetensors"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd artifacts"
    ROWS: ClassVar[tuple[str, ...]] = ("original", "ablated_top", "ablated_random")

    units: torch.Tensor
    top: torch.Tensor
    rows: dict[str, torch.Tensor]

    def save(self, folder: str | Path) -> Path:
        tensors = {"units": self.units.long(), "top": self.top} | {f"rows.{k}": v for k, v in self.rows.items()}
        return save_atomic(tensors, Path(folder) / self.FILE)

    @classmethod
    def load(cls, path: str | Path) -> ArtifactImages:
        path, t, _ = read_stored(cls, path)
        units, top = need_tensor(t, path, "units", torch.long, 1), need_tensor(t, path, "top", torch.uint8, 5)
        if len(units) != len(top):
            raise ResultError(f"{path}: top: expected one row of images per unit ({len(units)}), got {len(top)}")
        rows = {k: need_tensor(t, path, f"rows.{k}", torch.uint8, 4) for k in cls.ROWS[:2]}
        if f"rows.{cls.ROWS[2]}" in t:
            rows[cls.ROWS[2]] = need_tensor(t, path, f"rows.{cls.ROWS[2]}", torch.uint8, 4)
        if len({tuple(v.shape) for v in rows.values()}) != 1:
            raise ResultError(
                f"{path}: rows: expected images of one shape, got {[tuple(v.shape) for v in rows.values()]}"
            )
        return cls(units, top, rows)

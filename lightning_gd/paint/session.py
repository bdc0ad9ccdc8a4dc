"""The state behind the painting page: a palette of concepts with their unit rankings and k_c, and images being
edited, each with its cached featuremap `h(z)` and its list of strokes.

A stroke is the paper's GANPaint edit: `draw` inserts the concept's top-n units at k_c under the brush
(`interventions.insert`), `remove` ablates them there (`interventions.ablate`), the brush being a 0/1 mask at the
layer's featuremap resolution. Strokes compose in order on the cached featuremap; only `f` and the segmenter run
per stroke.
"""

from __future__ import annotations

import base64
import io
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightning_gd.causal.interventions import ablate, concept_means, coverage, insert, insertion_values, parse_insertion
from lightning_gd.dissection.results import concept_ranking
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import latent_batches, latents
from lightning_gd.models.generators import device_of
from lightning_gd.models.images import to_uint8
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit
from lightning_gd.reports.grids import colorize
from lightning_gd.results import CausalSearchResult, DissectionResult

ACTIONS = ("draw", "remove")
MAX_IMAGES = 64  # images kept per server (least recently used dropped)
MAX_SEED = 2**31 - 1
BRUSH_IOU = 0.05  # the page calls an IoU brush a weak match when no unit's IoU exceeds this (the usual cut)


@dataclass
class Brush:
    """One palette entry: a concept, its units ranked best first, and k_c (U,)."""

    name: str
    concept: str
    ranking: str  # "alpha" or "iou"
    units: list[int]
    k_c: torch.Tensor | None = None
    source: str = ""
    match: float | None = None  # an IoU brush: the best IoU of any unit with the concept (how well units match it)


@dataclass
class Canvas:
    seed: int
    z: torch.Tensor
    r: torch.Tensor  # h(z), (1, U, h, w)
    strokes: list[tuple[str, str, torch.Tensor, int]] = field(default_factory=list)


class PaintError(ValueError):
    """A request that cannot be carried out; its message is shown to the user. `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def find_results(folder: Path | None, layer: str) -> list[Brush]:
    """Brushes from the finished causal searches (`causal.json` + `alpha.safetensors`, α ranking) and
    dissections (`dissect.json` + `iou-<layer>.npy`, IoU ranking of each interpretable label) under `folder`."""
    from safetensors.torch import load_file

    brushes: dict[str, Brush] = {}
    if folder is None or not Path(folder).is_dir():
        return []
    for path in sorted(Path(folder).rglob("causal.json")):  # a malformed file stops start-up, named
        search = CausalSearchResult.load(path)
        tensors = path.parent / "alpha.safetensors"
        if search.layer != layer or not tensors.is_file():
            continue
        k_c = load_file(str(tensors))["k_c"]
        name = f"{search.concept} (α)"
        brushes.setdefault(name, Brush(name, search.concept, "alpha", search.ranking, k_c, str(path.parent)))
    for path in sorted(Path(folder).rglob("dissect.json")):
        doc = DissectionResult.load(path)
        table = path.parent / f"iou-{layer}.npy"
        if layer not in doc.layers or not table.is_file():
            continue
        iou, names = torch.from_numpy(np.load(table)), doc.vocabulary["names"]
        labels = {u["label"] for u in doc.interpretable(layer)}
        matches = brush_concepts(iou, names)
        for concept in sorted(labels | set(matches)):
            ranking = concept_ranking(iou, names.index(concept))
            brush = Brush(f"{concept} (IoU)", concept, "iou", ranking, None, str(path.parent), matches.get(concept))
            brushes.setdefault(brush.name, brush)
    return list(brushes.values())


def brush_problem(brush: Brush, units: int) -> str | None:
    """What makes `brush` unusable on a layer of `units` units (a ranking of another layer, a k_c that is not
    (units,) or not finite, as a hand-edited causal.json can hold), or None."""
    bad = [u for u in brush.units if not isinstance(u, int) or not 0 <= u < units]
    if bad or not brush.units:
        return f"its units {bad[:5] or '[]'} are not in 0 … {units - 1}"
    if brush.k_c is not None and (tuple(brush.k_c.shape) != (units,) or not torch.isfinite(brush.k_c).all()):
        return f"its k_c (shape {tuple(brush.k_c.shape)}) is not {units} finite numbers"
    return None


def usable_brushes(brushes: dict[str, Brush], units: int) -> dict[str, Brush]:
    """The brushes a stroke can use; each other one is left out of the palette with a warning naming its source."""
    import warnings

    kept = {}
    for name, brush in brushes.items():
        problem = brush_problem(brush, units)
        if problem is None:
            kept[name] = brush
        else:
            warnings.warn(f"palette: {name} from {brush.source or 'the palette'} left out: {problem}", stacklevel=3)
    if not kept:
        raise InvalidValue("the palette is empty: every brush found was left out (see the warnings above)")
    return kept


def brush_concepts(iou: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Every concept some unit overlaps (`iou` (U, C)), with the best IoU of any unit with it: a brush needs a
    ranking, not a label, so a concept that is never a unit's best match (the world's tree in layer4) still gets
    one, and the page says how well its units match it."""
    best = iou.max(0).values
    return {names[c]: float(best[c]) for c in torch.nonzero(best > 0).flatten().tolist()}


@torch.no_grad()
def palette_means(
    split: LayerSplit,
    segmenter: Segmenter,
    concepts: list[str],
    n: int,
    seed: int = 0,
    batch_size: int = 50,
    progress: bool = True,
) -> dict[str, torch.Tensor | None]:
    """k_c (§S-6.4) of several concepts from one pass over n samples: per concept the numbers `concept_means`
    gives (same seed, samples and weights), for the cost of one. None for a concept that never occurs."""
    index = torch.tensor([segmenter.concept_index(c) for c in concepts])
    weighted, total = 0.0, torch.zeros(len(concepts), dtype=torch.float64)
    dev = device_of(split.generator)
    for _, z in latent_batches(n, split.z_dim, seed, batch_size, dev, "palette k_c", progress, sharded=False):
        r = split.h(z).float()  # (B, U, h, w)
        labels = segmenter.labels(split.f(r, z))  # (B, H, W)
        masks = labels[:, None] == index.to(labels.device)[None, :, None, None]  # (B, C, H, W)
        w = coverage(masks.flatten(0, 1), tuple(r.shape[-2:])).view(*masks.shape[:2], *r.shape[-2:])  # (B, C, h, w)
        weighted = weighted + torch.einsum("buhw,bchw->cu", r.double(), w.double()).cpu()
        total += w.double().sum((0, 2, 3)).cpu()
    return {c: (weighted[i] / total[i]).float() if total[i] > 0 else None for i, c in enumerate(concepts)}


class PaintSession:
    """Images being edited with the brushes of a palette, for one generator layer and segmenter."""

    def __init__(
        self,
        generator,
        segmenter: Segmenter,
        layer: str,
        brushes: list[Brush],
        z_dim: int | None = None,
        kc_samples: int = 200,
        strengths: tuple[int, ...] = (5, 10, 20, 40, 80),
        insertion: str = "k_c",
    ) -> None:
        parse_insertion(insertion)
        if not brushes:
            raise InvalidValue("the palette is empty: no causal search or dissection of this layer was found")
        self.split = LayerSplit(generator, layer, z_dim)
        self.segmenter, self.layer, self.kc_samples, self.insertion = segmenter, layer, kc_samples, insertion
        self.colours = segmenter.colours  # checked once here, not at every stroke (the segmenter is frozen)
        self._quantiles: torch.Tensor | None = None
        self.brushes = {b.name: b for b in brushes}
        self.images: OrderedDict[str, Canvas] = OrderedDict()
        with torch.no_grad():
            r = self.split.h(latents([0], self.split.z_dim, 0).to(device_of(generator)))
        self.units, self.size = r.shape[1], tuple(r.shape[-2:])
        self.brushes = usable_brushes(self.brushes, self.units)
        self.strengths = tuple(n for n in strengths if n <= self.units) or (self.units,)
        self._counter = 0

    def prepare(self, progress: bool = True) -> list[str]:
        """k_c of every brush that has none (the IoU-ranked ones), in one pass before the first stroke, so no
        stroke waits for it. Brushes whose concept never occurs in the samples are left out; returns their names."""
        if parse_insertion(self.insertion)[0] == "quantile":  # the units' own quantiles, one pass, at start-up
            zeros = torch.zeros(self.units)
            self._quantiles = insertion_values(self.insertion, zeros, self.split, self.kc_samples, progress)
        todo = [b for b in self.brushes.values() if b.k_c is None]
        if not todo:
            return []
        known = set(self.segmenter.concepts)  # a part concept (building-t) has no mask of its own to take k_c on
        concepts = sorted({b.concept for b in todo if b.concept in known})
        t0 = time.perf_counter()
        if progress:
            print(
                f"palette: k_c of {len(concepts)} concepts ({', '.join(concepts)}) from {self.kc_samples} samples, "
                "once, so that no stroke waits for it",
                flush=True,
            )
        means = palette_means(self.split, self.segmenter, concepts, self.kc_samples, progress=progress)
        missing = [b.name for b in todo if means.get(b.concept) is None]
        for b in todo:
            b.k_c = means.get(b.concept)
        for name in missing:
            del self.brushes[name]
        if progress:
            left = f"; left out (not a segmenter class, or never seen): {', '.join(missing)}" if missing else ""
            print(f"palette ready in {time.perf_counter() - t0:.1f} s{left}", flush=True)
        if not self.brushes:
            raise InvalidValue(f"no concept of the palette occurs in {self.kc_samples} samples: raise kc_samples")
        return missing

    def palette(self) -> dict:
        return {
            "layer": self.layer,
            "featuremap": list(self.size),
            "units": self.units,
            "strengths": list(self.strengths),
            "concepts": [
                {"name": b.name, "concept": b.concept, "ranking": b.ranking, "source": b.source}
                for b in self.brushes.values()
            ],
            "matches": {b.name: b.match for b in self.brushes.values() if b.match is not None},
            "iou_cut": BRUSH_IOU,
            "legend": [  # the segmentation overlay's colours, one per segmenter class
                {"name": name, "colour": "#" + "".join(f"{v:02x}" for v in colour)}
                for name, colour in zip(self.segmenter.concepts, self.colours)
            ],
        }

    def sample(self, seed: int | None = None) -> dict:
        if seed is None:
            seed = int(torch.randint(MAX_SEED, (1,)))
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise PaintError(f"seed must be an integer in [0, {MAX_SEED}]")
        z = latents([seed], self.split.z_dim, 0).to(device_of(self.split.generator))
        with torch.no_grad():
            r = self.split.h(z)
        self._counter += 1
        key = f"img{self._counter}"
        self.images[key] = Canvas(seed, z, r)
        while len(self.images) > MAX_IMAGES:
            self.images.popitem(last=False)
        return {"id": key, "seed": seed, **self.render(key)}

    def canvas(self, key: str) -> Canvas:
        if not isinstance(key, str) or key not in self.images:
            raise PaintError("unknown image id (it may have been dropped: ask for a new sample)", 404)
        self.images.move_to_end(key)
        return self.images[key]

    def edit(self, key: str, action: str, concept: str, mask, n: int) -> dict:
        canvas = self.canvas(key)
        if action not in ACTIONS:
            raise PaintError(f"action must be one of {', '.join(ACTIONS)}")
        if not isinstance(concept, str) or concept not in self.brushes:
            shown = repr(concept) if isinstance(concept, str) else f"of type {type(concept).__name__}"
            raise PaintError(f"unknown concept {shown[:80]}; the palette has: {', '.join(self.brushes)}")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.units:
            raise PaintError(f"n (the number of units) must be an integer in [1, {self.units}]")
        mask = self.check_mask(mask)
        t0 = time.perf_counter()
        if action == "draw":
            self.k_c(self.brushes[concept])  # computed on an IoU brush's first use, timed apart from the render
        prepared = round(1000 * (time.perf_counter() - t0), 1)
        canvas.strokes.append((action, concept, mask, n))
        try:
            rendered = self.render(key)
        except BaseException:  # a stroke that cannot be drawn leaves the image as it was
            canvas.strokes.pop()
            raise
        return {**rendered, **({"prepare_ms": prepared} if prepared >= 50 else {})}

    def check_mask(self, mask) -> torch.Tensor:
        """A (h, w) list of 0/1 rows → a (1, 1, h, w) float mask; anything else is a PaintError."""
        h, w = self.size
        ok = isinstance(mask, list) and len(mask) == h and all(isinstance(row, list) and len(row) == w for row in mask)
        if not ok or not all(v in (0, 1) and not isinstance(v, float) for row in mask for v in row):
            raise PaintError(f"mask must be {h} rows of {w} values 0 or 1 (the {self.layer} featuremap's cells)")
        m = torch.tensor(mask, dtype=torch.float32)
        if m.sum() == 0:
            raise PaintError("the mask is empty: paint some cells first")
        return m[None, None]

    def undo(self, key: str) -> dict:
        canvas = self.canvas(key)
        if canvas.strokes:
            canvas.strokes.pop()
        return self.render(key)

    def reset(self, key: str) -> dict:
        self.canvas(key).strokes.clear()
        return self.render(key)

    def k_c(self, brush: Brush) -> torch.Tensor:
        if brush.k_c is None:  # an IoU ranking: k_c from the concept's mean activations (§S-6.4), once
            brush.k_c = concept_means(self.split, self.segmenter, brush.concept, self.kc_samples, progress=False)["k_c"]
        if not torch.isfinite(brush.k_c).all():
            raise PaintError(f"{brush.name} has no usable k_c (not finite): draw with another brush", 409)
        return brush.k_c

    def inserted(self, brush: Brush) -> torch.Tensor:
        """The values a `draw` sets the brush's units to: k_c, or the session's other insertion constant."""
        if self._quantiles is not None:
            return self._quantiles
        if parse_insertion(self.insertion)[0] == "quantile":  # a session used without prepare()
            self._quantiles = insertion_values(self.insertion, self.k_c(brush), self.split, self.kc_samples, False)
            return self._quantiles
        return insertion_values(self.insertion, self.k_c(brush))

    @torch.no_grad()
    def featuremap(self, key: str) -> torch.Tensor:
        """The cached h(z) with every stroke applied in order."""
        canvas = self.canvas(key)
        r = canvas.r
        for action, concept, mask, n in canvas.strokes:
            brush = self.brushes[concept]
            units = brush.units[:n]
            m = mask.to(r.device)
            r = insert(r, units, self.inserted(brush).to(r.device), m) if action == "draw" else ablate(r, units, m)
        return r

    @torch.no_grad()
    def render(self, key: str) -> dict:
        t0 = time.perf_counter()
        canvas = self.canvas(key)
        x = self.split.f(self.featuremap(key), canvas.z)
        labels = self.segmenter.labels(x)
        return {
            "image": _png(to_uint8(x)[0]),
            "segmentation": _png(colorize(labels, self.colours)[0]),
            "present": torch.unique(labels).tolist(),  # the classes the overlay shows, for its legend
            "edits": len(canvas.strokes),
            "ms": round(1000 * (time.perf_counter() - t0), 1),
        }


def _png(image: torch.Tensor) -> str:
    """uint8 (3, H, W) → a data: URL of its PNG."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

"""What a dissection is: its settings, and per layer the thresholds, the unit×concept IoU and the top images, with
each unit's label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.errors import InvalidValue, UnknownName

ThresholdMode = Literal["quantile", "iqr"]
THRESHOLD_MODES: tuple[str, ...] = ThresholdMode.__args__


@dataclass(frozen=True)
class DissectSettings:
    """Everything a dissection result depends on (besides the two networks)."""

    layers: tuple[str, ...]
    n: int = 1000
    seed: int = 0
    batch_size: int = 50
    threshold: ThresholdMode = "quantile"
    q: float = 0.99
    iqr_n: int = 500
    iqr_seed: int = 1
    stride: int = 4
    warmup: int = 100
    bins: int = 128
    parts: bool | tuple[str, ...] = False
    iou_threshold: float = 0.05
    top_k: int = 10
    candidates: int = 50  # top-image candidates kept per unit, from which the browser shows top_k that differ

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_MODES:
            raise InvalidValue(f"unknown threshold mode '{self.threshold}'; choose one of {', '.join(THRESHOLD_MODES)}")
        if not 0.0 < self.q < 1.0:
            raise InvalidValue(f"q must be in (0, 1), got {self.q}")
        if self.top_k > self.n:  # no more top images than samples (empty slots would hold -inf and index -1)
            object.__setattr__(self, "top_k", self.n)
        object.__setattr__(self, "candidates", min(self.n, max(self.candidates, self.top_k)))
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise InvalidValue(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.n < 1 or self.batch_size < 1 or self.stride < 1 or self.top_k < 1:
            raise InvalidValue("n, batch_size, stride and top_k must be positive")
        if self.warmup < 1 or self.bins < 1:
            raise InvalidValue(f"warmup and bins must be positive, got warmup={self.warmup}, bins={self.bins}")
        if self.threshold == "iqr" and self.iqr_seed == self.seed:
            raise InvalidValue("the IQR threshold must be chosen on a separate sample: iqr_seed must differ from seed")


def concept_ranking(iou: torch.Tensor, concept_index: int) -> list[int]:
    """The units ranked by their IoU with one concept, best first (ties: the lower unit); iou is (U, C)."""
    return torch.sort(iou[:, concept_index], descending=True, stable=True).indices.tolist()


def distinct_top_images(candidates: torch.Tensor, k: int, order: list[int] | None = None) -> torch.Tensor:
    """(U, k) sample indices to show as each unit's top images, chosen from its ranked `candidates` (U, P)
    (-1 = none) so that units show different images where they can.

    Round j gives every unit, in `order` (default: unit index), its best candidate that no unit shows yet; units
    left short after k rounds (their candidates all shown elsewhere) are filled with their best remaining
    candidates, repeats allowed; each row is then ordered as the unit ranks it. Earlier units in `order` thus keep
    their truest images."""
    U, P = candidates.shape
    order = list(range(U)) if order is None else order
    ranked = [[i for i in row if i >= 0] for row in candidates.tolist()]
    chosen: list[list[int]] = [[] for _ in range(U)]
    used: set[int] = set()
    nxt = [0] * U  # per unit, the first candidate not yet looked at in the distinct rounds
    for _ in range(k):
        for u in order:
            row = ranked[u]
            while nxt[u] < len(row) and row[nxt[u]] in used:
                nxt[u] += 1
            if nxt[u] < len(row):
                chosen[u].append(row[nxt[u]])
                used.add(row[nxt[u]])
                nxt[u] += 1
    for u in order:
        mine = set(chosen[u])
        chosen[u] += [i for i in ranked[u] if i not in mine][: k - len(chosen[u])]
        chosen[u].sort(key=ranked[u].index)  # shown best first, as the unit ranks them
    out = torch.full((U, k), -1, dtype=torch.long)
    for u, row in enumerate(chosen):
        out[u, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@dataclass
class LayerDissection:
    layer: str
    thresholds: torch.Tensor  # (U,) one threshold per unit
    iou: torch.Tensor  # (U, C) pooled IoU
    top_indices: torch.Tensor  # (U, k) sample indices of each unit's top images (stats.relative_peaks), best first
    top_scores: torch.Tensor  # (U, k) their scores
    featuremap_size: tuple[int, int] = (0, 0)
    candidates: torch.Tensor | None = None  # (U, P ≥ k) more top images, best first (for distinct_top_images)

    @classmethod
    def with_candidates(cls, layer, thresholds, iou, top_indices, top_scores, featuremap_size, k: int):
        """From the top-P lists (U, P) of a pass: the first k become `top_indices`, all P the `candidates`."""
        return cls(layer, thresholds, iou, top_indices[:, :k], top_scores[:, :k], featuremap_size, top_indices)

    @property
    def num_units(self) -> int:
        return self.iou.shape[0]

    def shown_images(self, k: int | None = None) -> torch.Tensor:
        """(U, k) the top images a unit browser shows: distinct between units where possible, the units with the
        highest best IoU choosing first."""
        k = k or self.top_indices.shape[1]
        pool = self.candidates if self.candidates is not None else self.top_indices
        order = torch.sort(self.iou.max(1).values, descending=True, stable=True).indices.tolist()
        return distinct_top_images(pool, k, order)

    def units(
        self, vocab: Vocabulary, iou_threshold: float = 0.05, unrealistic: frozenset[int] = frozenset()
    ) -> list[dict]:
        """Per unit: best concept (label), its category, IoU, threshold, and whether it is interpretable.

        Units in `unrealistic` (the realism filter, §S-6.3) keep their IoU but are never interpretable."""
        best_iou, best = self.iou.max(1)
        return [
            {
                "unit": u,
                "label": vocab.names[int(best[u])],
                "category": vocab.categories[int(best[u])],
                "iou": float(best_iou[u]),
                "threshold": float(self.thresholds[u]),
                "interpretable": bool(best_iou[u] > iou_threshold) and u not in unrealistic,
                "realistic": u not in unrealistic,
            }
            for u in range(self.num_units)
        ]


@dataclass
class Dissection:
    settings: DissectSettings
    vocabulary: Vocabulary
    layers: dict[str, LayerDissection] = field(default_factory=dict)
    unrealistic: dict[str, frozenset[int]] = field(default_factory=dict)  # per layer, left out of the labels

    def units(self, layer: str) -> list[dict]:
        return self.layers[layer].units(
            self.vocabulary, self.settings.iou_threshold, self.unrealistic.get(layer, frozenset())
        )

    def filter_unrealistic(self, layer: str, unit_fid: torch.Tensor | list[float], max_fid: float) -> list[int]:
        """The realism filter (§S-6.3): leave units whose per-unit FID exceeds `max_fid` out of the labels."""
        unit_fid = torch.as_tensor(unit_fid, dtype=torch.float64)
        if layer not in self.layers:
            raise UnknownName(f"no dissection of layer '{layer}'; dissected: {', '.join(self.layers)}")
        if unit_fid.numel() != self.layers[layer].num_units:
            raise InvalidValue(
                f"per-unit FID has {unit_fid.numel()} units but layer '{layer}' has {self.layers[layer].num_units}"
            )
        dropped = [u for u in range(unit_fid.numel()) if float(unit_fid[u]) > max_fid]
        self.unrealistic[layer] = frozenset(dropped)
        return dropped

    def summary(self, layer: str) -> dict:
        """Interpretable units, distinct concepts, mean IoU of interpretable units, counts per concept."""
        units = [u for u in self.units(layer) if u["interpretable"]]
        per_concept: dict[str, int] = {}
        for u in units:
            per_concept[u["label"]] = per_concept.get(u["label"], 0) + 1
        return {
            "layer": layer,
            "units": self.layers[layer].num_units,
            "interpretable": len(units),
            "distinct_concepts": len(per_concept),
            "mean_iou": sum(u["iou"] for u in units) / len(units) if units else 0.0,
            "per_concept": dict(sorted(per_concept.items(), key=lambda kv: -kv[1])),
            "unrealistic": sorted(self.unrealistic.get(layer, frozenset())),
        }

"""What a dissection is: its settings, and per layer the thresholds, the unit×concept IoU and the top images, with
each unit's label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from lightning_gd.dissection.concepts import Vocabulary

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

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_MODES:
            raise ValueError(f"unknown threshold mode '{self.threshold}'; choose one of {', '.join(THRESHOLD_MODES)}")
        if not 0.0 < self.q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {self.q}")
        if self.top_k > self.n:  # no more top images than samples (empty slots would hold -inf and index -1)
            object.__setattr__(self, "top_k", self.n)
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.n < 1 or self.batch_size < 1 or self.stride < 1 or self.top_k < 1:
            raise ValueError("n, batch_size, stride and top_k must be positive")
        if self.warmup < 1 or self.bins < 1:
            raise ValueError(f"warmup and bins must be positive, got warmup={self.warmup}, bins={self.bins}")
        if self.threshold == "iqr" and self.iqr_seed == self.seed:
            raise ValueError("the IQR threshold must be chosen on a separate sample: iqr_seed must differ from seed")


def concept_ranking(iou: torch.Tensor, concept_index: int) -> list[int]:
    """The units ranked by their IoU with one concept, best first (ties: the lower unit); iou is (U, C)."""
    return torch.sort(iou[:, concept_index], descending=True, stable=True).indices.tolist()


@dataclass
class LayerDissection:
    layer: str
    thresholds: torch.Tensor  # (U,) one threshold per unit
    iou: torch.Tensor  # (U, C) pooled IoU
    top_indices: torch.Tensor  # (U, k) sample indices of the images that activate each unit most
    top_scores: torch.Tensor  # (U, k) their max activation
    featuremap_size: tuple[int, int] = (0, 0)

    @property
    def num_units(self) -> int:
        return self.iou.shape[0]

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
            raise KeyError(f"no dissection of layer '{layer}'; dissected: {', '.join(self.layers)}")
        if unit_fid.numel() != self.layers[layer].num_units:
            raise ValueError(
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

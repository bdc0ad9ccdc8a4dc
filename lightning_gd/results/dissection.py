"""`dissect.json`: a dissection's settings, vocabulary and, per layer, each unit's label, IoU and threshold and
the layer's summary (the unit×concept IoU table itself is `iou-<layer>.npy` beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_gd.results.base import ResultFile
from lightning_gd.results.schema import BOOL, INT, NUMBER, STR, Fields, ListOf, MapOf, Maybe, key_path, require

UNIT = Fields(
    {"unit": INT, "label": STR, "category": STR, "iou": NUMBER, "threshold": NUMBER, "interpretable": BOOL},
    {"realistic": BOOL},
)
SUMMARY = Fields(
    {"units": INT, "interpretable": INT, "distinct_concepts": INT, "mean_iou": NUMBER, "per_concept": MapOf(INT)},
    {"layer": STR, "unrealistic": ListOf(INT)},
)
LAYER = Fields(
    {"units": ListOf(UNIT), "summary": SUMMARY},
    {"featuremap_size": ListOf(INT, length=2), "iou_table": STR},
)
SETTINGS = Fields(
    {"layers": ListOf(STR, min_len=1), "threshold": STR},
    {
        "n": INT,
        "seed": INT,
        "q": NUMBER,
        "iou_threshold": NUMBER,
        "iqr_n": INT,
        "iqr_seed": INT,
        "top_k": INT,
        "generator": Maybe(STR),
        "segmenter": Maybe(STR),
    },
)
VOCABULARY = Fields({"names": ListOf(STR), "categories": ListOf(STR)})


@dataclass
class DissectionResult(ResultFile):
    """A dissection as `dissect` writes it. `layers[name]` holds `units` (one entry per unit, in unit order:
    `unit`, `label`, `category`, `iou`, `threshold`, `interpretable`, `realistic`) and `summary`
    (`units`, `interpretable`, `distinct_concepts`, `mean_iou`, `per_concept`, `unrealistic`)."""

    FILE: ClassVar[str] = "dissect.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd dissect"
    SCHEMA: ClassVar[Fields] = Fields({"settings": SETTINGS, "vocabulary": VOCABULARY, "layers": MapOf(LAYER)})

    settings: dict
    vocabulary: dict
    layers: dict[str, dict]

    @classmethod
    def rules(cls, doc: dict) -> None:
        names = doc["vocabulary"]["names"]
        require(
            len(doc["vocabulary"]["categories"]) == len(names),
            "vocabulary.categories",
            f"expected one category per name ({len(names)}), got {len(doc['vocabulary']['categories'])}",
        )
        known = set(names)
        missing = [layer for layer in doc["settings"]["layers"] if layer not in doc["layers"]]
        require(not missing, "layers", f"settings.layers names {', '.join(missing)}, which layers does not hold")
        for layer, entry in doc["layers"].items():
            at = key_path("layers", layer)
            summary, count = entry["summary"], len(entry["units"])
            require(
                summary["units"] == count,
                f"{at}.summary.units",
                f"expected the number of entries in units ({count}), got {summary['units']}",
            )
            for key in ("interpretable", "distinct_concepts"):
                require(
                    0 <= summary[key] <= count,
                    f"{at}.summary.{key}",
                    f"expected a count in [0, {count}] (the layer's units), got {summary[key]}",
                )
            for concept, units in summary["per_concept"].items():
                require(
                    0 <= units <= count,
                    f"{at}.summary.per_concept.{concept}",
                    f"expected a count in [0, {count}] (the layer's units), got {units}",
                )
            size = entry.get("featuremap_size")
            require(size is None or min(size) >= 1, f"{at}.featuremap_size", f"expected two sizes ≥ 1, got {size}")
            for i, unit in enumerate(entry["units"]):
                require(
                    unit["unit"] == i,
                    f"{at}.units[{i}].unit",
                    f"expected unit {i} (units in order), got {unit['unit']}",
                )
                require(
                    unit["label"] in known,
                    f"{at}.units[{i}].label",
                    f"{unit['label']!r} is not in vocabulary.names",
                )

    @property
    def threshold(self) -> str:
        return self.settings["threshold"]

    def units(self, layer: str) -> list[dict]:
        return self.layers[layer]["units"]

    def summary(self, layer: str) -> dict:
        return self.layers[layer]["summary"]

    def interpretable(self, layer: str) -> list[dict]:
        return [u for u in self.units(layer) if u["interpretable"]]

    def concept_index(self, concept: str) -> int:
        return self.vocabulary["names"].index(concept)

"""`emergence.json`: one dissection measurement per training checkpoint, in step order (paper §S-6.6, Fig. 18).
Version 1 files written before the version field are a bare list of the measurements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_gd.results.base import ResultFile
from lightning_gd.results.schema import INT, NUMBER, STR, Fields, ListOf, MapOf, require

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
    },
)


@dataclass
class EmergenceResult(ResultFile):
    """`history`: per checkpoint, {step, checkpoint, layer, units, interpretable, distinct_concepts, mean_iou,
    per_concept, best_iou, best_concept, iou_threshold, seconds, fixed_units}."""

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

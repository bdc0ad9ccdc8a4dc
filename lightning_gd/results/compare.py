"""`compare.json`: dissections side by side (paper Fig. 7), one row each. Version 1 files written before the
version field are a bare list of the rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_gd.results.base import ResultFile
from lightning_gd.results.schema import INT, NUMBER, STR, Fields, ListOf, MapOf

ROW = Fields(
    {
        "name": STR,
        "layer": STR,
        "threshold": STR,
        "interpretable": INT,
        "object_units": INT,
        "distinct_concepts": INT,
        "mean_iou": NUMBER,
        "per_concept": MapOf(INT),
    }
)


@dataclass
class CompareResult(ResultFile):
    """`rows`: per dissection, {name, layer, threshold, interpretable, object_units, distinct_concepts, mean_iou,
    per_concept} of the compared layer."""

    FILE: ClassVar[str] = "compare.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd compare"
    SCHEMA: ClassVar[Fields] = Fields({"rows": ListOf(ROW, min_len=1)})
    LIST_FIELD: ClassVar[str] = "rows"

    rows: list[dict]

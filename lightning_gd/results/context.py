"""`context.json`: where a concept's causal units can insert it (paper §4.4), by the background at the location,
and, with `--trace true`, how the insertion travels through the later layers (§S-6.5). An undefined rate (no
concept-free window in a group) and an unsampled heatmap cell are null."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_gd.results.base import ResultFile
from lightning_gd.results.schema import INT, NUMBER, STR, Fields, ListOf, MapOf, Maybe, key_path, require

SETTINGS = Fields(
    {"concept": STR, "layer": STR, "n": INT, "seed": INT, "region": INT, "respond": NUMBER, "top_n": INT},
    {
        "locations": Maybe(INT),
        "generator": Maybe(STR),
        "bootstrap": INT,
        "seconds": NUMBER,
        "units_from": STR,
        "k_c_from": STR,
        "insertion": STR,
    },
)
BACKGROUND = Fields(
    {"effect": NUMBER, "ci": ListOf(NUMBER, length=2), "appear_rate": Maybe(NUMBER), "count": INT},
    {
        "respond_rate": NUMBER,
        "count_free": INT,
        "appear_rate_guarded": Maybe(NUMBER),
        "appear_by_row": ListOf(Maybe(NUMBER)),
    },
)
OVERALL = Fields(
    {"effect": NUMBER, "appear_rate": Maybe(NUMBER), "respond_rate": NUMBER, "count": INT},
    {"appear_rate_guarded": Maybe(NUMBER), "guard_confidence": Maybe(NUMBER)},
)
TRACE = Fields(
    {
        "layers": ListOf(STR),
        "visible": ListOf(Maybe(NUMBER)),
        "not_visible": ListOf(Maybe(NUMBER)),
        "heatmap": ListOf(ListOf(Maybe(NUMBER))),
        "visible_count": INT,
        "not_visible_count": INT,
    },
)


@dataclass
class ContextResult(ResultFile):
    """What `context` measured: `by_background` ({concept at the location: effect, its 95 % interval `ci`,
    `appear_rate`, `appear_rate_guarded` and that rate by the location's featuremap row `appear_by_row`,
    `respond_rate`, `count`, `count_free`}), `overall` (with the realism
    guard's `guard_confidence`), the inserted `units` and `k_c`, the values they were set to (the paper's k_c
    unless `settings.insertion` names another constant),
    the images of where.png (`where_images`), and `trace` when traced."""

    FILE: ClassVar[str] = "context.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd context"
    SCHEMA: ClassVar[Fields] = Fields(
        {
            "settings": SETTINGS,
            "units": ListOf(INT),
            "k_c": ListOf(NUMBER),
            "by_background": MapOf(BACKGROUND),
            "overall": OVERALL,
        },
        {"trace": TRACE, "where_images": ListOf(INT)},
    )

    settings: dict
    units: list[int]
    k_c: list[float]
    by_background: dict[str, dict]
    overall: dict
    trace: dict | None = None
    where_images: list[int] | None = None

    @classmethod
    def rules(cls, doc: dict) -> None:
        require(
            len(doc["k_c"]) == len(doc["units"]),
            "k_c",
            f"expected one value per inserted unit ({len(doc['units'])}), got {len(doc['k_c'])}",
        )
        require(len(doc["units"]) >= 1, "units", "expected at least one inserted unit, got none")
        for concept, entry in doc["by_background"].items():
            low, high = entry["ci"]
            require(low <= high, key_path("by_background", concept) + ".ci", f"expected [low, high], got {entry['ci']}")
        trace = doc.get("trace")
        if trace is not None:
            for key in ("visible", "not_visible"):
                require(
                    len(trace[key]) == len(trace["layers"]),
                    f"trace.{key}",
                    f"expected one value per traced layer ({len(trace['layers'])}), got {len(trace[key])}",
                )

    @property
    def concept(self) -> str:
        return self.settings["concept"]

    @property
    def layer(self) -> str:
        return self.settings["layer"]

"""`unit_fid.json`: per-unit FIDs of a layer (paper §4.2, §S-6.1), the units ranked by them, and FID before and
after ablating the worst (Tables 1–2). The realism filter (`dissect --realism`) reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_gd.results.base import ResultFile
from lightning_gd.results.schema import INT, NUMBER, STR, Either, Fields, ListOf, Maybe, require

ABLATION = Fields(
    {"ablation": STR, "units": Either(ListOf(INT), ListOf(ListOf(INT))), "fid": NUMBER},
    {
        "fid_std": NUMBER,
        "fid_draws": ListOf(NUMBER),
        "fid_focus": NUMBER,
        "fid_focus_std": NUMBER,
        "fid_focus_draws": ListOf(NUMBER),
    },
)


@dataclass
class UnitFidResult(ResultFile):
    """What `artifacts` measured: `unit_fid[u]` (the FID of unit u's top `top_k` of `n` images against the real
    images), `ranking` (units from the highest FID), `ablation` (rows of {ablation, units, fid, fid_std,
    fid_focus}: the original, the top FID units ablated, random units ablated), and where the numbers come from."""

    FILE: ClassVar[str] = "unit_fid.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd artifacts"
    SCHEMA: ClassVar[Fields] = Fields(
        {
            "layer": STR,
            "n": INT,
            "top_k": INT,
            "ranking": ListOf(INT),
            "unit_fid": ListOf(NUMBER, min_len=1),
            "ablation": ListOf(ABLATION),
        },
        {
            "score": STR,
            "generator": Maybe(STR),
            "generator_fingerprint": STR,
            "feature_extractor": STR,
            "real": STR,
            "real_n": INT,
            "n_eval": INT,
        },
    )

    layer: str
    n: int
    top_k: int
    ranking: list[int]
    unit_fid: list[float]
    ablation: list[dict]
    score: str | None = None
    generator: str | None = None
    generator_fingerprint: str | None = None
    feature_extractor: str | None = None
    real: str | None = None
    real_n: int | None = None
    n_eval: int | None = None

    @classmethod
    def rules(cls, doc: dict) -> None:
        units = len(doc["unit_fid"])
        for i, u in enumerate(doc["ranking"]):
            require(0 <= u < units, f"ranking[{i}]", f"unit {u} is out of range: unit_fid has units 0 … {units - 1}")
        require(
            sorted(doc["ranking"]) == list(range(units)),
            "ranking",
            f"expected every unit 0 … {units - 1} once (a ranking of unit_fid), got {len(doc['ranking'])} entries",
        )
        for i, row in enumerate(doc["ablation"]):
            flat = [v for item in row["units"] for v in (item if isinstance(item, list) else [item])]
            bad = [u for u in flat if not 0 <= u < units]
            require(
                not bad, f"ablation[{i}].units", f"units {bad} are out of range: the layer has units 0 … {units - 1}"
            )

"""The causal search's files: `causal.json` (what `fit` found: every unit's α and IoU ranked by α, the top-n,
the diagnosis of λ), `ace.json` (what `test` measured: ablation curves, the share removed by each ranking's
top-n, insertion effects) and `causal_summary.json` (`causal-summary`'s table of several tests).

A share that is undefined (the concept never occurs in the held-out sample, so nothing can be removed) is
stored as null, never NaN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_gd.results.base import ResultFile
from lightning_gd.results.schema import INT, NUMBER, STR, Fields, ListOf, MapOf, Maybe, finite_or_none, require

SHARE = Maybe(NUMBER)  # null: undefined (see the module's docstring)


@dataclass
class CausalSearchResult(ResultFile):
    """What `fit` found. `units`: every unit as {unit, alpha, iou}, ranked by α (ties by IoU); `top_units`: the
    first `top_n` of them; `diagnosis`: a sentence when λ rather than the effect shaped α (else None)."""

    FILE: ClassVar[str] = "causal.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd fit"
    SCHEMA: ClassVar[Fields] = Fields(
        {
            "concept": STR,
            "layer": STR,
            "settings": Fields({}, {"lam": NUMBER, "generator": Maybe(STR)}),
            "presence": NUMBER,
            "top_n": INT,
            "top_units": ListOf(INT),
            "units": ListOf(Fields({"unit": INT, "alpha": NUMBER, "iou": NUMBER}), min_len=1),
            "epochs": INT,
            "global_step": INT,
        },
        {"diagnosis": Maybe(STR)},
    )

    concept: str
    layer: str
    settings: dict
    presence: float
    top_n: int
    top_units: list[int]
    units: list[dict]
    epochs: int
    global_step: int
    diagnosis: str | None = None

    @classmethod
    def rules(cls, doc: dict) -> None:
        require(doc["top_n"] >= 1, "top_n", f"expected at least 1, got {doc['top_n']}")
        for key in ("concept", "layer"):
            require(doc[key] != "", key, "expected a name, got an empty string")
        require(
            doc["top_n"] <= len(doc["units"]),
            "top_n",
            f"expected at most the number of ranked units ({len(doc['units'])}), got {doc['top_n']}",
        )
        seen: set[int] = set()
        for i, entry in enumerate(doc["units"]):
            require(entry["unit"] >= 0, f"units[{i}].unit", f"expected a unit number ≥ 0, got {entry['unit']}")
            require(entry["unit"] not in seen, f"units[{i}].unit", f"unit {entry['unit']} is ranked twice")
            seen.add(entry["unit"])
        stray = [u for u in doc["top_units"] if u not in seen]
        require(not stray, "top_units", f"units {stray} are not among the ranked units")

    @property
    def ranking(self) -> list[int]:
        """The units by α, best first."""
        return [u["unit"] for u in self.units]

    @property
    def generator(self) -> str | None:
        return self.settings.get("generator")


ACE_SCHEMA = Fields(
    {
        "concept": STR,
        "layer": STR,
        "presence": NUMBER,
        "sizes": ListOf(INT),
        "top_n": INT,
        "ablation_removed": MapOf(ListOf(SHARE)),
        "removed_at_top_n": MapOf(SHARE),
        "insertion_at_top_n": MapOf(MapOf(SHARE)),
    },
    {
        "side_effects_at_top_n": MapOf(MapOf(SHARE)),
        "n_test": INT,
        "top_units": ListOf(INT),
        "generator": Maybe(STR),
    },
)


def ace_rules(doc: dict, at: str = "") -> None:
    """Rules between the fields of an `ace.json` document (`at`: its path in a larger document)."""
    for key in ("concept", "layer"):
        require(doc[key] != "", f"{at}{key}", "expected a name, got an empty string")
    for ranking, share in doc["removed_at_top_n"].items():
        require(
            share is None or share <= 1,
            f"{at}removed_at_top_n.{ranking}",
            f"expected a share of the concept's pixels (at most 1), got {share}",
        )
    for ranking, curve in doc["ablation_removed"].items():
        require(
            len(curve) == len(doc["sizes"]),
            f"{at}ablation_removed.{ranking}",
            f"expected one share per size in sizes ({len(doc['sizes'])}), got {len(curve)}",
        )
        bad = [v for v in curve if v is not None and v > 1]
        require(not bad, f"{at}ablation_removed.{ranking}", f"expected shares of at most 1, got {bad}")


@dataclass
class AceResult(ResultFile):
    """What `test` measured on held-out samples: `removed_at_top_n` ({ranking: share of the concept's pixels
    removed by ablating its top-n}; `random_mean` / `random_std` over random draws), `ablation_removed` (the
    curves over `sizes`), `insertion_at_top_n` ({ranking: {ace, appeared}}), `side_effects_at_top_n`."""

    FILE: ClassVar[str] = "ace.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd test"
    SCHEMA: ClassVar[Fields] = ACE_SCHEMA

    concept: str
    layer: str
    presence: float
    sizes: list[int]
    top_n: int
    ablation_removed: dict[str, list[float | None]]
    removed_at_top_n: dict[str, float | None]
    insertion_at_top_n: dict[str, dict[str, float | None]]
    side_effects_at_top_n: dict | None = None
    n_test: int | None = None
    top_units: list[int] | None = None
    generator: str | None = None

    @classmethod
    def rules(cls, doc: dict) -> None:
        ace_rules(doc)

    @classmethod
    def from_summary(cls, summary: dict) -> AceResult:
        """From `lightning_gd.causal.ace.summarize`'s dict (NaN shares become None)."""
        return cls.from_document(finite_or_none(summary), "the test's summary")


@dataclass
class CausalSummaryResult(ResultFile):
    """`causal-summary`'s runs: the `ace.json` document of each, in the order given."""

    FILE: ClassVar[str] = "causal_summary.json"
    WRITTEN_BY: ClassVar[str] = "python -m lightning_gd causal-summary"
    SCHEMA: ClassVar[Fields] = Fields({"runs": ListOf(ACE_SCHEMA, min_len=1)})
    LIST_FIELD: ClassVar[str] = "runs"

    runs: list[dict]

    @classmethod
    def rules(cls, doc: dict) -> None:
        for i, run in enumerate(doc["runs"]):
            ace_rules(run, f"runs[{i}].")

    @classmethod
    def of(cls, results: list[AceResult]) -> CausalSummaryResult:
        return cls([{k: v for k, v in r.document().items() if k != "version"} for r in results])

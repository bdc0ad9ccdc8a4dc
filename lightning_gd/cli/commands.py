"""The project's subcommands. Each is a library function — its signature is the command's config and its
docstring the `--help` — and a report that says what it found and where the results went."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_gd.jobs.artifacts import artifacts
from lightning_gd.jobs.causal import causal_summary
from lightning_gd.jobs.context import context
from lightning_gd.jobs.dissect import compare, dissect
from lightning_gd.jobs.emergence import dissect_checkpoints
from lightning_gd.jobs.paint import paint


@dataclass(frozen=True)
class Command:
    run: Callable[..., Any]  # a library function
    report: Callable[[Any, dict], None] | None = None  # (its result, its arguments) → printed lines

    def __call__(self, **options) -> Any:
        result = self.run(**options)
        if self.report is not None:
            self.report(result, options)
        return result


def _dissect(doc: dict, options: dict) -> None:
    for layer, entry in doc["layers"].items():
        summ = entry["summary"]
        top = ", ".join(f"{c} {k}" for c, k in list(summ["per_concept"].items())[:8])
        print(
            f"{layer}: {summ['interpretable']}/{summ['units']} interpretable units, "
            f"{summ['distinct_concepts']} concepts, mean IoU {summ['mean_iou']:.3f}  [{top}]"
        )
    out = Path(options["out"])
    print(f"wrote {out / 'dissect.json'}, {out / 'report.html'}")


def _compare(rows: list[dict], options: dict) -> None:
    for r in rows:
        print(
            f"{r['name']:<20} {r['layer']:<8} {r['threshold']:<8} interpretable {r['interpretable']:>4}  "
            f"objects {r['object_units']:>4}  concepts {r['distinct_concepts']:>3}  mean IoU {r['mean_iou']:.3f}"
        )
    if options.get("out") is not None:
        print(f"wrote {Path(options['out']) / 'compare.json'}, {Path(options['out']) / 'compare.png'}")


def _causal_summary(table: str, options: dict) -> None:
    out = Path(options["out"])
    print(table)
    print(f"wrote {out / 'causal_summary.md'}, {out / 'causal_removal.png'}")


def _dissect_checkpoints(history: list[dict], options: dict) -> None:
    print(f"{'step':>8} {'interpretable':>13} {'concepts':>9} {'mean IoU':>9}")
    for r in history:
        print(f"{r['step']:>8} {r['interpretable']:>13} {r['distinct_concepts']:>9} {r['mean_iou']:>9.3f}")
    out = Path(options["out"])
    print(f"wrote {out / 'emergence.json'}, {out / 'emergence.png'}")


def _artifacts(doc: dict, options: dict) -> None:
    from lightning_gd.reports.artifacts import ablation_markdown

    worst = ", ".join(f"{u} ({doc['unit_fid'][u]:.1f})" for u in doc["ranking"][:10])
    print(f"{doc['layer']}: highest per-unit FID: {worst}")
    print(ablation_markdown(doc["ablation"]))
    out = Path(options["out"])
    print(f"wrote {out / 'unit_fid.json'}, {out / 'ablation.md'} and figures")


def _context(doc: dict, options: dict) -> None:
    s = doc["settings"]
    print(f"inserting {s['top_n']} {s['concept']} units of {s['layer']} ({s['units_from']}), {s['n']} images:")
    print(f"{'background':<16} {'locations':>9} {'effect':>9} {'95% interval':>19} {'appears':>8}")
    for name, row in doc["by_background"].items():
        appear = "-" if row["appear_rate"] is None else f"{row['appear_rate']:.3f}"
        print(f"{name:<16} {row['count']:>9} {row['effect']:>9.4f} [{row['ci'][0]:>7.4f}, {row['ci'][1]:>7.4f}]"
              f" {appear:>8}")  # fmt: skip
    print("effect: the concept's share of the window's pixels gained; appears: share of the concept-free windows")
    if "trace" in doc:
        t = doc["trace"]
        pairs = ", ".join(f"{n} {v if v is None else round(v, 3)}/{w if w is None else round(w, 3)}"
                          for n, v, w in zip(t["layers"], t["visible"], t["not_visible"]))  # fmt: skip
        print(f"normalised change per later layer (visible/no effect): {pairs}")
    out = Path(options["out"])
    print(f"wrote {out / 'context.json'}, {out / 'context.png'}, {out / 'where.png'} ({s['seconds']} s)")


COMMANDS: dict[str, Command] = {
    "dissect": Command(dissect, _dissect),
    "compare": Command(compare, _compare),
    "causal-summary": Command(causal_summary, _causal_summary),
    "context": Command(context, _context),
    "paint": Command(paint),
    "artifacts": Command(artifacts, _artifacts),
    "dissect-checkpoints": Command(dissect_checkpoints, _dissect_checkpoints),
}

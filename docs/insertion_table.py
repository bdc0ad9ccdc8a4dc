"""The insertion-constant table of docs/context.md and the README, from `context` runs' results.

    python docs/insertion_table.py out/context/tree-r1-k_c out/context/tree-r1-q0.999 ...

One row per run (its square and insertion constant, read from the run's own settings): the share of tree-free
grass and sky windows where the concept appears, raw and with the realism guard, their ratio (sky / grass,
guarded), and the effect with its 95 % interval. The backgrounds are `--backgrounds` (default grass and sky).
A second table gives the guarded rate by the featuremap row of the insertion (runs that recorded it), since the
world draws tree crowns against the sky near the horizon but not high above it."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_gd.results import ContextResult


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _appears(entry: dict | None) -> str:
    if entry is None:
        return "-"  # no location of the run had this background
    # a rate is None where the background had no concept-free window
    return f"{_percent(entry.get('appear_rate'))} ({_percent(entry.get('appear_rate_guarded'))})"


def _effect(entry: dict | None) -> str:
    if entry is None:
        return "-"
    low, high = entry["ci"]
    return f"{entry['effect']:.4f} [{low:.4f}, {high:.4f}]".replace("-", "−")


def _ratio(first: dict | None, second: dict | None) -> str:
    rates = [e.get("appear_rate_guarded") if e is not None else None for e in (first, second)]
    if rates[0] is None or rates[1] is None or not rates[0]:
        return "-"
    return f"{rates[1] / rates[0]:.2f}"


def table(runs: list[Path], backgrounds: tuple[str, str]) -> str:
    first, second = backgrounds
    lines = [
        f"| square | constant | {first}: appears (guarded) | {second}: appears (guarded) | "
        f"{second} / {first} (guarded) | effect on {first} [95 %] | effect on {second} [95 %] |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        result = ContextResult.load(Path(run) / ContextResult.FILE)
        region, by = result.settings["region"], result.by_background
        a, b = by.get(first), by.get(second)
        lines.append(
            f"| {region}×{region} | {result.settings.get('insertion', 'k_c')} | {_appears(a)} | {_appears(b)} | "
            f"{_ratio(a, b)} | {_effect(a)} | {_effect(b)} |"
        )
    return "\n".join(lines)


def row_table(runs: list[Path], backgrounds: tuple[str, str]) -> str:
    """Per run and background, the guarded appear rate at each featuremap row of the insertion's square."""
    lines, width = [], 0
    for run in runs:
        result = ContextResult.load(Path(run) / ContextResult.FILE)
        region, constant = result.settings["region"], result.settings.get("insertion", "k_c")
        for name in backgrounds:
            rates = (result.by_background.get(name) or {}).get("appear_by_row")
            if rates is None:
                continue
            width = max(width, len(rates))
            lines.append(f"| {region}×{region} | {constant} | {name} | " + " | ".join(map(_percent, rates)) + " |")
    if not lines:
        return ""
    head = "| square | constant | background | " + " | ".join(f"row {r}" for r in range(width)) + " |"
    return "\n".join([head, "|---" * (width + 3) + "|", *lines])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="output folders of `python -m lightning_gd context`")
    ap.add_argument("--backgrounds", nargs=2, default=["grass", "sky"], help="the two backgrounds compared")
    args = ap.parse_args()
    print(table(args.runs, tuple(args.backgrounds)))
    rows = row_table(args.runs, tuple(args.backgrounds))
    if rows:
        print("\nGuarded appear rate by the featuremap row of the insertion (row 0 at the top):\n")
        print(rows)


if __name__ == "__main__":
    main()

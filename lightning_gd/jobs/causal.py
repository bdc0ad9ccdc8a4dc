"""The causal jobs beside Lightning's `fit` / `test` (which run `lightning_gd.causal.search.CausalSearch`)."""

from __future__ import annotations

from pathlib import Path

from lightning_gd.cache import atomic_write, check_writable, staged
from lightning_gd.errors import InvalidValue
from lightning_gd.results import AceResult, CausalSummaryResult


def causal_summary(runs: list[Path], out: Path = Path("out/causal")) -> str:
    """Summarise finished causal searches: the share of each concept removed by its top-n units (paper Fig. 9).

    Writes causal_summary.json, causal_summary.md and causal_removal.png under `out`; returns the markdown table.

    Args:
        runs: run folders (each with the `ace.json` that `python -m lightning_gd test` writes).
        out: output folder for causal_summary.json, causal_summary.md and causal_removal.png.

    Examples:
        python -m lightning_gd causal-summary "[out/causal/tree-layer4]"
        python -m lightning_gd causal-summary "[out/causal/tree-layer4, out/causal/door-layer4]" --out out/causal
    """
    from lightning_gd.reports.causal import summary_table
    from lightning_gd.reports.figures import removal_figure

    summaries = []
    for run in runs:
        path = Path(run) / "ace.json" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(
                f"no ace.json at {path}: test the run first "
                "(`python -m lightning_gd test --config <its config> --ckpt_path <run>/checkpoints/last.ckpt`)"
            )
        summaries.append(AceResult.load(path))
    if not summaries:
        raise InvalidValue("name at least one run folder")
    check_writable(out)
    result = CausalSummaryResult.of(summaries)
    table = summary_table(result.runs)
    with staged(out) as stage:
        result.save(stage)
        atomic_write(stage / "causal_summary.md", (table + "\n").encode())
        removal_figure(result.runs, stage / "causal_removal.png")
    return table

"""The project's subcommands. Each is a library function — its signature is the command's config and its
docstring the `--help` — and a report that says what it found, what it wrote (files and TensorBoard run) and
which command comes next (`lightning_gd.cli.console.print_outputs`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_gd.cache import check_writable
from lightning_gd.cli.console import command, print_outputs
from lightning_gd.jobs import run_name
from lightning_gd.jobs.artifacts import artifacts
from lightning_gd.jobs.causal import causal_summary
from lightning_gd.jobs.context import context
from lightning_gd.jobs.dissect import compare, dissect
from lightning_gd.jobs.emergence import dissect_checkpoints
from lightning_gd.jobs.paint import paint
from lightning_gd.latents import is_rank_zero
from lightning_gd.outputs import check_not_cache, check_owned, first_process, output_lock, written_under
from lightning_gd.reports.rebuild import rebuild
from lightning_gd.results import AceResult

Report = Callable[[Any, dict, float], None]  # (the function's result, its arguments, its start time) → printed lines


@dataclass(frozen=True)
class Command:
    run: Callable[..., Any]  # a library function
    report: Report | None = None
    # whether `out` is a folder this command owns (checked, locked, listed); a plugin's `out` may be a file
    output_folder: bool = True

    def __call__(self, **options) -> Any:
        started = time.time()
        for key in ("tb_dir", "cache_dir"):  # folders a run writes into too: the same rules as --out
            if options.get(key) is not None:
                check_owned(options[key], f"--{key}")
        out = options.get("out")
        if out is None or not self.output_folder:
            return self._run(options, started)
        check_writable(out)  # before the lock creates it: a folder the run may not own is never created
        check_not_cache(out, options.get("cache_dir"))
        with output_lock(out) if first_process() else contextlib.nullcontext():
            return self._run(options, started)

    def _run(self, options: dict, started: float) -> Any:
        result = self.run(**options)
        if self.report is not None and is_rank_zero():  # a job run on several processes reports once
            self.report(result, options, started)
        return result


MAX_LISTED = 12  # files listed one per line; the rest are counted


def files_since(folder: str | Path | None, started: float, options: dict | None = None) -> list[str]:
    """The files under `folder` that this run put in place since it started (`outputs.written_under`: never other
    files, however recent), the cache and TensorBoard folders of `options` left out; beyond `MAX_LISTED`, a line
    that counts the rest."""
    if folder is None:
        return []
    skip = [Path(options[k]).resolve() for k in ("cache_dir", "tb_dir") if (options or {}).get(k) is not None]
    found = [p for p in written_under(folder, started) if not any(p.resolve().is_relative_to(s) for s in skip)]
    listed = [str(p) for p in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        listed.append(f"… and {len(found) - MAX_LISTED} more under {folder}")
    return listed


def _tensorboard(tb_dir: Path | None, name: str) -> Path | None:
    return None if tb_dir is None or not (Path(tb_dir) / name).is_dir() else Path(tb_dir) / name


def _network_args(options: dict) -> list[str]:
    """The `fit` options that name the same networks as a project command's --generator / --segmenter."""
    args = []
    for name in ("generator", "segmenter"):
        spec = options.get(name)
        if isinstance(spec, str):
            args += [f"--model.{name}", spec]
        elif spec is not None:
            args += [f"--model.{name}", f"<the {name} config given to this command>"]
    return args


def _dissect(doc: dict, options: dict, started: float) -> None:
    for layer, entry in doc["layers"].items():
        summ = entry["summary"]
        top = ", ".join(f"{c} {k}" for c, k in list(summ["per_concept"].items())[:8])
        print(
            f"{layer}: {summ['interpretable']}/{summ['units']} interpretable units, "
            f"{summ['distinct_concepts']} concepts, mean IoU {summ['mean_iou']:.3f}  [{top}]"
        )
    out, layers = Path(options["out"]), list(doc["layers"])
    steps = [f"open {out / 'report.html'} (the unit browser)"]
    # the causal search for the concept with the most interpretable units, in the first layer that has one
    found = [(layer, next(iter(doc["layers"][layer]["summary"]["per_concept"]), None)) for layer in layers]
    layer, concept = next(((lay, c) for lay, c in found if c is not None), (layers[0], None))
    fit = command("fit", "--concept", concept or "<concept>", "--layer", layer, *_network_args(options))
    steps.append(f"{fit}   (which units cause {concept or 'a concept'}: the α search)")
    tb = _tensorboard(options.get("tb_dir"), run_name("dissect", out, layers))
    print_outputs(files_since(out, started, options), tb, steps)


def _compare(rows: list[dict], options: dict, started: float) -> None:
    for r in rows:
        print(
            f"{r['name']:<20} {r['layer']:<8} {r['threshold']:<8} interpretable {r['interpretable']:>4}  "
            f"objects {r['object_units']:>4}  concepts {r['distinct_concepts']:>3}  mean IoU {r['mean_iou']:.3f}"
        )
    first = Path(options["dissections"][0])
    first = first if first.is_dir() else first.parent
    steps = [f"open {first / 'report.html'} (the unit browser of {rows[0]['name']})"]
    print_outputs(files_since(options.get("out"), started, options), None, steps)


def _causal_summary(table: str, options: dict, started: float) -> None:
    print(table)
    runs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in options["runs"]]
    first = AceResult.load(runs[0])
    concept, layer = first.concept, first.layer
    steps = [
        command(
            "context",
            "--causal",
            runs[0],
            "--concept",
            concept,
            "--layer",
            layer,
            "--out",
            f"out/context/{runs[0].name}",
        )
        + f"   (where {concept} can be inserted)",
        command("paint", "--results", runs[0].parent, "--layer", layer) + "   (paint with these units)",
    ]
    print_outputs(files_since(options["out"], started, options), None, steps)


def _dissect_checkpoints(history: list[dict], options: dict, started: float) -> None:
    print(f"{'step':>8} {'interpretable':>13} {'concepts':>9} {'mean IoU':>9}")
    for r in history:
        print(f"{r['step']:>8} {r['interpretable']:>13} {r['distinct_concepts']:>9} {r['mean_iou']:>9.3f}")
    out = Path(options["out"])
    steps = [f"open {out / 'emergence.png'}"]
    if options.get("generator") is None:  # the world's own training run: export its last checkpoint, dissect it
        weights = "ema" if options.get("prefix") == "generator_ema" else "generator"
        export = command("export-world", "gan", "--checkpoint", history[-1]["checkpoint"], "--gan_weights", weights)
        steps += [export, command("dissect", "--generator", "world:out/world/generator.safetensors")]
    # the layer dissected: --layer, or the generator's default layer when it was left out
    tb = _tensorboard(options.get("tb_dir"), run_name("emergence", out, [history[-1]["layer"]]))
    print_outputs(files_since(out, started, options), tb, steps)


def _artifacts(doc: dict, options: dict, started: float) -> None:
    from lightning_gd.reports.artifacts import ablation_markdown

    worst = ", ".join(f"{u} ({doc['unit_fid'][u]:.1f})" for u in doc["ranking"][:10])
    print(f"{doc['layer']}: highest per-unit FID: {worst}")
    print(ablation_markdown(doc["ablation"]))
    out = Path(options["out"])
    # the realism filter with the cut that leaves out exactly the n_ablate worst units: between the n-th and the
    # next per-unit FID
    fid = sorted(doc["unit_fid"], reverse=True)
    n = min(options["n_ablate"], len(fid))
    cut = (fid[n - 1] + fid[n]) / 2 if n < len(fid) else fid[-1] - 1
    realism = command(
        "dissect", "--layers", doc["layer"], "--realism", out / "unit_fid.json", "--max_unit_fid", f"{cut:.4f}"
    )
    steps = [f"{realism}   (dissect without the {options['n_ablate']} highest-FID units)"]
    print_outputs(files_since(out, started, options), None, steps)


APPEAR_RATES = ("appear_rate", "appear_rate_guarded")


def _context(doc: dict, options: dict, started: float) -> None:
    s = doc["settings"]
    print(f"inserting {s['top_n']} {s['concept']} units of {s['layer']} ({s['units_from']}), {s['n']} images:")
    print(f"{'background':<16} {'locations':>9} {'effect':>9} {'95% interval':>19} {'appears':>8} {'guarded':>8}")
    for name, row in doc["by_background"].items():
        appear, guarded = ("-" if row.get(k) is None else f"{row[k]:.3f}" for k in APPEAR_RATES)
        interval = f"[{row['ci'][0]:>7.4f}, {row['ci'][1]:>7.4f}]"
        print(f"{name:<16} {row['count']:>9} {row['effect']:>9.4f} {interval} {appear:>8} {guarded:>8}")
    bar = doc["overall"].get("guard_confidence")
    print("effect: the concept's share of the window's pixels gained; appears: share of the concept-free windows")
    if bar is not None:
        print(
            f"guarded: appears with the segmenter's mean confidence ≥ {bar:.3f} (the generator's own instances' 10th "
            "percentile)"
        )
    if "trace" in doc:
        t = doc["trace"]
        pairs = ", ".join(
            f"{n} {v if v is None else round(v, 3)}/{w if w is None else round(w, 3)}"
            for n, v, w in zip(t["layers"], t["visible"], t["not_visible"])
        )
        print(f"normalised change per later layer (visible/no effect): {pairs}")
    print(f"({s['seconds']} s)")
    steps = []
    if options.get("causal") is None:
        steps.append(command("fit", "--concept", s["concept"], "--layer", s["layer"]) + "   (its causal units)")
    if "trace" not in doc:
        steps.append(command("context", *_given(options, ("causal", "concept", "layer")), "--trace", "true"))
    results = Path(options["causal"]).parent if options.get("causal") is not None else Path("out")
    steps.append(command("paint", "--results", results, "--layer", s["layer"]) + "   (paint with these units)")
    tb = _tensorboard(options.get("tb_dir"), f"context-{s['concept']}-{s['layer']}")
    print_outputs(files_since(options["out"], started, options), tb, steps)


def _report(written: list[Path], options: dict, started: float) -> None:
    print_outputs(written, None, [])


def _given(options: dict, names: tuple[str, ...]) -> list[str]:
    """`--name value` for the options of `names` that have a value."""
    return [a for name in names if options.get(name) is not None for a in (f"--{name}", options[name])]


def _paint(_: None, options: dict, started: float) -> None:
    print("the painting server stopped; it wrote no files (the page's download button saves an image)")


COMMANDS: dict[str, Command] = {
    "dissect": Command(dissect, _dissect),
    "compare": Command(compare, _compare),
    "causal-summary": Command(causal_summary, _causal_summary),
    "context": Command(context, _context),
    "paint": Command(paint, _paint),
    "artifacts": Command(artifacts, _artifacts),
    "dissect-checkpoints": Command(dissect_checkpoints, _dissect_checkpoints),
    "report": Command(rebuild, _report),
}

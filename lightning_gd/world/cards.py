"""Model cards of the embedded world's shipped weights, written from measurements (never by hand)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from lightning_gd.errors import InvalidValue
from lightning_gd.world import load_feature_net, load_generator, load_segmenter
from lightning_gd.world.evaluate import (
    FRESH_SEED_2,
    SHARE_TOLERANCE,
    gan_table,
    generate,
    quality_bar,
    render,
    segment,
    segmenter_table,
    targets,
    world_fid,
)
from lightning_gd.world.weights import default_path, read_metadata

_CONFIGS = {"generator": "gan", "segmenter": "segmenter", "features": "features"}


def _provenance_md(name: str) -> list[str]:
    meta = read_metadata(default_path(name)).get("provenance", {})
    wall = meta.get("wall_time_s")
    cfg = f"configs/world/{_CONFIGS[name]}.yaml"
    weights = f" --gan_weights {meta['gan_weights']}" if "gan_weights" in meta else ""
    return [
        f"- reproduce: `python -m lightning_gd fit --config {cfg}` (the exact commands are at the top of the config), "
        f"then `python -m lightning_gd export-world {_CONFIGS[name]} --checkpoint <checkpoint>{weights} "
        f"--out lightning_gd/world/weights/{default_path(name).name}`",
        "- seed: 0 (`seed_everything` in the config)",
        f"- checkpoint: `{meta.get('checkpoint')}`, global step {meta.get('global_step')}, epoch {meta.get('epoch')}",
        f"- wall time of the run up to that checkpoint: {wall / 60:.1f} min" if wall else "- wall time: not recorded",
        f"- machine: {meta.get('machine')}",
        f"- hyper-parameters: `{json.dumps(meta.get('hyper_parameters', {}))}`",
        f"- file: `lightning_gd/world/weights/{default_path(name).name}` "
        f"({default_path(name).stat().st_size / 1e6:.2f} MB)",
    ]


def _checkpoint_fids(checkpoints: list[Path], real: torch.Tensor, n: int, gan_weights: str) -> list[dict]:
    from lightning_gd.world.export import export, portable

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in checkpoints:
            path = export("gan", ckpt, Path(tmp) / "g.safetensors", gan_weights)
            step = read_metadata(path)["provenance"]["global_step"]
            rows.append(
                {
                    "checkpoint": portable(ckpt),
                    "global_step": step,
                    "fid": world_fid(real, generate(load_generator(path), n)),
                }
            )
    return sorted(rows, key=lambda r: r["global_step"])


def measure(n: int = 2000, gan_checkpoints: list[Path] = ()) -> dict:
    """Every number of the cards: the segmenter's accuracy, the GAN's pixel fractions and world FID."""
    G, seg = load_generator(), load_segmenter()
    load_feature_net()  # fail early if missing
    seg_t = segmenter_table(seg, n)
    gan_t = gan_table(G, seg, n)
    real, fake = gan_t.pop("images_real"), gan_t.pop("images_generated")
    blurred = torch.nn.functional.avg_pool2d(real, 3, 1, 1)  # a blurrier "real" set, like generated images
    seg_t["confidence_generated"] = gan_t["confidence_generated"]
    seg_t["confidence_real_blurred"] = float(segment(seg, blurred)[1].mean())
    bar = quality_bar(gan_t["fractions"])
    real2, _ = render(n, seed=FRESH_SEED_2)
    fids = {"real_vs_real": world_fid(real, real2), "real_vs_generated": world_fid(real, fake)}
    gan_weights = read_metadata(default_path("generator")).get("provenance", {}).get("gan_weights", "ema")
    ckpt_fids = _checkpoint_fids(list(gan_checkpoints), real, n, gan_weights)
    mb = default_path("generator").stat().st_size / 1e6
    return {
        "targets": targets(fids["real_vs_generated"], gan_t["fractions"], gan_t["confidence_generated"], mb),
        "segmenter": seg_t,
        "gan": {
            **gan_t,
            "quality_bar": bar,
            "fid": fids["real_vs_generated"],
            "checkpoint_fids": ckpt_fids,
            "weights": gan_weights,
        },
        "features": fids,
    }


def write_cards(n: int = 2000, gan_checkpoints: list[Path] = (), out: Path | None = None) -> Path:
    if n < 2:
        raise InvalidValue(f"world-card needs n ≥ 2 samples per measurement (FID needs a covariance), got {n}")
    out = Path(out) if out is not None else Path("out/world-card")
    out.mkdir(parents=True, exist_ok=True)
    results = measure(n, gan_checkpoints)
    (out / "model_cards.json").write_text(json.dumps(results, indent=2))
    md = [
        "# Model cards: the embedded world",
        "",
        f"Measured by `python -m lightning_gd world-card --n {n}` on fresh renders (a seed stream never used in "
        "training) and generated samples. FID here is **world FID** (the world's own feature net, not Inception).",
        "",
        *_segmenter_md(results["segmenter"], n),
        *_generator_md(results["gan"], n, results["targets"]),
        *_features_md(results["features"], n),
    ]
    path = out / "MODEL_CARDS.md"
    path.write_text("\n".join(md))
    print(targets_table(results["targets"]))
    print()
    print(presence_table(results["gan"]["fractions"]))
    print(f"wrote {path} and {out / 'model_cards.json'}")
    return path


def targets_table(rows: list[dict]) -> str:
    """The generator's targets as a console table; its last line says how many hold."""
    widths = [max(len(r[k]) for r in rows) for k in ("target", "measured", "bar")]
    lines = [f"{'target':<{widths[0]}}  {'measured':<{widths[1]}}  {'target value':<{widths[2]}}  holds"]
    for r in rows:
        lines.append(f"{r['target']:<{widths[0]}}  {r['measured']:<{widths[1]}}  {r['bar']:<{widths[2]}}  "
                     f"{'yes' if r['holds'] else 'NO'}")  # fmt: skip
    held = sum(r["holds"] for r in rows)
    lines.append(f"{held} of {len(rows)} targets hold")
    return "\n".join(lines)


def _reading(rows: dict) -> str:
    """Where a share difference comes from: the concept is in fewer/more images, or smaller/larger where it is."""
    said, words = [], {"in_images": ("in fewer images", "in more images"), "share_where_in": ("smaller", "larger")}
    for key, (less, more) in words.items():
        ratio = rows[f"{key}_generated"] / rows[f"{key}_real"] if rows[f"{key}_real"] > 0 else float("nan")
        said += [less] if ratio < 1 - SHARE_TOLERANCE else [more] if ratio > 1 + SHARE_TOLERANCE else []
    return ", ".join(said) or "as real"


def presence_rows(fractions: dict) -> list[list[str]]:
    """Per concept: the images it is in (≥ 0.5 % of their pixels) and its share there, real → generated."""
    return [
        [
            c,
            f"{r['in_images_real']:.1%} → {r['in_images_generated']:.1%}",
            f"{r['share_where_in_real']:.2%} → {r['share_where_in_generated']:.2%}",
            _reading(r),
        ]
        for c, r in fractions.items()
        if "in_images_real" in r
    ]


PRESENCE_HEAD = ["concept", "in images, real → generated", "share where in, real → generated", "generated"]


def presence_table(fractions: dict) -> str:
    """`presence_rows` as a console table, its arrows aligned."""
    rows = presence_rows(fractions)
    if not rows:
        return ""
    for k in (1, 2):  # right-align the real values so that every arrow of a column lines up
        width = max(len(r[k].split(" → ")[0]) for r in rows)
        for r in rows:
            real, generated = r[k].split(" → ")
            r[k] = f"{real:>{width}} → {generated}"
    rows = [PRESENCE_HEAD, *rows]
    widths = [max(len(r[k]) for r in rows) for k in range(len(PRESENCE_HEAD) - 1)]
    return "\n".join("  ".join([*(f"{v:<{w}}" for v, w in zip(r, widths)), r[-1]]) for r in rows)


def _segmenter_md(seg_t: dict, n: int) -> list[str]:
    return [
        "## Segmenter (`load_segmenter()`)",
        "",
        *_provenance_md("segmenter"),
        "",
        f"On {n} fresh renders: pixel accuracy **{seg_t['pixel_accuracy']:.4f}**, "
        f"mean IoU **{seg_t['mean_iou']:.4f}**.",
        "",
        "| concept | IoU |",
        "|---|---|",
        *[f"| {c} | {v:.3f} |" for c, v in seg_t["iou"].items()],
        "",
        "Mean top-class probability (confidence): "
        f"renders {seg_t['confidence_real']:.3f}, blurred renders (3×3 box) {seg_t['confidence_real_blurred']:.3f}, "
        f"generated images {seg_t['confidence_generated']:.3f}.",
        "",
    ]


def _generator_md(gan_t: dict, n: int, targets_: list[dict]) -> list[str]:
    gan_weights, bar, ckpt_fids = gan_t["weights"], gan_t["quality_bar"], gan_t["checkpoint_fids"]
    md = [
        "## Generator (`load_generator()`)",
        "",
        *_provenance_md("generator"),
        f"- weights: {'the EMA generator' if gan_weights == 'ema' else 'the trained generator (not its EMA)'}",
        "",
        "Targets of the shipped generator, measured on the samples below:",
        "",
        "| target | measured | target value | holds |",
        "|---|---|---|---|",
        *[f"| {r['target']} | {r['measured']} | {r['bar']} | {'yes' if r['holds'] else '**no**'} |" for r in targets_],
        "",
        f"Concept pixel fractions over {n} images: real renders (exact labels, and as segmented) versus generated "
        "samples (segmented). Bar: every concept within ±15 % of its real share (relative); window and door "
        "at ≥ 0.8 of theirs.",
        "",
        "| concept | real | real (segmented) | generated | relative difference | bar |",
        "|---|---|---|---|---|---|",
    ]
    for c, r in gan_t["fractions"].items():
        verdict = {True: "pass", False: "FAIL"}.get(bar.get(c), "n/a (absent)")
        md.append(
            f"| {c} | {r['real']:.4f} | {r['real_segmented']:.4f} | {r['generated']:.4f} | "
            f"{r['relative_difference']:+.1%} | {verdict} |"
        )
    md += [
        "",
        f"Per image, over the same {n} images: the share of images a concept is in (it covers ≥ 0.5 % of their "
        "pixels; exact labels for the renders, segmented samples), and its mean pixel share in those images. A "
        "share that falls short because the concept is *in fewer images* is dropped per image (mode dropping); "
        "one that is *smaller* where it is in is drawn too small. ±15 % counts as real.",
        "",
        f"| {' | '.join(PRESENCE_HEAD)} |",
        "|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in presence_rows(gan_t["fractions"])],
        "",
        f"World FID, {n} generated vs {n} real: **{gan_t['fid']:.2f}**.",
        "",
    ]
    if ckpt_fids:
        md += [
            f"World FID along the training run ({'EMA generator' if gan_weights == 'ema' else 'trained generator'}"
            " weights of each checkpoint, as shipped):",
            "",
            "| global step | iterations | world FID |",
            "|---|---|---|",
            *[f"| {r['global_step']} | {r['global_step'] // 2} | {r['fid']:.2f} |" for r in ckpt_fids],
            "",
        ]
    return md


def _features_md(fids: dict, n: int) -> list[str]:
    return [
        "## FID feature net (`load_feature_net()`, torch-fidelity extractor `lightning-gd-world-v1`)",
        "",
        *_provenance_md("features"),
        "",
        f"World FID between two disjoint sets of {n} renders: **{fids['real_vs_real']:.3f}**; "
        f"renders vs generated: **{fids['real_vs_generated']:.2f}**.",
        "",
    ]

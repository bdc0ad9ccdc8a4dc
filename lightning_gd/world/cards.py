"""Model cards of the embedded world's shipped weights, written from measurements (never by hand)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lightning_gd.errors import InvalidValue
from lightning_gd.outputs import check_owned
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
    where_objects_stand,
    world_fid,
    world_fidelity,
)
from lightning_gd.world.render import DEFAULT_VIEW
from lightning_gd.world.weights import FILES, WEIGHTS_DIR, default_path, read_metadata

PRC_NEIGHBOURS = 3  # torch-fidelity's prc neighbourhood (k)
MIN_N = PRC_NEIGHBOURS + 1  # each sample's k-th neighbour among the others
LAYER = "layer4"  # the world GAN's probed layer: 8×8 cells of 8×8 pixels
TRANSPLANT_CONCEPTS, TRANSPLANT_REGIONS = ("tree", "door", "window", "building"), (1, 2)

_CONFIGS = {"generator": "gan", "segmenter": "segmenter", "features": "features"}


def weights_path(name: str, weights: Path | None) -> Path:
    """The shipped weights file of `name`, or the file of that name in the folder `weights`."""
    return default_path(name) if weights is None else Path(weights) / FILES[name]


def _provenance_md(name: str, weights: Path | None = None) -> list[str]:
    path = weights_path(name, weights)
    meta = read_metadata(path).get("provenance", {})
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
        f"- file: `lightning_gd/world/weights/{path.name}` ({path.stat().st_size / 1e6:.2f} MB)",
    ]


def _checkpoint_fids(
    checkpoints: list[Path], real: torch.Tensor, n: int, gan_weights: str, features: Path | None = None
) -> list[dict]:
    from lightning_gd.world.export import export, portable

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in tqdm(checkpoints, desc="checkpoint FID", disable=not checkpoints):
            path = export("gan", ckpt, Path(tmp) / "g.safetensors", gan_weights)
            step = read_metadata(path)["provenance"]["global_step"]
            rows.append(
                {
                    "checkpoint": portable(ckpt),
                    "global_step": step,
                    "fid": world_fid(real, generate(load_generator(path), n), features),
                }
            )
    return sorted(rows, key=lambda r: r["global_step"])


def transplant_rows(generator, segmenter, n: int) -> list[dict]:
    """The transplant probe at the world GAN's probed layer, per concept and square side."""
    from lightning_gd.causal.transplant import transplant
    from lightning_gd.models.split import LayerSplit

    split = LayerSplit(generator, LAYER)
    return [
        transplant(split, segmenter, c, n=n, region=region, progress=False).to_dict()
        for c in TRANSPLANT_CONCEPTS
        for region in TRANSPLANT_REGIONS
    ]


def measure(
    n: int = 2000,
    gan_checkpoints: list[Path] = (),
    weights: Path | None = None,
    view: str | None = None,
    transplant_n: int = 200,
) -> dict:
    """Every number of the cards: the segmenter's accuracy, the GAN's pixel fractions, instance sizes, world FID
    with precision and recall, and the transplant probe. `weights`: a folder holding generator, segmenter and
    features safetensors files (default: the shipped ones); `view`: the renderer's view they were trained on."""
    view = view or DEFAULT_VIEW
    G, seg = load_generator(weights_path("generator", weights)), load_segmenter(weights_path("segmenter", weights))
    features = None if weights is None else weights_path("features", weights)
    load_feature_net(features)  # fail early if missing
    seg_t = segmenter_table(seg, n, view=view)
    gan_t = gan_table(G, seg, n, view=view)
    real, fake = gan_t.pop("images_real"), gan_t.pop("images_generated")
    blurred = torch.nn.functional.avg_pool2d(real, 3, 1, 1)  # a blurrier "real" set, like generated images
    seg_t["confidence_generated"] = gan_t["confidence_generated"]
    seg_t["confidence_real_blurred"] = float(segment(seg, blurred)[1].mean())
    bar = quality_bar(gan_t["fractions"])
    real2, _ = render(n, seed=FRESH_SEED_2, view=view)
    fidelity = world_fidelity(real, fake, features)
    fids = {"real_vs_real": world_fid(real, real2, features), "real_vs_generated": fidelity["fid"]}
    meta = read_metadata(weights_path("generator", weights)).get("provenance", {})
    ckpt_fids = _checkpoint_fids(list(gan_checkpoints), real, n, meta.get("gan_weights", "ema"), features)
    mb = weights_path("generator", weights).stat().st_size / 1e6
    cell_h, cell_w = _cell_shape(G, real)
    cell_px = cell_h * cell_w
    transplants = transplant_rows(G, seg, transplant_n)
    stand = where_objects_stand(n=n, view=view, cell=cell_h) if cell_h == cell_w else {}
    pr = (fidelity["precision"], fidelity["recall"])
    return {
        "view": view,
        "targets": targets(
            fids["real_vs_generated"], gan_t["fractions"], gan_t["confidence_generated"], mb, pr, cell_px, transplants
        ),
        "segmenter": seg_t,
        "gan": {
            **gan_t,
            "quality_bar": bar,
            "fid": fids["real_vs_generated"],
            "precision": pr[0],
            "recall": pr[1],
            "checkpoint_fids": ckpt_fids,
            "weights": meta.get("gan_weights", "ema"),
            "cell_px": cell_px,
            "transplants": transplants,
        },
        "features": fids,
        "where_objects_stand": stand,
    }


def _cell_shape(generator, images: torch.Tensor) -> tuple[int, int]:
    """Height and width in pixels of one featuremap location of the probed layer."""
    from lightning_gd.models.split import LayerSplit

    split = LayerSplit(generator, LAYER, check=False)
    with torch.no_grad():
        r = split.h(torch.zeros(1, split.z_dim))
    return images.shape[-2] // r.shape[-2], images.shape[-1] // r.shape[-1]


def write_cards(
    n: int = 2000,
    gan_checkpoints: list[Path] = (),
    out: Path | None = None,
    weights: Path | None = None,
    view: str | None = None,
    transplant_n: int = 200,
) -> Path:
    if n < MIN_N:
        raise InvalidValue(
            f"world-card needs n ≥ {MIN_N} samples per measurement (precision and recall compare each sample with "
            f"its {PRC_NEIGHBOURS} nearest neighbours), got {n}"
        )
    out = Path(out) if out is not None else Path("out/world-card")
    if out.resolve() != WEIGHTS_DIR.resolve():  # the shipped cards are rewritten only when named explicitly
        check_owned(out)
    results = measure(n, gan_checkpoints, weights, view, transplant_n)
    out.mkdir(parents=True, exist_ok=True)  # after the measurement: a failed one leaves no empty folder
    (out / "model_cards.json").write_text(json.dumps(results, indent=2))
    md = [
        "# Model cards: the embedded world",
        "",
        f"Measured by `python -m lightning_gd world-card --n {n}` on fresh renders of the `{results['view']}` view "
        "(a seed stream never used in training) and generated samples. FID here is **world FID** (the world's own "
        "feature net, not Inception).",
        "",
        *_segmenter_md(results["segmenter"], n, weights),
        *_generator_md(results["gan"], n, results["targets"], weights),
        *_geometry_md(results["gan"]),
        *_stand_md(results["where_objects_stand"]),
        *_features_md(results["features"], n, weights),
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
        lines.append(
            f"{r['target']:<{widths[0]}}  {r['measured']:<{widths[1]}}  {r['bar']:<{widths[2]}}  "
            f"{'yes' if r['holds'] else 'NO'}"
        )
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


def _segmenter_md(seg_t: dict, n: int, weights: Path | None = None) -> list[str]:
    return [
        "## Segmenter (`load_segmenter()`)",
        "",
        *_provenance_md("segmenter", weights),
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


def _generator_md(gan_t: dict, n: int, targets_: list[dict], weights: Path | None = None) -> list[str]:
    gan_weights, bar, ckpt_fids = gan_t["weights"], gan_t["quality_bar"], gan_t["checkpoint_fids"]
    md = [
        "## Generator (`load_generator()`)",
        "",
        *_provenance_md("generator", weights),
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
        f"World FID, {n} generated vs {n} real: **{gan_t['fid']:.2f}**; precision **{gan_t['precision']:.3f}** "
        f"(generated images inside the real images' manifold), recall **{gan_t['recall']:.3f}** (real images inside "
        "the generated ones'), torch-fidelity's `prc` (k = 3) in the same world features.",
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


def _features_md(fids: dict, n: int, weights: Path | None = None) -> list[str]:
    return [
        "## FID feature net (`load_feature_net()`, torch-fidelity extractor `lightning-gd-world-v1`)",
        "",
        *_provenance_md("features", weights),
        "",
        f"World FID between two disjoint sets of {n} renders: **{fids['real_vs_real']:.3f}**; "
        f"renders vs generated: **{fids['real_vs_generated']:.2f}**.",
        "",
    ]


def _geometry_md(gan_t: dict) -> list[str]:
    """Median instance sizes against the probed layer's cell, and the transplant probe."""
    cell = gan_t["cell_px"]
    md = [
        f"## Geometry and locality at `{LAYER}`",
        "",
        f"Median instance (4-connected component, as drawn) in pixels and in cells of `{LAYER}` ({cell} px a "
        "cell): renders (exact labels) and generated samples (segmented).",
        "",
        "| concept | renders | generated | renders, cells |",
        "|---|---|---|---|",
        *[
            f"| {c} | {r['median_instance_real']:.0f} | {r['median_instance_generated']:.0f} | "
            f"{r['median_instance_real'] / cell:.2f} |"
            for c, r in gan_t["fractions"].items()
        ],
        "",
        "Transplant probe (`lightning_gd.causal.transplant`): the featuremap of the square of one sample that a "
        "concept covers most, copied into a concept-free square of another; *reproduced* is the concept's share of "
        "the recipient window after the copy over its share of the donor window. *By recipient background*: the "
        "same ratio over the pairs whose recipient window's majority label is that background (`background "
        "(pairs) reproduced`, backgrounds of at least 10 pairs), each against the mean donor share of all pairs.",
        "",
        "| concept | square | pairs | donor share | kept share | reproduced | reproduced by recipient background |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {t['concept']} | {t['region']}×{t['region']} ({t['window_px']} px) | {t['pairs']} | "
            f"{t['donor_share']:.2f} | {t['kept_share']:.2f} | {t['reproduced']:.2f} | {_by_background(t)} |"
            for t in gan_t["transplants"]
        ],
        "",
    ]
    return md


def _by_background(t: dict) -> str:
    """`background (pairs) reproduced` for the backgrounds of at least 10 pairs."""
    donor = t["donor_share"]
    parts = [
        f"{bg} ({v['pairs']}) {v['kept_share'] / donor:.2f}"
        for bg, v in t.get("by_background", {}).items()
        if v["pairs"] >= 10 and donor > 0
    ]
    return ", ".join(parts) or "–"


def _stand_md(stand: dict) -> list[str]:
    """Where the renders put each object, by what lies behind it: the context a faithful GAN learns."""
    if not stand:
        return []
    md = [
        "## Where the world puts objects",
        "",
        "The same fresh renders drawn with and without each object (`render_scene(..., omit=...)`): each cell's "
        "background is its majority label without the object; *covered* is the share of those cells where the "
        "object has any pixel, *half* where it covers at least half of the cell, and *half, by row* the same per "
        "featuremap row from the top ('–': no such cell in that row). This is how common the object is on each "
        "background in the world the GAN learns from: a reference for `context`, which measures something else "
        "(how often an insertion of the object's units succeeds, in object-free windows, with a realism guard).",
        "",
    ]
    for concept, d in stand.items():
        side = d["cell_side"]
        md += [
            f"**{concept}** ({d['n']} scenes, {side}×{side} px cells)",
            "",
            "| background | cells | covered | half | half, by row |",
            "|---|---|---|---|---|",
            *[
                f"| {bg} | {v['windows']} | {v['covered']:.3f} | {v['half_covered']:.3f} | "
                + " ".join("–" if r is None else f"{r:.3f}" for r in v["half_covered_by_row"])
                + " |"
                for bg, v in sorted(d["by_background"].items(), key=lambda kv: -kv[1]["windows"])
            ],
            "",
        ]
    return md

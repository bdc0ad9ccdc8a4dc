"""Measurements behind the world's model cards: segmenter accuracy and IoU on fresh renders, its
confidence on renders versus generated images, the GAN's concept pixel fractions and world FID."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from lightning_gd.causal.context_summary import rate_by_row
from lightning_gd.models.images import to_uint8
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.world.data import render_batch

# Streams never used in training (training uses seed 0 and its val/test offsets).
FRESH_SEED = 424_242
FRESH_SEED_2 = 737_373


@torch.no_grad()
def generate(generator: torch.nn.Module, n: int, seed: int = 0, batch_size: int = 250) -> torch.Tensor:
    """n images (n, 3, H, W) in [-1, 1] from z drawn with `seed`."""
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    dev = next(generator.parameters()).device
    return torch.cat([generator(zb.to(dev)).cpu() for zb in z.split(batch_size)])


@torch.no_grad()
def segment(seg: Segmenter, images: torch.Tensor, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard labels (n, H, W) and per-pixel confidence, the top softmax probability (n, H, W)."""
    labels, conf = [], []
    for xb in images.split(batch_size):
        p = seg.probs(xb)
        c, lab = p.max(1)
        labels.append(lab)
        conf.append(c)
    return torch.cat(labels), torch.cat(conf)


def render(
    n: int, seed: int = FRESH_SEED, show_progress: bool = True, view: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = [
        render_batch(min(500, n - s), seed, start=s, view=view)
        for s in tqdm(range(0, n, 500), desc="render", disable=not show_progress)
    ]
    return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts, rows = target, columns = prediction."""
    idx = target.flatten() * num_classes + pred.flatten()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    tp = cm.diag().double()
    return tp / (cm.sum(0) + cm.sum(1) - cm.diag()).double().clamp_min(1)


def pixel_fractions(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels.flatten(), minlength=num_classes).double() / labels.numel()


PRESENT = 0.005  # a concept is "in" an image when it covers at least 0.5 % of its pixels


def instance_sizes(labels: torch.Tensor, num_classes: int) -> list[float]:
    """Per concept, the median pixel count of its connected components (4-connected) over images (n, H, W),
    as drawn (occluded, clipped at the border); 0 for a concept never present."""
    from scipy import ndimage

    sizes: list[list[int]] = [[] for _ in range(num_classes)]
    for lab in labels.cpu().numpy():
        for c in np.unique(lab):
            comp, k = ndimage.label(lab == c)
            sizes[int(c)] += np.bincount(comp.ravel(), minlength=k + 1)[1:].tolist()
    return [float(np.median(v)) if v else 0.0 for v in sizes]


def presence(labels: torch.Tensor, num_classes: int, floor: float = PRESENT) -> tuple[torch.Tensor, torch.Tensor]:
    """Per concept: the fraction of images (n, H, W) it is in (covers ≥ `floor` of the pixels), and its mean pixel
    share over those images (0 where it is in none). Tells a concept that a GAN draws in fewer images (mode
    dropping) from one it draws smaller."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    offsets = torch.arange(n).unsqueeze(1) * num_classes
    shares = torch.bincount((flat + offsets).flatten(), minlength=n * num_classes).view(n, num_classes)
    shares = shares.double() / flat.shape[1]
    present = shares >= floor
    count = present.sum(0)
    return count.double() / n, (shares * present).sum(0) / count.clamp_min(1)


def stand_rates(with_c: torch.Tensor, without_c: torch.Tensor, c: int, num_classes: int, cell: int) -> dict:
    """Where a concept stands, from label maps (n, H, W) of the same scenes drawn with it and without it.

    Each `cell` × `cell` window's background is the majority label of the scene without the concept (ties: the
    lower index). Per background: the windows counted, the share the concept covers at all (any pixel) in the
    scene with it, the share it covers at least half of, and that last share per window row (None for a row with
    no such window). The world's own answer to `context`'s question: how often the concept is there, by what is
    behind it."""
    n, H, W = with_c.shape
    h, w = H // cell, W // cell
    pool = torch.nn.functional.avg_pool2d
    # (n, C, h, w), pooled one class at a time: a one-hot (n, H, W, C) of 2,000 scenes would take 0.6 GB
    shares = torch.stack([pool((without_c == b).float()[:, None], cell)[:, 0] for b in range(num_classes)], 1)
    background = shares.argmax(1)  # (n, h, w)
    cover = pool((with_c == c).float()[:, None], cell)[:, 0]  # (n, h, w)
    half = cover >= 0.5
    rows = torch.arange(h).view(1, h, 1).expand(n, h, w)
    out = {}
    for b in range(num_classes):
        at = background == b
        count = int(at.sum())
        if count == 0:
            continue
        out[b] = {
            "windows": count,
            "covered": float((cover[at] > 0).double().mean()),
            "half_covered": float(half[at].double().mean()),
            "half_covered_by_row": rate_by_row(half, at, rows, h),
        }
    return out


STAND_CONCEPTS = ("tree", "door")  # the concepts whose insertion `context` measures in the docs


def where_objects_stand(
    concepts: tuple[str, ...] = STAND_CONCEPTS,
    n: int = 2000,
    seed: int = FRESH_SEED,
    view: str | None = None,
    cell: int = 8,
) -> dict:
    """`stand_rates` of each concept (of the renderer's `OMITTABLE`) on n fresh renders of `view`, drawn with and
    without it, keyed by concept and background name."""
    from lightning_gd.world.data import scene_seed
    from lightning_gd.world.render import CONCEPTS, LABEL, render_scene

    def labels(omit: tuple[str, ...]) -> torch.Tensor:
        return torch.from_numpy(np.stack([render_scene(scene_seed(seed, i), view, omit)[1] for i in range(n)]))

    with_all = labels(())
    out = {}
    for concept in concepts:
        rates = stand_rates(with_all, labels((concept,)), LABEL[concept], len(CONCEPTS), cell)
        out[concept] = {"n": n, "cell_side": cell, "by_background": {CONCEPTS[b]: v for b, v in rates.items()}}
    return out


def segmenter_table(seg: Segmenter, n: int = 2000, view: str | None = None) -> dict:
    images, labels = render(n, view=view)
    pred, conf = segment(seg, images)
    cm = confusion(pred, labels, len(seg.concepts))
    iou = iou_from_confusion(cm)
    return {
        "n": n,
        "pixel_accuracy": float(cm.diag().sum() / cm.sum()),
        "mean_iou": float(iou.mean()),
        "iou": {c: float(v) for c, v in zip(seg.concepts, iou)},
        "confidence_real": float(conf.mean()),
    }


def gan_table(
    generator: torch.nn.Module,
    seg: Segmenter,
    n: int = 2000,
    seed: int = 0,
    render_seed: int = FRESH_SEED,
    view: str | None = None,
) -> dict:
    """Concept pixel fractions: real renders (exact labels and segmented) versus generated (segmented), and the
    median instance size of each concept in both."""
    real, real_labels = render(n, seed=render_seed, view=view)
    real_seg, real_conf = segment(seg, real)
    fake = generate(generator, n, seed)
    fake_seg, fake_conf = segment(seg, fake)
    C = len(seg.concepts)
    real_f, real_seg_f, fake_f = (pixel_fractions(t, C) for t in (real_labels, real_seg, fake_seg))
    (real_in, real_when), (fake_in, fake_when) = presence(real_labels, C), presence(fake_seg, C)
    rows = {}
    for i, c in enumerate(seg.concepts):
        rel = float(fake_f[i] / real_f[i] - 1) if real_f[i] > 0 else float("nan")
        rows[c] = {
            "real": float(real_f[i]),
            "real_segmented": float(real_seg_f[i]),
            "generated": float(fake_f[i]),
            "relative_difference": rel,
            "in_images_real": float(real_in[i]),
            "in_images_generated": float(fake_in[i]),
            "share_where_in_real": float(real_when[i]),
            "share_where_in_generated": float(fake_when[i]),
        }
    for c, real_px, fake_px in zip(seg.concepts, instance_sizes(real_labels, C), instance_sizes(fake_seg, C)):
        rows[c].update(median_instance_real=real_px, median_instance_generated=fake_px)
    return {
        "n": n,
        "fractions": rows,
        "confidence_real": float(real_conf.mean()),
        "confidence_generated": float(fake_conf.mean()),
        "images_real": real,
        "images_generated": fake,
    }


FID_TARGET = 30.0
SHARE_TOLERANCE, PART_FLOOR, PARTS = 0.15, 0.85, ("window", "door")
CONFIDENCE_TARGET, WEIGHTS_MB_TARGET = 0.97, 15.0
# Geometry (issue: objects at least as large as the probed layer's cell): median instance size in cells
MIN_CELLS = {"door": 1.0, "window": 1.0, "tree": 4.0}
TRANSPLANT_TARGET, TRANSPLANT_CONCEPTS = 0.5, ("tree", "door")


def quality_bar(
    fractions: dict,
    min_share: float = 0.0,
    tolerance: float = SHARE_TOLERANCE,
    parts: tuple[str, ...] = PARTS,
    part_floor: float = PART_FLOOR,
    key: str = "",
) -> dict[str, bool]:
    """Per concept with more than `min_share` of real pixels: is its generated pixel share within ±tolerance of
    the real share (relative)? The parts (window, door) may be given a lower `part_floor`. With
    `key="in_images"` the same bar applies to the share of images the concept is in."""
    ok = {}
    for c, row in fractions.items():
        if row["real"] > min_share:
            real, generated = (row[f"{key}_{w}"] if key else row[w] for w in ("real", "generated"))
            ratio = _ratio(generated, real)
            floor = part_floor if c in parts else 1 - tolerance
            ok[c] = floor <= ratio <= 1 + tolerance
    return ok


def own_square(median_px: float, cell_px: int) -> int:
    """The side, in featuremap locations, of the square nearest in area to an instance of `median_px` pixels."""
    return max(1, round(median_px**0.5 / cell_px**0.5))


def _row(target: str, measured: str, bar: str, holds: bool) -> dict:
    return {"target": target, "measured": measured, "bar": bar, "holds": bool(holds)}


def _ratio(generated: float, real: float) -> float:
    return generated / real if real > 0 else float("inf")


def _share_rows(fractions: dict) -> list[dict]:
    """Per concept: the pixel share and, where the card has per-image numbers, the share of images it is in."""
    bar = {c: f"{PART_FLOOR if c in PARTS else 1 - SHARE_TOLERANCE:g}× … {1 + SHARE_TOLERANCE:g}×" for c in fractions}
    rows = []
    for c, ok in quality_bar(fractions).items():
        g, r = fractions[c]["generated"], fractions[c]["real"]
        rows.append(_row(f"{c} pixel share (generated / real)", f"{g:.4f} / {r:.4f} = {_ratio(g, r):.2f}×", bar[c], ok))
    if all("in_images_real" in row for row in fractions.values()):
        for c, ok in quality_bar(fractions, key="in_images").items():
            g, r = fractions[c]["in_images_generated"], fractions[c]["in_images_real"]
            measured = f"{g:.3f} / {r:.3f} = {_ratio(g, r):.2f}×"
            rows.append(_row(f"{c} share of images (generated / real)", measured, bar[c], ok))
    return rows


def _science_rows(fractions: dict, cell_px: int | None, transplants: list[dict] | None) -> list[dict]:
    """Geometry (median instance of the renders in cells of the probed layer) and the transplant probe at each
    object's own size."""
    rows = []
    for c, cells in MIN_CELLS.items() if cell_px else ():
        got = fractions[c].get("median_instance_real", 0.0) / cell_px
        rows.append(_row(f"{c} median instance (renders)", f"{got:.2f} cells", f"≥ {cells:g} cells", got >= cells))
    for c in TRANSPLANT_CONCEPTS if transplants else ():
        side = own_square(fractions[c].get("median_instance_real", 0.0), cell_px or 1)
        match = [t["reproduced"] for t in transplants if t["concept"] == c and t["region"] == side]
        got = match[0] if match else float("nan")
        target = f"{c} transplant at {side}×{side} cells (reproduced)"
        rows.append(_row(target, f"{got:.2f}", f"≥ {TRANSPLANT_TARGET:g}", got >= TRANSPLANT_TARGET))
    return rows


def targets(
    fid: float,
    fractions: dict,
    confidence: float,
    weights_mb: float,
    precision_recall: tuple[float, float] | None = None,
    cell_px: int | None = None,
    transplants: list[dict] | None = None,
) -> list[dict]:
    """The shipped generator's targets, one row each: what was measured, the target, and whether it holds."""
    pr = "" if precision_recall is None else " (precision {:.2f}, recall {:.2f})".format(*precision_recall)
    rows = [_row("world FID", f"{fid:.1f}{pr}", f"≤ {FID_TARGET:g}", fid <= FID_TARGET)]
    rows += _share_rows(fractions)
    conf_bar = f"≥ {CONFIDENCE_TARGET:g}"
    rows.append(_row("segmenter confidence on samples", f"{confidence:.3f}", conf_bar, confidence >= CONFIDENCE_TARGET))
    mb_bar = f"≤ {WEIGHTS_MB_TARGET:g} MB"
    rows.append(_row("generator weights", f"{weights_mb:.1f} MB", mb_bar, weights_mb <= WEIGHTS_MB_TARGET))
    return rows + _science_rows(fractions, cell_px, transplants)


def world_fid(images1: torch.Tensor, images2: torch.Tensor, features: str | None = None) -> float:
    """World FID with the shipped feature net, or the one in the safetensors file `features`."""
    return world_fidelity(images1, images2, features, prc=False)["fid"]


def world_fidelity(
    images1: torch.Tensor, images2: torch.Tensor, features: str | None = None, prc: bool = True
) -> dict[str, float]:
    """World FID and, with `prc`, torch-fidelity's precision and recall (Kynkäänniemi et al., k = 3) of images2
    against images1 in the same world features."""
    from lightning_gd.realism.fid import fidelity_metrics
    from lightning_gd.world.features import register_world_feature_extractor

    path = {} if features is None else {"feature_extractor_weights_path": str(features)}
    m = fidelity_metrics(to_uint8(images1), to_uint8(images2), register_world_feature_extractor(), prc=prc, **path)
    out = {"fid": m["frechet_inception_distance"]}
    if prc:  # torch-fidelity takes input1 as the generated set; here images1 is real, so the two swap
        out.update(precision=m["recall"], recall=m["precision"])
    return out

"""Reports of the context job: the insertion effect by background (paper Fig. 11's bar chart), the responsive
locations outlined on images (Fig. 11's boxes), and the tracing plot and heatmap (Fig. 17)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightning_gd.causal.context import bootstrap_by_group, region_masks
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.images import to_uint8
from lightning_gd.reports.figures import figure, save
from lightning_gd.reports.images import outline, save_rows
from lightning_gd.reports.pages import write_page
from lightning_gd.results import ContextResult
from lightning_gd.results.schema import finite_or_none


def gains(found: dict) -> torch.Tensor:
    """(B, L): the concept's share of each window gained by each insertion."""
    return (found["after"] - found["before"]) / found["window"].clamp(min=1)


GUARD_QUANTILE = 0.1


def guard_confidence(found: dict, quantile: float = GUARD_QUANTILE) -> float | None:
    """The realism guard's bar: the `quantile` of the segmenter's mean confidence over the concept's pixels in
    the windows where the generator drew it unedited (its own instances of the concept); None if none."""
    natural = found["confidence_before"][found["before"] > 0]
    return float(torch.quantile(natural.double(), quantile)) if natural.numel() else None


def summarize(found: dict, concepts: tuple[str, ...], respond: float, reps: int, seed: int) -> dict:
    """By background concept: mean effect (the concept's share of the window gained), its 95 % bootstrap
    interval over images, the share of concept-free windows where it appears — raw (any pixel labelled as the
    concept) and guarded (the segmenter at least as confident of those pixels as of the bottom `GUARD_QUANTILE`
    of the generator's own instances, so that a patch of the right colour does not count) — and the counts."""
    effect = gains(found)
    free = found["before"] == 0
    appeared = (found["after"] > 0) & free
    bar = guard_confidence(found)
    guarded = appeared & (found["confidence_after"] >= bar) if bar is not None else torch.zeros_like(appeared)
    stats = bootstrap_by_group(effect, found["background"], len(concepts), reps, seed)
    rows = {}
    for g, name in enumerate(concepts):
        in_group = found["background"] == g
        if not bool(in_group.any()):
            continue
        n_free = int((in_group & free).sum())
        rows[name] = {
            "effect": float(stats["mean"][g]),
            "ci": [float(stats["lo"][g]), float(stats["hi"][g])],
            "appear_rate": float(appeared[in_group & free].double().mean()) if n_free else None,
            "appear_rate_guarded": float(guarded[in_group & free].double().mean()) if n_free else None,
            "respond_rate": float((effect[in_group] >= respond).double().mean()),
            "count": int(stats["count"][g]),
            "count_free": n_free,
        }
    order = sorted(rows, key=lambda k: -rows[k]["effect"])
    overall = {
        "effect": float(effect.mean()),
        "appear_rate": float(appeared[free].double().mean()) if free.any() else None,
        "appear_rate_guarded": float(guarded[free].double().mean()) if free.any() else None,
        "guard_confidence": bar,
        "respond_rate": float((effect >= respond).double().mean()),
        "count": int(effect.numel()),
    }
    return {"by_background": {k: rows[k] for k in order}, "overall": overall}


def trace_summary(found: dict, respond: float) -> dict:
    """Per later layer, the mean normalised change for interventions with a visible effect and without; the
    last layer's change per insertion location, averaged over the images (the Fig. 17 heatmap)."""
    if not found["layers"]:
        return {}
    visible = gains(found) >= respond
    lines = {"visible": [], "not_visible": []}
    per_location = None
    for name in found["layers"]:
        scale = (found["magnitude"][name] / found["elements"][name]).clamp(min=1e-12)  # (C,)
        normalised = (found["change"][name] / scale).mean(-1)  # (B, L)
        lines["visible"].append(float(normalised[visible].mean()) if visible.any() else None)
        lines["not_visible"].append(float(normalised[~visible].mean()) if (~visible).any() else None)
        per_location = normalised.mean(0)  # the last layer's wins
    h, w = found["size"]
    heat = torch.full((h * w,), float("nan"))
    heat[found["locations"]] = per_location.float()
    return {
        "layers": list(found["layers"]),
        **lines,
        "heatmap": heat.view(h, w).tolist(),
        "visible_count": int(visible.sum()),
        "not_visible_count": int((~visible).sum()),
    }


def context_figure(doc: dict, path: Path | None = None, min_count: int = 20) -> bytes:
    """Left: the mean insertion effect by background with its 95 % interval over images; right: the share of
    concept-free windows where the concept appears. Backgrounds with fewer than `min_count` locations are left
    out (said in the title)."""
    rows = {k: v for k, v in doc["by_background"].items() if v["count"] >= min_count}
    names = list(rows)
    fig = figure(max(7.5, 0.9 * len(names) + 3), 3.6)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    values = [rows[k]["effect"] for k in names]
    lo = [max(0.0, rows[k]["effect"] - rows[k]["ci"][0]) for k in names]
    hi = [max(0.0, rows[k]["ci"][1] - rows[k]["effect"]) for k in names]
    ax.bar(range(len(names)), values, color="#3b75af")
    spread = [i for i in range(len(names)) if lo[i] + hi[i] > 0]  # no caps on zero-width intervals
    if spread:
        ax.errorbar(
            spread,
            [values[i] for i in spread],
            [[lo[i] for i in spread], [hi[i] for i in spread]],
            fmt="none",
            capsize=3,
            ecolor="#333333",
            lw=1,
        )
    ax.axhline(0, color="#999999", lw=0.8)
    ticks = [f"{k}\nn={rows[k]['count']}" for k in names]
    ax.set_xticks(range(len(names)), ticks, fontsize=8)
    tops = [v + h for v, h in zip(values, hi)] + [0.0]
    bottoms = [v - lo_ for v, lo_ in zip(values, lo)] + [0.0]
    span = max(tops) - min(bottoms) or 1.0
    ax.set_ylim(min(bottoms) - 0.08 * span, max(tops) + 0.08 * span)
    s = doc["settings"]
    ax.set_ylabel(f"{s['concept']}'s share of the window gained", fontsize=9)
    ax.set_title("mean effect (bars) and 95 % interval over images", fontsize=9)
    rates = [rows[k]["appear_rate"] or 0.0 for k in names]
    guarded = [rows[k].get("appear_rate_guarded") or 0.0 for k in names]
    ax2.bar([i - 0.2 for i in range(len(names))], rates, width=0.4, color="#f4a582", label="raw")
    ax2.bar([i + 0.2 for i in range(len(names))], guarded, width=0.4, color="#d62728", label="guarded (realism)")
    ax2.set_xticks(range(len(names)), names, fontsize=8, rotation=45, ha="right")
    ax2.set_ylim(0, max(rates + [0.01]) * 1.15)
    ax2.legend(fontsize=7, frameon=False)
    ax2.set_title(f"share of {s['concept']}-free windows where it appears", fontsize=9)
    for a in (ax, ax2):
        a.spines[["top", "right"]].set_visible(False)
    where = "one location" if s["region"] == 1 else f"a {s['region']}×{s['region']} region"
    left_out = len(doc["by_background"]) - len(names)
    note = f"; {left_out} background(s) with < {min_count} locations not shown" if left_out else ""
    fig.suptitle(
        f"inserting {s['top_n']} {s['concept']} units of {s['layer']} at {where}, by the background "
        f"there ({s['n']} images{note})",
        fontsize=10,
    )
    return save(fig, path)


def trace_figure(trace: dict, path: Path | None = None) -> bytes:
    """Mean normalised change per later layer, interventions with and without a visible effect (Fig. 17)."""
    fig = figure(5.0, 3.2)
    ax = fig.subplots()
    xs = range(len(trace["layers"]))
    for key, colour, label in (("visible", "#d62728", "visible effect"), ("not_visible", "#1f77b4", "no effect")):
        ys = [math.nan if v is None else v for v in trace[key]]
        ax.plot(xs, ys, "o-", color=colour, label=f"{label} (n={trace[key + '_count']})")
    ax.set_xticks(list(xs), trace["layers"])
    ax.set_ylim(0, None)
    ax.set_ylabel("mean |change| / mean |activation|")
    ax.set_title("how an insertion travels through the later layers", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return save(fig, path)


def heatmap_figure(trace: dict, path: Path | None = None) -> bytes:
    heat = np.array(trace["heatmap"], dtype=float)
    fig = figure(3.6, 3.2)
    ax = fig.subplots()
    im = ax.imshow(heat, cmap="magma", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, label="normalised change")
    unsampled = "; white: not sampled" if np.isnan(heat).any() else ""
    ax.set_title(f"change of {trace['layers'][-1]} by insertion location\n(mean over images{unsampled})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return save(fig, path)


@torch.no_grad()
def where_image(G: nn.Module, found: dict, settings: dict, respond: float, count: int, path: Path) -> list[int]:
    """Two rows: the `count` images with the most responsive insertion locations (the concept's share of the
    window grew by at least `respond`), and the same images with those locations outlined in yellow (Fig. 11's
    boxes). Returns the sample indices shown."""
    hits = gains(found) >= respond  # (B, L)
    order = torch.sort(hits.sum(1), descending=True, stable=True).indices[: min(count, len(hits))]
    if len(order) == 0:
        return []
    z = latents(order.tolist(), z_dim_of(G), settings["seed"]).to(device_of(G))
    images = to_uint8(G(z)).cpu()
    masks = region_masks(found["locations"], found["size"], settings["region"])  # (L, 1, h, w)
    cells = torch.nn.functional.interpolate(masks, size=images.shape[-2:], mode="nearest")[:, 0] > 0.5  # (L, H, W)
    marked = []
    for i, b in enumerate(order.tolist()):
        region = cells[hits[b]].any(0) if bool(hits[b].any()) else torch.zeros_like(cells[0])
        marked.append(outline(images[i : i + 1], region[None])[0])
    concept = settings["concept"]
    labels = ["generated", f"where inserting\n{concept} adds ≥ {respond:.0%}\nof the window\n(outlined)"]
    save_rows([images, torch.stack(marked)], path, scale=3, row_labels=labels)
    return order.tolist()


def write_context(
    out: Path,
    found: dict,
    seg,
    units: list[int],
    k_c: torch.Tensor,
    settings: dict,
    overlays: int,
    reps: int,
    G: nn.Module,
    tb_dir: Path | None,
) -> dict:
    concepts = tuple(seg.concepts)
    doc = {
        "settings": settings,
        "units": list(units),
        "k_c": [float(v) for v in k_c[units].tolist()],
        **summarize(found, concepts, settings["respond"], reps, settings["seed"]),
    }
    trace = trace_summary(found, settings["respond"])
    if trace:
        doc["trace"] = trace
    doc["where_images"] = where_image(G, found, settings, settings["respond"], overlays, out / "where.png")
    doc = finite_or_none(doc)  # the heatmap's unsampled cells as null: JSON has no NaN
    ContextResult.from_document(doc, "the context result").save(out)
    context_figure(doc, out / "context.png")
    if trace:
        trace_figure(trace, out / "trace.png")
        heatmap_figure(trace, out / "trace_heatmap.png")
    write_page(out)
    if tb_dir is not None:
        _tensorboard(doc, out, Path(tb_dir) / f"context-{settings['concept']}-{settings['layer']}")
    return doc


def _tensorboard(doc: dict, out: Path, run: Path) -> None:
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run)) as w:
        # one value per background: drawn along the step axis (step = the background's row in the table logged
        # beside it), so the run opens on two curves rather than a scatter of single dots
        rows = list(doc["by_background"].items())
        w.add_custom_scalars(
            {
                "context (step = background, see context/backgrounds)": {
                    "effect": ["Multiline", ["context/effect"]],
                    "appears": ["Multiline", ["context/appear_rate", "context/appear_rate_guarded"]],
                }
            }
        )
        table = ["| step | background | locations | effect | appears | guarded |", "|---|---|---|---|---|---|"]
        for step, (name, row) in enumerate(rows, start=1):
            w.add_scalar("context/effect", row["effect"], step)
            rates = [row.get(k) for k in ("appear_rate", "appear_rate_guarded")]
            for key, rate in zip(("appear_rate", "appear_rate_guarded"), rates):
                if rate is not None:  # a background with no concept-free window has no rate
                    w.add_scalar(f"context/{key}", rate, step)
            shown = ["-" if v is None else f"{v:.1%}" for v in rates]
            table.append(f"| {step} | {name} | {row['count']} | {row['effect']:.4f} | {shown[0]} | {shown[1]} |")
        w.add_text("context/backgrounds", "\n".join(table), 0)
        w.add_text("context/settings", json.dumps(doc["settings"]), 0)
        for png in ("context.png", "where.png", "trace.png", "trace_heatmap.png"):
            if (out / png).is_file():
                w.add_image(
                    f"context/{png[:-4]}", np.asarray(Image.open(out / png).convert("RGB")), 0, dataformats="HWC"
                )

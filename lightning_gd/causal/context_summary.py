"""From the insertion sums of every image and location (`context_module.measure_context`) to what the context
job stores: the effect by background with its bootstrap intervals and the realism guard (paper Fig. 11's bar
chart), the tracing summary (Fig. 17), and the images with the most responsive locations (Fig. 11's boxes), so
that its page is drawn from `context.json` and `context_images.safetensors` with no network."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lightning_gd.causal.context import bootstrap_by_group, region_masks
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.images import to_uint8
from lightning_gd.results import ContextResult
from lightning_gd.results.images import ContextImages
from lightning_gd.results.schema import finite_or_none

GUARD_QUANTILE = 0.1


def gains(found: dict) -> torch.Tensor:
    """(B, L): the concept's share of each window gained by each insertion."""
    return (found["after"] - found["before"]) / found["window"].clamp(min=1)


def guard_confidence(found: dict, quantile: float = GUARD_QUANTILE) -> float | None:
    """The realism guard's bar: the `quantile` of the segmenter's mean confidence over the concept's pixels in
    the windows where the generator drew it unedited (its own instances of the concept); None if none."""
    natural = found["confidence_before"][found["before"] > 0]
    return float(torch.quantile(natural.double(), quantile)) if natural.numel() else None


def summarize(found: dict, concepts: tuple[str, ...], respond: float, reps: int, seed: int) -> dict:
    """By background concept: mean effect (the concept's share of the window gained), its 95 % bootstrap
    interval over images, the share of concept-free windows where it appears — raw (any pixel labelled as the
    concept) and guarded (the segmenter at least as confident of those pixels as of the bottom `GUARD_QUANTILE`
    of the generator's own instances, so that a patch of the right colour does not count) — and the counts; with the
    insertion locations known, the guarded rate per featuremap row as well (`appear_by_row`)."""
    effect = gains(found)
    free = found["before"] == 0
    appeared = (found["after"] > 0) & free
    bar = guard_confidence(found)
    guarded = appeared & (found["confidence_after"] >= bar) if bar is not None else torch.zeros_like(appeared)
    stats = bootstrap_by_group(effect, found["background"], len(concepts), reps, seed)
    row_of = _location_rows(found)  # (B, L) the row of each insertion's square, or None
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
        if row_of is not None:
            rows[name]["appear_by_row"] = rate_by_row(guarded, in_group & free, row_of, found["size"][0])
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


def _location_rows(found: dict) -> torch.Tensor | None:
    """(B, L): the featuremap row of each insertion's square (its top row); None when `found` has no locations."""
    if "locations" not in found or "size" not in found:
        return None
    rows = torch.as_tensor(found["locations"]) // found["size"][1]  # (L,)
    return rows.view(1, -1).expand_as(found["background"])


def rate_by_row(hit: torch.Tensor, counted: torch.Tensor, row_of: torch.Tensor, h: int) -> list[float | None]:
    """Per featuremap row (0 … h−1), the share of the `counted` windows that are a `hit`; None for a row with none.
    `hit`, `counted` and `row_of` (each window's row) share one shape: (B, L) insertions here, (n, h, w) cells in
    the world's `stand_rates`.
    Tells an insertion the generator allows near the horizon from one it allows high in the sky."""
    out = []
    for r in range(h):
        here = counted & (row_of == r)
        out.append(float(hit[here].double().mean()) if bool(here.any()) else None)
    return out


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


@torch.no_grad()
def where_images(
    G: nn.Module, found: dict, seed: int, region: int, respond: float, count: int, z_dim: int | None = None
) -> tuple[list[int], ContextImages | None]:
    """The `count` images of the sample (z of `seed`) with the most responsive insertion locations (the concept's
    share of the window grew by at least `respond`), and the pixels of those locations in each: the sample
    indices and their `ContextImages` (None when no image is shown)."""
    hits = gains(found) >= respond  # (B, L)
    order = torch.sort(hits.sum(1), descending=True, stable=True).indices[: min(count, len(hits))]
    if len(order) == 0:
        return [], None
    z = latents(order.tolist(), z_dim_of(G, z_dim), seed).to(device_of(G))
    images = to_uint8(G(z)).cpu()  # (M, 3, H, W)
    masks = region_masks(found["locations"], found["size"], region)  # (L, 1, h, w)
    cells = F.interpolate(masks, size=images.shape[-2:], mode="nearest")[:, 0] > 0.5  # (L, H, W)
    regions = torch.stack([cells[hits[b]].any(0) for b in order.tolist()])  # (M, H, W); none: all False
    return order.tolist(), ContextImages(images, regions)


def context_result(
    found: dict,
    concepts: tuple[str, ...],
    units: list[int],
    k_c: torch.Tensor,
    settings: dict,
    reps: int,
    shown: list[int],
) -> ContextResult:
    """What `context.json` holds: the `settings`, the inserted `units` and their values `k_c` (of every unit of
    the layer), the effect by background with `reps` bootstrap resamples, the tracing summary when traced, and the
    sample indices of the images shown (`shown`); undefined values (NaN) as null."""
    doc = {
        "settings": settings,
        "units": list(units),
        "k_c": [float(v) for v in k_c[units].tolist()],
        **summarize(found, concepts, settings["respond"], reps, settings["seed"]),
    }
    trace = trace_summary(found, settings["respond"])
    if trace:
        doc["trace"] = trace
    doc["where_images"] = list(shown)
    return ContextResult.from_document(finite_or_none(doc), "the context result")

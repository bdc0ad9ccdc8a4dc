"""Where a concept can be inserted (paper §4.4, Fig. 11) and how an insertion travels downstream (§S-6.5, Fig. 17).

For every image of a sample and every featuremap location L (or a region of k×k locations starting at L), the
concept's causal units are set to k_c there (`interventions.insert`) and the generator finishes the image from
the edited featuremap (`f` only: `h(z)` runs once per image). In the location's window (its pixels and one
location's margin, as the ACE evaluation measures insertion) we count the concept's pixels before and after. The
result is grouped by the *background* at the location before insertion: the segmenter's majority label in the
window. Where the concept appears on some backgrounds and never on others, the generator vetoes it by context.

Tracing: the same interventions, with every later layer recorded; per layer, the mean absolute change of each
channel divided by that channel's mean absolute activation over the sample (so layers of different scale
compare), averaged over channels and positions. Comparing interventions with a visible effect to those without
shows where a vetoed insertion dies out.

Every location of an image is edited in one batched `f` pass per chunk of (image, location) pairs; sums are
kept per image, so the bootstrap resamples images.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from lightning_gd.causal.interventions import intervene, unit_indicator
from lightning_gd.errors import InvalidValue, OutOfRange
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of
from lightning_gd.models.hooks import TraceDict
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit


def region_masks(locations: torch.Tensor, size: tuple[int, int], region: int = 1) -> torch.Tensor:
    """(L,) flat featuremap locations → (L, 1, h, w) masks of the region × region square whose top-left corner
    is the location (clipped at the featuremap's edge)."""
    h, w = size
    if region < 1 or region > min(h, w):
        raise InvalidValue(f"region must be between 1 and {min(h, w)} locations for a {h}×{w} featuremap, got {region}")
    if locations.numel() and (locations.min() < 0 or locations.max() >= h * w):
        raise OutOfRange(f"locations must be in [0, {h * w}) for a {h}×{w} featuremap")
    ys, xs = (locations // w)[:, None, None], (locations % w)[:, None, None]
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = (rows >= ys) & (rows < ys + region) & (cols >= xs) & (cols < xs + region)
    return inside.float()[:, None]


def windows_of(masks: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(L, 1, h, w) featuremap masks → (L, H, W) bool image windows: the masked locations' pixels and one
    location's margin around them."""
    grown = F.max_pool2d(masks.float(), 3, stride=1, padding=1)
    return F.interpolate(grown, size=image_size, mode="nearest")[:, 0] > 0.5


def majority_labels(labels: torch.Tensor, windows: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """(B, H, W) labels, (L, H, W) windows → (B, L): the most frequent label in each window (ties: the lower
    concept index)."""
    onehot = F.one_hot(labels.flatten(1).clamp(min=0), num_concepts).float() * (labels.flatten(1) >= 0)[..., None]
    counts = torch.einsum("bpc,lp->blc", onehot, windows.flatten(1).float())  # (B, L, C)
    return counts.argmax(-1)


@dataclass
class InsertionSums:
    """Per image and location: the concept's pixels in the window before / after insertion (B, L), the
    segmenter's mean probability of the concept over those pixels before / after (B, L; 0 where there are none),
    the window's pixels (L,), the background label (B, L); with tracing, per later layer the per-channel mean
    absolute change (B, L, C_layer) and per-channel sums of the originals' absolute activations and their
    element counts."""

    before: torch.Tensor
    after: torch.Tensor
    confidence_before: torch.Tensor
    confidence_after: torch.Tensor
    window: torch.Tensor
    background: torch.Tensor
    change: dict[str, torch.Tensor] = field(default_factory=dict)
    magnitude: dict[str, torch.Tensor] = field(default_factory=dict)
    elements: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def insert_at_locations(
    split: LayerSplit,
    segmenter: Segmenter,
    z: torch.Tensor,
    units: list[int],
    k_c: torch.Tensor,
    concept_index: int,
    locations: torch.Tensor,
    region: int = 1,
    chunk: int = 256,
    trace: list[str] | None = None,
) -> InsertionSums:
    """Insert `units` at k_c at each of `locations` (a region × region square each) in every image of z (B,);
    one batched `f` pass per `chunk` edited images. `trace`: later layers to record (names in the generator)."""
    r = split.h(z)
    B, U, size = r.shape[0], r.shape[1], tuple(r.shape[-2:])
    masks = region_masks(locations.cpu(), size, region).to(r.device)  # (L, 1, h, w)
    L = masks.shape[0]
    alpha = unit_indicator(units, U, r.device)
    trace = list(trace or [])
    with TraceDict(split.generator, trace) if trace else contextlib.nullcontext() as tr:
        x = split.f(r, z)
        originals = {name: tr[name].output.float() for name in trace} if trace else {}
    # the labels are the probabilities' argmax, as `Segmenter.labels` is: one segmenter pass gives both
    probs = segmenter.probs(x)  # (B, C, H, W)
    labels = probs.argmax(1)  # (B, H, W)
    wins = windows_of(masks, tuple(labels.shape[-2:]))  # (L, H, W)
    is_c = labels == concept_index
    before, conf_before = _window_sums(is_c, probs[:, concept_index], wins)
    out = InsertionSums(
        before=before,
        after=torch.zeros(B, L, dtype=torch.float64, device=r.device),
        confidence_before=conf_before,
        confidence_after=torch.zeros(B, L, dtype=torch.float64, device=r.device),
        window=wins.flatten(1).sum(1).double(),
        background=majority_labels(labels, wins, len(segmenter.concepts)),
    )
    for name, a in originals.items():
        out.magnitude[name] = a.abs().sum((0, 2, 3)).double()
        out.elements[name] = float(a.shape[0] * a.shape[2] * a.shape[3])
        out.change[name] = torch.zeros(B, L, a.shape[1], dtype=torch.float64, device=r.device)
    pairs = torch.cartesian_prod(torch.arange(B), torch.arange(L)).to(r.device)  # (B·L, 2): image, location
    for part in pairs.split(chunk):
        b, loc = part[:, 0], part[:, 1]
        edited = intervene(r[b], alpha, masks[loc], k_c)
        with TraceDict(split.generator, trace) if trace else contextlib.nullcontext() as tr:
            x_e = split.f(edited, z[b])
        p_e = segmenter.probs(x_e)
        found = (p_e.argmax(1) == concept_index) & wins[loc]
        pixels = found.flatten(1).sum(1).double()
        out.after[b, loc] = pixels
        out.confidence_after[b, loc] = (p_e[:, concept_index] * found).flatten(1).sum(1).double() / pixels.clamp(min=1)
        for name in trace:
            delta = (tr[name].output.float() - originals[name][b]).abs().mean((2, 3))  # (chunk, C_layer)
            out.change[name][b, loc] = delta.double()
    return out


def _window_sums(is_c: torch.Tensor, p_c: torch.Tensor, wins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) the concept's pixels in each window and their mean probability of the concept (0 where none)."""
    pixels = torch.einsum("bp,lp->bl", is_c.flatten(1).double(), wins.flatten(1).double())
    mass = torch.einsum("bp,lp->bl", (p_c * is_c).flatten(1).double(), wins.flatten(1).double())
    return pixels, mass / pixels.clamp(min=1)


def later_layers(split: LayerSplit, candidates: list[str] | None = None) -> list[str]:
    """The generator's top-level children after the split layer that output featuremaps (B, C, h, w), found by
    one probe run; or the `candidates` given."""
    if candidates:
        return list(candidates)
    names = [name for name, _ in split.generator.named_children()]
    inner = getattr(split.generator, getattr(split.generator, "wraps", ""), None)
    if inner is not None:
        names = [name for name, _ in inner.named_children()]
    top = split.layer.split(".")[0]
    after = names[names.index(top) + 1 :] if top in names else []
    z = latents([0], split.z_dim, 0).to(device_of(split.generator))
    with TraceDict(split.generator, after) as tr, torch.no_grad():
        split.generator(z)
    return [n for n in after if isinstance(tr[n].output, torch.Tensor) and tr[n].output.ndim == 4]


def bootstrap_by_group(
    values: torch.Tensor, groups: torch.Tensor, num_groups: int, reps: int = 1000, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Mean of `values` (B, L) per group label (B, L), with a 95 % interval from resampling the B images.

    Returns mean (G,), count (G,), lo (G,), hi (G,) (NaN where a group is absent)."""
    onehot = F.one_hot(groups.long(), num_groups).double()  # (B, L, G)
    sums = torch.einsum("bl,blg->bg", values.double(), onehot)  # (B, G)
    counts = onehot.sum(1)  # (B, G)
    total = counts.sum(0)
    mean = sums.sum(0) / total.clamp(min=1)
    gen = torch.Generator().manual_seed(seed)
    B = values.shape[0]
    weights = torch.stack([torch.bincount(torch.randint(B, (B,), generator=gen), minlength=B) for _ in range(reps)])
    boot = (weights.double() @ sums.cpu()) / (weights.double() @ counts.cpu()).clamp(min=1e-12)  # (reps, G)
    boot = torch.where((weights.double() @ counts.cpu()) > 0, boot, torch.full_like(boot, float("nan")))
    lo, hi = torch.nanquantile(boot, 0.025, dim=0), torch.nanquantile(boot, 0.975, dim=0)
    absent = total == 0
    nan = torch.full_like(mean, float("nan"))
    return {
        "mean": torch.where(absent, nan, mean.cpu()),
        "count": total.cpu(),
        "lo": torch.where(absent.cpu(), nan.cpu(), lo),
        "hi": torch.where(absent.cpu(), nan.cpu(), hi),
    }

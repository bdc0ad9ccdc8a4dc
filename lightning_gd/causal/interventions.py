"""Interventions on a generator layer (paper §3.2, Eqs. 3 and 5; §S-6.4).

A probed layer splits the generator, `G = f ∘ h`, with featuremap `r = h(z)` of shape (B, U, h, w). Every
intervention here is one blend of `r` towards a target at a set of units and locations:

    r' = r + P ⊙ α ⊙ (target − r)

with `P` a (B or 1, 1, h, w) location mask in [0, 1] and `α` a (U,) unit weight in [0, 1]:
- ablation (Eq. 3, `x_a`): target 0, α the 0/1 indicator of the units;
- insertion (Eq. 3, `x_i`): target `k_c`, the same indicator;
- partial ablation / insertion (Eq. 5, `x_a'`, `x_i'`): a continuous α.

`k_c` (§S-6.4) is each unit's mean activation where concept c is present, every featuremap location weighted
by the fraction of its image pixels that the segmenter labels c (`concept_means`).

The featuremap comes from `lightning_gd.models.split.LayerSplit`, which runs `h` once and `f` as often as needed.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lightning_gd.errors import InvalidValue, OutOfRange
from lightning_gd.latents import latent_batches
from lightning_gd.models.generators import device_of
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit

# ----------------------------------------------------------------------------------------------- the maths


def intervene(
    r: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """r + mask ⊙ α ⊙ (target − r): r (B, U, h, w), α (U,), mask (B or 1, 1, h, w), target (U,) or None (= 0)."""
    a = alpha.to(r)[None, :, None, None]  # (1, U, 1, 1)
    m = mask.to(r)
    if target is None:
        return r * (1 - m * a)
    return r + m * a * (target.to(r)[None, :, None, None] - r)


def ablate(r: torch.Tensor, units: torch.Tensor | list[int], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Set `units` to 0 at the locations of `mask` (default: everywhere)."""
    return intervene(r, unit_indicator(units, r.shape[1], r.device), _everywhere(r, mask))


def insert(
    r: torch.Tensor, units: torch.Tensor | list[int], k_c: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Set `units` to k_c (U,) at the locations of `mask` (default: everywhere)."""
    return intervene(r, unit_indicator(units, r.shape[1], r.device), _everywhere(r, mask), k_c)


def _everywhere(r: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(1, 1, *r.shape[-2:], device=r.device) if mask is None else mask


def unit_indicator(units: torch.Tensor | list[int], num_units: int, device=None) -> torch.Tensor:
    """(U,) float: 1 at the listed unit indices, 0 elsewhere."""
    units = torch.as_tensor(units, dtype=torch.long).flatten()
    if units.numel() and (units.min() < 0 or units.max() >= num_units):
        raise OutOfRange(f"unit indices must be in [0, {num_units}); got {units.tolist()}")
    out = torch.zeros(num_units, device=device)
    out[units.to(out.device)] = 1.0
    return out


def location_mask(locations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,) flat featuremap locations → (B, 1, h, w) one-hot masks."""
    h, w = size
    if locations.numel() and (locations.min() < 0 or locations.max() >= h * w):
        raise OutOfRange(f"locations must be in [0, {h * w}) for a {h}×{w} featuremap")
    mask = torch.zeros(locations.shape[0], h * w, device=locations.device)
    mask[torch.arange(locations.shape[0], device=locations.device), locations] = 1.0
    return mask.view(-1, 1, h, w)


def coverage(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per featuremap location, the mean of a per-pixel map over its pixels: (B, H, W) → (B, h, w).

    With a 0/1 concept mask this is the fraction of each location covered by the concept; with soft
    probabilities it is the concept's mean probability there."""
    return F.adaptive_avg_pool2d(scores[:, None].float(), size)[:, 0]


def at_locations(maps: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps read at (B,) flat locations → (B,)."""
    return maps.flatten(1).gather(1, locations[:, None].long())[:, 0]


# ----------------------------------------------------------------------------------------------- k_c


@torch.no_grad()
def concept_means(
    split: LayerSplit,
    segmenter: Segmenter,
    concept: str,
    n: int = 500,
    seed: int = 0,
    batch_size: int = 50,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """k_c (§S-6.4): per unit, Σ w·r / Σ w over n samples and all locations, w = the fraction of each
    featuremap location covered by c. Also returns `presence`, the mean fraction of the images' pixels
    labelled c. Raises if c never occurs in the sample."""
    concept_index = segmenter.concept_index(concept)
    dev = device_of(split.generator)
    weighted, total, pixels, count = None, 0.0, 0.0, 0
    desc = f"k_c: mean activation where {concept} is"
    batches = latent_batches(n, split.z_dim, seed, batch_size, dev, desc, progress, sharded=False)
    for idx, z in batches:
        r = split.h(z).float()
        mask = segmenter.labels(split.f(r, z)) == concept_index  # (B, H, W)
        w = coverage(mask, tuple(r.shape[-2:]))  # (B, h, w)
        part = torch.einsum("buhw,bhw->u", r.double(), w.double())
        weighted = part if weighted is None else weighted + part
        total += float(w.double().sum())
        pixels += float(mask.double().mean((1, 2)).sum())
        count += len(idx)
    if total == 0:
        raise InvalidValue(
            f"concept '{concept}' does not occur in {n} samples of the generator (seed {seed}); "
            "choose another concept or a larger sample"
        )
    return {"k_c": (weighted / total).float().cpu(), "presence": torch.tensor(pixels / count)}


# ----------------------------------------------------------------------------------------------- insertion constants

INSERTION_HELP = (
    "the value inserted units are set to: 'k_c' (the paper's per-unit mean where the concept is, §S-6.4), "
    "'k_c*M' (M times it, e.g. k_c*4) or 'qP' (the unit's P-quantile over all locations of a sample, e.g. q0.999)"
)


def parse_insertion(spec: str) -> tuple[str, float]:
    """'k_c' → ("k_c", 1.0); 'k_c*4' → ("k_c", 4.0); 'q0.999' → ("quantile", 0.999). Anything else is an error
    that lists the forms."""
    text = str(spec).strip()
    try:
        if text == "k_c":
            return "k_c", 1.0
        if text.startswith("k_c*"):
            m = float(text[4:])
            if m > 0 and m != float("inf"):
                return "k_c", m
        elif text.startswith("q"):
            q = float(text[1:])
            if 0 < q < 1:
                return "quantile", q
    except ValueError:
        pass
    raise InvalidValue(f"insertion {spec!r} is not understood: {INSERTION_HELP}")


@torch.no_grad()
def activation_quantiles(
    split: LayerSplit, q: float, n: int = 200, seed: int = 0, batch_size: int = 50, progress: bool = True
) -> torch.Tensor:
    """(U,) each unit's q-quantile over every location of n samples (seeded as `latent_batches`)."""
    dev = device_of(split.generator)
    maps = [
        split.h(z).float().transpose(0, 1).flatten(1).cpu()  # (U, B·h·w)
        for _, z in latent_batches(n, split.z_dim, seed, batch_size, dev, f"unit {q}-quantiles", progress, False)
    ]
    values = torch.cat(maps, 1)
    limit = 1 << 24  # torch.quantile refuses larger inputs: thin the sample evenly
    if values.numel() > limit:
        values = values[:, :: -(-values.numel() // limit)]
    return torch.quantile(values, q, dim=1)


def insertion_values(
    spec: str, k_c: torch.Tensor, split: LayerSplit | None = None, n: int = 200, progress: bool = True
) -> torch.Tensor:
    """The (U,) values that insertion sets units to under `spec` (`parse_insertion`); a quantile needs `split`."""
    kind, value = parse_insertion(spec)
    if kind == "k_c":
        return k_c * value
    if split is None:
        raise InvalidValue(f"insertion {spec!r} needs the generator's layer to measure its quantiles")
    return activation_quantiles(split, value, n=n, progress=progress).to(k_c)


def partial_effect(
    split: LayerSplit,
    segmenter: Segmenter,
    concept_index: int,
    alpha: torch.Tensor,
    k_c: torch.Tensor,
    z: torch.Tensor,
    r: torch.Tensor,
    locations: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """δ_α (Eq. 5) and its two terms on a batch: the mean soft presence of c at the insertion locations after a
    partial insertion, minus the same at the ablation locations after a partial ablation. locations (B, 2): each
    sample's ablation and insertion location (−1: none), flat in r's (h, w)."""
    size = tuple(r.shape[-2:])
    a, i = locations[:, 0] >= 0, locations[:, 1] >= 0
    pa, pi = locations[a, 0], locations[i, 1]
    ra = intervene(r[a], alpha, location_mask(pa, size))
    ri = intervene(r[i], alpha, location_mask(pi, size), k_c)
    x = split.f(torch.cat([ra, ri]), torch.cat([z[a], z[i]]))
    s = at_locations(coverage(segmenter.probs(x)[:, concept_index], size), torch.cat([pa, pi]))
    zero = alpha.sum() * 0
    ablation = s[: len(pa)].mean() if len(pa) else zero
    insertion = s[len(pa) :].mean() if len(pi) else zero
    return {"delta": insertion - ablation, "ablation": ablation, "insertion": insertion}

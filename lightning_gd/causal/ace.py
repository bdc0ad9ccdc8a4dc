"""Average causal effects of unit sets (paper Eq. 4, Figs. 4 and 9), measured on held-out z with hard labels.

- **Ablation**, P = the whole image: the share of concept c's pixels that disappears when the top-n units of
  a ranking are set to 0, `1 − Σ_z |s_c(x_a)| / Σ_z |s_c(x)|`, for n along a curve and for several rankings
  (α, IoU, random). The pixel counts of every other concept are kept too, so side effects are visible.
- **Insertion**, P = one uniformly sampled featuremap location per image: the units are set to k_c there and
  c is measured in the image window under P (the location's pixels and one location's margin around them):
  `(E[s_c(x_i) in W] − E[s_c(x) in W]) / E[s_c(x)]`, normalised by c's mean pixel share as Eq. 4 normalises;
  a local effect against the unedited image, not Eq. 4's insertion-minus-ablation δ.

The per-batch functions return sums, so any batch split or DDP sharding adds up to the same result; `evaluate`
is the Trainer-free entry point (the Lightning `test` of `CausalSearch` uses the same functions).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lightning_gd.causal.interventions import intervene, location_mask, unit_indicator
from lightning_gd.dissection.stats import TensorSum
from lightning_gd.latents import latent_batches, rng
from lightning_gd.models.generators import device_of
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit

DEFAULT_SIZES = (1, 2, 5, 10, 15, 20, 30, 40, 60, 80, 100, 128, 192, 256, 384, 512)


def curve_sizes(
    num_units: int, sizes: tuple[int, ...] | list[int] | None = None, top_n: int | None = None
) -> list[int]:
    """The n of the ablation curve: the given sizes (default `DEFAULT_SIZES`) up to U, plus top_n, ending at U."""
    extra = {num_units} | ({min(top_n, num_units)} if top_n else set())
    return sorted({int(n) for n in (sizes or DEFAULT_SIZES) if 0 < int(n) <= num_units} | extra)


def random_rankings(num_units: int, draws: int, seed: int) -> torch.Tensor:
    """(draws, U) random unit orders, fixed by the seed (the `random_units` stream)."""
    gen = rng(seed, stream="random_units")
    return torch.stack([torch.randperm(num_units, generator=gen) for _ in range(draws)])


def with_random(orders: list[torch.Tensor], draws: int, location_seed: int) -> torch.Tensor:
    """(R, U): the given unit orders, then `draws` random ones (from `location_seed`)."""
    num_units = orders[0].numel()
    return torch.cat([torch.stack([o.long().cpu() for o in orders]), random_rankings(num_units, draws, location_seed)])


def sum_metrics(num_concepts: int, num_rankings: int, num_sizes: int) -> dict[str, TensorSum]:
    """One summing metric per key of `batch_sums`, shaped for C concepts, R rankings and N curve sizes."""
    shapes = {
        "original": (num_concepts,),
        "ablated": (num_rankings, num_sizes, num_concepts),
        "after": (num_rankings,),
        "appeared": (num_rankings,),
        **{key: () for key in ("before", "window", "count")},
    }
    return {key: TensorSum(shape) for key, shape in shapes.items()}


def _label_counts(labels: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """(B, H, W) labels → (C,) pixel counts (float64, on the CPU whatever the networks' device)."""
    return torch.bincount(labels.flatten(), minlength=num_concepts).double().cpu()


@torch.no_grad()
def ablation_counts(
    split: LayerSplit,
    segmenter: Segmenter,
    z: torch.Tensor,
    rankings: torch.Tensor,
    sizes: list[int],
    r: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts per concept of the original images (C,) and of the images with the top-n units of each
    ranking ablated everywhere (R, N, C). rankings: (R, U) unit orders, best first."""
    r = split.h(z) if r is None else r
    C = len(segmenter.concepts)
    original = _label_counts(segmenter.labels(split.f(r, z)), C)
    everywhere = torch.ones(1, 1, *r.shape[-2:], device=r.device)
    out = torch.zeros(rankings.shape[0], len(sizes), C, dtype=torch.float64)
    for i, order in enumerate(rankings):
        for j, n in enumerate(sizes):
            alpha = unit_indicator(order[:n], r.shape[1], r.device)
            out[i, j] = _label_counts(segmenter.labels(split.f(intervene(r, alpha, everywhere), z)), C)
    return original, out


def window_mask(locations: torch.Tensor, size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """(B,) featuremap locations → (B, H, W) boolean image windows: the location's pixels and one location's
    margin on each side."""
    cells = location_mask(locations, size)  # (B, 1, h, w)
    cells = F.max_pool2d(cells, 3, stride=1, padding=1)  # the 3×3 locations around P
    return F.interpolate(cells, size=image_size, mode="nearest")[:, 0] > 0.5


@torch.no_grad()
def insertion_sums(
    split: LayerSplit,
    segmenter: Segmenter,
    z: torch.Tensor,
    rankings: torch.Tensor,
    n: int,
    k_c: torch.Tensor,
    locations: torch.Tensor,
    concept_index: int,
    r: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Insert the top-n units of each ranking at one location per image (B,) and sum c's pixels in the window
    under it, before (scalar) and after (R,); the windows' pixel total; the number of images where c newly
    appears there (R,); the number of images."""
    r = split.h(z) if r is None else r
    size = tuple(r.shape[-2:])
    x = split.f(r, z)
    window = window_mask(locations.to(r.device), size, tuple(x.shape[-2:]))  # (B, H, W)
    before = (segmenter.labels(x) == concept_index) & window
    mask = location_mask(locations.to(r.device), size)
    after_sum = torch.zeros(rankings.shape[0], dtype=torch.float64)
    appeared = torch.zeros(rankings.shape[0], dtype=torch.float64)
    for i, order in enumerate(rankings):
        alpha = unit_indicator(order[:n], r.shape[1], r.device)
        after = (segmenter.labels(split.f(intervene(r, alpha, mask, k_c), z)) == concept_index) & window
        after_sum[i] = after.sum().double()
        appeared[i] = ((after.flatten(1).sum(1) > 0) & (before.flatten(1).sum(1) == 0)).sum().double()
    return {  # float64 on the CPU, whatever the networks' device
        "before": before.sum().double().cpu(),
        "after": after_sum,
        "appeared": appeared,
        "window": window.sum().double().cpu(),
        "count": torch.tensor(float(len(z)), dtype=torch.float64),
    }


def uniform_locations(indices: torch.Tensor, size: tuple[int, int], seed: int) -> torch.Tensor:
    """One featuremap location per sample, uniform, fixed by (seed, sample index)."""
    out = []
    for i in indices.tolist():
        out.append(int(torch.randint(size[0] * size[1], (1,), generator=rng(seed, i, "test_locations"))))
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def batch_sums(
    split: LayerSplit,
    segmenter: Segmenter,
    z: torch.Tensor,
    indices: torch.Tensor,
    orders: torch.Tensor,
    sizes: list[int],
    top_n: int,
    k_c: torch.Tensor,
    concept_index: int,
    location_seed: int,
) -> dict[str, torch.Tensor]:
    """Everything `summarize` needs from one batch, as sums over its samples (`indices`): the pixel counts of
    the originals (C,) and of each ranking's ablations (R, N, C), and the insertion sums of the top-n units at
    one uniform location per sample."""
    r = split.h(z)
    original, ablated = ablation_counts(split, segmenter, z, orders, sizes, r)
    locations = uniform_locations(indices.cpu(), tuple(r.shape[-2:]), location_seed)
    inserted = insertion_sums(split, segmenter, z, orders, top_n, k_c, locations, concept_index, r)
    return {"original": original, "ablated": ablated, **inserted}


def summarize(
    concepts: tuple[str, ...],
    concept: str,
    names: list[str],
    sizes: list[int],
    original: torch.Tensor,
    ablated: torch.Tensor,
    insertion: dict[str, torch.Tensor],
    top_n: int,
) -> dict:
    """JSON-ready results from the summed counts. `names` labels the rankings (R,); those starting with
    `random` are reported as mean ± std over the draws."""
    c = concepts.index(concept)  # the concept's index
    rand = [i for i, name in enumerate(names) if name.startswith("random")]
    fixed = [i for i, name in enumerate(names) if not name.startswith("random")]
    # (R, N); NaN when c never occurs in the sample (nothing to remove)
    removed = 1 - ablated[..., c] / original[c] if original[c] > 0 else torch.full(ablated.shape[:2], float("nan"))
    presence = float(original[c] / original.sum())
    # insertion: c's share of the windows' pixels gained, over c's share of all pixels (Eq. 4's normalisation)
    gain = (insertion["after"] - insertion["before"]) / insertion["window"].clamp(min=1)  # (R,)
    ace = gain / presence if presence > 0 else torch.full_like(gain, float("nan"))
    appeared = insertion["appeared"] / insertion["count"].clamp(min=1)

    def spread(values: torch.Tensor) -> tuple[float, float]:
        return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0

    curves = {names[i]: removed[i].tolist() for i in fixed}
    j = sizes.index(top_n) if top_n in sizes else None
    at_n = {names[i]: float(removed[i, j]) for i in fixed} if j is not None else {}
    side = {}
    if j is not None:
        side = {
            names[i]: {
                other: float(ablated[i, j, o] / original[o] - 1) if original[o] > 0 else None
                for o, other in enumerate(concepts)
            }
            for i in fixed
        }
    inserted = {names[i]: {"ace": float(ace[i]), "appeared": float(appeared[i])} for i in fixed}
    if rand:
        curves["random_mean"] = removed[rand].mean(0).tolist()
        curves["random_std"] = (removed[rand].std(0) if len(rand) > 1 else torch.zeros(len(sizes))).tolist()
        if j is not None:
            at_n["random_mean"], at_n["random_std"] = spread(removed[rand, j])
        inserted["random"] = {"ace": spread(ace[rand])[0], "ace_std": spread(ace[rand])[1]}
        inserted["random"]["appeared"] = float(appeared[rand].mean())
    return {
        "concept": concept,
        "presence": presence,
        "sizes": sizes,
        "ablation_removed": curves,
        "top_n": top_n,
        "removed_at_top_n": at_n,
        "side_effects_at_top_n": side,
        "insertion_at_top_n": inserted,
    }


def evaluate(
    generator: torch.nn.Module,
    segmenter: Segmenter,
    layer: str,
    concept: str,
    rankings: dict[str, torch.Tensor],
    k_c: torch.Tensor,
    n: int = 200,
    seed: int = 102,
    batch_size: int = 25,
    top_n: int = 20,
    sizes: list[int] | None = None,
    random_draws: int = 3,
    z_dim: int | None = None,
    progress: bool = True,
    location_seed: int = 0,
) -> dict:
    """Ablation curves and insertion effects of the given unit rankings ({name: (U,) order, best first}) plus
    `random_draws` random orders, on n held-out samples of z (seed). Returns `summarize`'s dict. With the
    same seeds it gives what `CausalSearch`'s `test` gives (insertion locations and random orders from
    `location_seed`)."""
    split = LayerSplit(generator, layer, z_dim)
    concept_index = segmenter.concept_index(concept)
    dev = device_of(generator)
    num_units = next(iter(rankings.values())).numel()
    sizes = curve_sizes(num_units, sizes, top_n)
    names = [*rankings, *[f"random{i}" for i in range(random_draws)]]
    orders = with_random(list(rankings.values()), random_draws, location_seed)
    sums: dict[str, torch.Tensor] = {}
    bar = f"ACE of {concept} units (held-out z)"
    batches = latent_batches(n, split.z_dim, seed, batch_size, dev, bar, progress, sharded=False)
    for idx, z in batches:
        top = min(top_n, num_units)
        part = batch_sums(split, segmenter, z, idx, orders, sizes, top, k_c, concept_index, location_seed)
        sums = {key: sums[key] + value if key in sums else value for key, value in part.items()}
    return summarize(tuple(segmenter.concepts), concept, names, sizes, sums["original"], sums["ablated"], sums, top_n)

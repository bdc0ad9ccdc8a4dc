"""The units' top images, generated once when a dissection runs and stored beside its results
(`lightning_gd.results.images.UnitImages`): the pages and TensorBoard draw them from there, never from the
generator again."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.dissection.results import Dissection, LayerDissection
from lightning_gd.latents import latents
from lightning_gd.models.generators import device_of, eval_mode
from lightning_gd.models.hooks import TraceDict
from lightning_gd.models.images import to_uint8
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.results.images import UnitImages


@torch.no_grad()
def unit_strips(
    generator: nn.Module,
    result: LayerDissection,
    z_dim: int,
    seed: int,
    k: int | None = None,
    units: list[int] | None = None,
    batch_size: int = 64,
) -> dict[int, torch.Tensor]:
    """For each unit, its top-k images (k, 3, H, W) uint8, dimmed outside the region above its threshold."""
    units = list(range(result.num_units)) if units is None else units
    k = min(k or result.top_indices.shape[1], result.top_indices.shape[1])
    shown = {result.layer: (result, units, result.top_indices[units, :k])}
    found = unit_images(generator, shown, z_dim, seed, batch_size)
    return {u: found.strip(result.layer, row) for row, u in enumerate(units) if found.count(result.layer, row)}


@torch.no_grad()
def unit_images(
    generator: nn.Module,
    shown: dict[str, tuple[LayerDissection, list[int], torch.Tensor]],
    z_dim: int,
    seed: int,
    batch_size: int = 64,
    segmenter: Segmenter | None = None,
    vocabulary: Vocabulary | None = None,
    z_of: Callable[[list[int]], torch.Tensor] | None = None,
) -> UnitImages:
    """Generate the images `shown` per layer — (result, R units, (R, k) sample indices, -1 = none) — once each,
    and keep every shown unit's featuremap on each of its images. Row r of a layer is the r-th of its units.
    With `segmenter` and the dissection's `vocabulary`, also each image's segmentation (`vocabulary_labels`).
    `z_of`: the z of a list of sample indices as the generator takes them (default: the seeded latents of `seed`
    on the generator's device)."""
    samples = sorted({int(i) for _, _, idx in shown.values() for i in idx.flatten().tolist() if i >= 0})
    pos = {i: n for n, i in enumerate(samples)}
    slots = {layer: idx.clone().apply_(lambda i: pos.get(i, -1)) for layer, (_, _, idx) in shown.items()}
    dev = device_of(generator)
    images: list[torch.Tensor] = []
    segmentations: list[torch.Tensor] = []
    maps: dict[str, torch.Tensor] = {}
    layers = list(shown)
    with eval_mode(generator):  # a generator in train mode would update its BatchNorm statistics here
        for start in range(0, len(samples), batch_size):
            with TraceDict(generator, layers) as tr:
                batch = samples[start : start + batch_size]
                x = generator(z_of(batch) if z_of is not None else latents(batch, z_dim, seed).to(dev))
            images.append(to_uint8(x.float()).cpu())
            if segmenter is not None and vocabulary is not None:
                segmentations.append(vocabulary_labels(vocabulary, segmenter.labels(x).cpu()))
            for layer, (_, units, idx) in shown.items():
                fm = tr[layer].output.float().cpu()  # (b, U, h, w)
                if layer not in maps:
                    maps[layer] = torch.zeros(*idx.shape, *fm.shape[-2:])  # (R, k, h, w)
                sel = (slots[layer] >= start) & (slots[layer] < start + len(fm))  # (R, k) slots in this batch
                rows, cols = sel.nonzero(as_tuple=True)
                maps[layer][rows, cols] = fm[slots[layer][rows, cols] - start, torch.tensor(units)[rows]]
    size = tuple(images[0].shape[-2:]) if images else (0, 0)
    return UnitImages(
        torch.tensor(samples, dtype=torch.long),
        torch.cat(images) if images else torch.zeros(0, 3, *size, dtype=torch.uint8),
        slots,
        {layer: maps.get(layer, torch.zeros(*idx.shape, 0, 0)) for layer, (_, _, idx) in shown.items()},
        {layer: result.thresholds[units].float() for layer, (result, units, _) in shown.items()},
        torch.cat(segmentations) if segmentations else None,
        {layer: unit_pool(result)[units] for layer, (result, units, _) in shown.items()},
    )


def unit_pool(result: LayerDissection) -> torch.Tensor:
    """(U, C): each unit's own top samples, best first (-1 = none): its candidates, else its top images."""
    return (result.candidates if result.candidates is not None else result.top_indices).long()


def vocabulary_labels(vocabulary: Vocabulary, labels: torch.Tensor) -> torch.Tensor:
    """Segmenter labels (B, H, W) → (B, G, H, W) int16: per label group, the vocabulary index of each pixel's
    concept (-1 = none), so a part concept is found in its own group as an object is in group 0."""
    groups = vocabulary.label_groups(labels)
    out = [torch.where(g >= 0, g + offset, -1) for g, offset in zip(groups, vocabulary.offsets)]
    return torch.stack(out, 1).to(torch.int16)


def shown_images(
    generator: nn.Module, diss: Dissection, z_dim: int, k: int | None = None, segmenter: Segmenter | None = None
) -> UnitImages:
    """The browser's top images of every unit of every layer (`LayerDissection.shown_images`: distinct between
    units where possible), each sample generated once; with the dissection's `segmenter`, their segmentations too
    (the evidence the browser shows beside each label), taken now so the report never runs a network again."""
    shown = {}
    for layer, res in diss.layers.items():
        shown[layer] = (res, list(range(res.num_units)), res.shown_images(k))
    return unit_images(generator, shown, z_dim, diss.settings.seed, segmenter=segmenter, vocabulary=diss.vocabulary)


def no_images(diss: Dissection) -> UnitImages:
    """A `UnitImages` without images (a dissection written without its generator)."""
    empty = {layer: torch.full((res.num_units, 0), -1, dtype=torch.long) for layer, res in diss.layers.items()}
    return UnitImages(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
        empty,
        {layer: torch.zeros(res.num_units, 0, *res.featuremap_size) for layer, res in diss.layers.items()},
        {layer: res.thresholds.float() for layer, res in diss.layers.items()},
        pools={layer: unit_pool(res) for layer, res in diss.layers.items()},
    )

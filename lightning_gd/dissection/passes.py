"""The passes of a dissection over seeded samples: thresholds (`quantile_thresholds`, `iqr_thresholds`) and the
IoU tallies (`tally`). Each pass is a loop over this rank's share of the samples feeding `torchmetrics` metrics,
so sharding the sample over DDP ranks gives the same result."""

from __future__ import annotations

import torch
from torch import nn

from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.dissection.featuremaps import sparse_labels, sparse_upsample, upsample
from lightning_gd.dissection.results import DissectSettings, LayerDissection
from lightning_gd.dissection.stats import IoUTally, TopK, UnitConceptHistogram, UnitHistogram
from lightning_gd.latents import latent_batches
from lightning_gd.models.generators import device_of
from lightning_gd.models.hooks import TraceDict
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import check_featuremap


def _segmented_batches(
    generator: nn.Module,
    segmenter: Segmenter,
    layers: list[str],
    n: int,
    seed: int,
    z_dim: int,
    batch_size: int,
    desc: str,
    progress: bool,
):
    """Yield (sample indices, featuremaps per layer, segmenter labels) for this rank's share of n samples."""
    for idx, z in latent_batches(n, z_dim, seed, batch_size, device_of(generator), desc, progress):
        with TraceDict(generator, layers) as tr:
            x = generator(z)
        yield idx, {layer: check_featuremap(tr[layer].output, layer) for layer in layers}, segmenter.labels(x)


@torch.no_grad()
def quantile_thresholds(
    generator: nn.Module,
    layers: list[str],
    s: DissectSettings,
    size: tuple[int, int],
    z_dim: int,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Pass 1 (quantile mode): the generator stops after the last traced layer; no segmenter."""
    hists: dict[str, UnitHistogram] = {}
    dev = device_of(generator)
    for idx, z in latent_batches(s.n, z_dim, s.seed, s.batch_size, dev, "thresholds (quantile)", progress):
        with TraceDict(generator, layers, stop=True) as tr:
            generator(z)
        for layer in layers:
            r = check_featuremap(tr[layer].output, layer)
            if layer not in hists:
                hists[layer] = UnitHistogram(r.shape[1]).to(dev)
            hists[layer].update(sparse_upsample(r, idx, size, s.stride))
    return {layer: h.quantile(s.q).cpu() for layer, h in hists.items()}


@torch.no_grad()
def iqr_thresholds(
    generator: nn.Module,
    segmenter: Segmenter,
    vocab: Vocabulary,
    layers: list[str],
    s: DissectSettings,
    z_dim: int,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Pass 1 (iqr mode), on the validation sample `iqr_seed`: per unit, the I/H-maximising threshold of the
    concept for which that ratio is highest."""
    hists: dict[str, UnitConceptHistogram] = {}
    per_pixel: dict[str, float] = {}  # featuremap locations per sampled pixel: the effective sample size
    C = len(vocab.names)
    batches = _segmented_batches(
        generator, segmenter, layers, s.iqr_n, s.iqr_seed, z_dim, s.batch_size, "thresholds (iqr)", progress
    )
    for idx, maps, labels in batches:
        groups = [sparse_labels(g, idx, s.stride) for g in vocab.label_groups(labels)]
        for layer, r in maps.items():
            if layer not in hists:
                hists[layer] = UnitConceptHistogram(r.shape[1], C).to(r.device)
            sampled = sparse_upsample(r, idx, tuple(labels.shape[-2:]), s.stride)  # (B, U, H/s, W/s)
            per_pixel[layer] = min(1.0, r.shape[-2] * r.shape[-1] / (sampled.shape[-2] * sampled.shape[-1]))
            hists[layer].update(sampled, groups, vocab.offsets)
    out = {}
    for layer, h in hists.items():
        thresholds, ratio = h.compute(per_pixel[layer], s.q)  # (U, C)
        out[layer] = thresholds.gather(1, ratio.argmax(1, keepdim=True)).squeeze(1).float().cpu()
    return out


@torch.no_grad()
def tally(
    generator: nn.Module,
    segmenter: Segmenter,
    vocab: Vocabulary,
    layers: list[str],
    thresholds: dict[str, torch.Tensor],
    s: DissectSettings,
    z_dim: int,
    progress: bool = True,
) -> dict[str, LayerDissection]:
    """Pass 2: pooled IoU of every unit with every concept, and the top-k images per unit."""
    tallies: dict[str, IoUTally] = {}
    tops: dict[str, TopK] = {}
    fsize: dict[str, tuple[int, int]] = {}
    C = len(vocab.names)
    batches = _segmented_batches(
        generator, segmenter, layers, s.n, s.seed, z_dim, s.batch_size, "IoU tallies", progress
    )
    for idx, maps, labels in batches:
        groups = vocab.label_groups(labels)
        for layer, r in maps.items():
            if layer not in tallies:
                tallies[layer] = IoUTally(r.shape[1], C).to(r.device)
                tops[layer] = TopK(r.shape[1], s.top_k).to(r.device)
                fsize[layer] = tuple(r.shape[-2:])
            tallies[layer].update(upsample(r, tuple(labels.shape[-2:])), thresholds[layer], groups, vocab.offsets)
            tops[layer].update(r.amax((2, 3)), idx)
    out = {}
    for layer in layers:
        scores, top_idx = tops[layer].compute()
        out[layer] = LayerDissection(
            layer, thresholds[layer], tallies[layer].compute().cpu(), top_idx.cpu(), scores.cpu(), fsize[layer]
        )
    return out

"""Dissection (paper §3.1, Eq. 2): which concept, if any, each unit of a generator layer matches.

The recipe, in the paper's order:
1. thresholds — `quantile`: each unit's top-(1−q) level of its upsampled activations over the whole sample;
   `iqr`: per unit, the threshold maximising I/H against its best concept, on a separate validation sample of z
   (one pass with the segmenter);
2. tallies — intersections and areas of the thresholded, upsampled featuremaps with every concept, pooled over
   the sample (`counts`). In quantile mode,
   thresholds and tallies come from the same single pass of generator and segmenter (`bands`);
3. IoU, a label per unit (best concept, its category, IoU), interpretable units, top-k images per unit.

Each stage is cached under a key of everything it depends on (`lightning_gd.cache.Cache`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lightning_gd import allocator
from lightning_gd.cache import Cache, fingerprint
from lightning_gd.dissection.concepts import Vocabulary, vocabulary
from lightning_gd.dissection.passes import BAND_BELOW, BAND_FLOOR, BAND_Z, iqr_thresholds, quantile_pass, tally
from lightning_gd.dissection.results import Dissection, DissectSettings, LayerDissection
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import is_rank_zero, latents
from lightning_gd.models.generators import device_of, eval_mode, z_dim_of
from lightning_gd.models.hooks import resolve_layer
from lightning_gd.models.segmenters import Segmenter


def dissect(
    generator: nn.Module,
    layers: str | list[str],
    segmenter: Segmenter,
    settings: DissectSettings | None = None,
    z_dim: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    **overrides,
) -> Dissection:
    """Dissect one or several layers of `generator` against `segmenter`'s concepts.

    `settings` (or keyword overrides of its fields, e.g. `n=500, threshold="iqr"`) fixes the sample and the
    method; `cache_dir` makes finished stages reusable across runs with the same settings and networks.
    """
    allocator.tune()  # large blocks reused from the heap, not mapped again per batch (`allocator`)
    layers = [layers] if isinstance(layers, str) else list(layers)
    s = _settings(generator, layers, settings, overrides)
    z_dim = z_dim_of(generator, z_dim)
    vocab = vocabulary(segmenter, list(s.parts) if isinstance(s.parts, tuple) else s.parts)
    cache = Cache(cache_dir, write=is_rank_zero())
    with eval_mode(generator, segmenter):
        size = _segmentation_size(generator, segmenter, z_dim, s.seed)
        if s.stride > min(size):
            raise InvalidValue(
                f"stride {s.stride} is larger than the {size[0]}×{size[1]} segmentation: use ≤ {min(size)}"
            )
        key = {
            "generator": fingerprint(generator),
            "segmenter": fingerprint(segmenter),
            **_threshold_key(s, size, vocab),
        }

        tally_key = {**key, "mode": s.threshold, "tally_n": s.n, "tally_seed": s.seed, "top_k": s.top_k,
                     "candidates": s.candidates, "top_score": "relative_peak"}  # fmt: skip
        if s.threshold == "quantile":  # 1 and 2 in one pass

            def one_pass() -> dict[str, dict[str, torch.Tensor]]:
                found = quantile_pass(generator, segmenter, vocab, layers, s, z_dim, progress)
                return {layer: {"thresholds": d.thresholds, **_tensors(d)} for layer, d in found.items()}

            tallies = cache.per_label("dissect_quantile", {**tally_key, "vocab": vocab.names}, one_pass, layers)
            thresholds = {layer: tallies[layer]["thresholds"] for layer in layers}
        else:

            def thresholds_pass() -> dict[str, dict[str, torch.Tensor]]:  # 1. a threshold per unit
                found = iqr_thresholds(generator, segmenter, vocab, layers, s, z_dim, progress)
                return {layer: {"thresholds": t} for layer, t in found.items()}

            stored = cache.per_label(f"thresholds_{s.threshold}", key, thresholds_pass, layers)
            thresholds = {layer: stored[layer]["thresholds"] for layer in layers}

            def tally_pass() -> dict[str, dict[str, torch.Tensor]]:  # 2. pooled IoU and top images per unit
                found = tally(generator, segmenter, vocab, layers, thresholds, s, z_dim, progress)
                return {layer: _tensors(d) for layer, d in found.items()}

            tallies = cache.per_label("tally", {**tally_key, "vocab": vocab.names}, tally_pass, layers)
    # 3. labels come from the IoU table (`Dissection.units`)
    return Dissection(s, vocab, {layer: _layer(layer, thresholds[layer], tallies[layer]) for layer in layers})


def _settings(
    generator: nn.Module, layers: list[str], settings: DissectSettings | None, overrides: dict
) -> DissectSettings:
    if not layers:
        raise InvalidValue("no layers to dissect")
    for layer in layers:
        resolve_layer(generator, layer)  # unknown names fail here, listing the close ones
    if settings is None:
        settings = DissectSettings(layers=tuple(layers), **overrides)
    elif overrides or settings.layers != tuple(layers):
        settings = DissectSettings(**{**asdict(settings), **overrides, "layers": tuple(layers)})
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        ranks = torch.distributed.get_world_size()
        if settings.n < ranks or (settings.threshold == "iqr" and settings.iqr_n < ranks):
            raise InvalidValue(f"n={settings.n} samples cannot be shared by {ranks} ranks")
    return settings


@torch.no_grad()
def _segmentation_size(generator: nn.Module, segmenter: Segmenter, z_dim: int, seed: int) -> tuple[int, int]:
    x0 = generator(latents([0], z_dim, seed).to(device_of(generator)))
    return tuple(segmenter.labels(x0).shape[-2:])


def _threshold_key(s: DissectSettings, size: tuple[int, int], vocab: Vocabulary) -> dict:
    if s.threshold == "quantile":
        return {"n": s.n, "seed": s.seed, "q": s.q, "stride": s.stride, "size": size, "warmup": s.warmup,
                "bins": s.bins, "band": [BAND_Z, BAND_FLOOR, BAND_BELOW]}  # fmt: skip
    return {"n": s.iqr_n, "seed": s.iqr_seed, "stride": s.stride, "vocab": vocab.names, "q": s.q}  # q: fallback


def _tensors(d: LayerDissection) -> dict[str, torch.Tensor]:
    return {
        "iou": d.iou,
        "top_indices": d.top_indices,
        "top_scores": d.top_scores,
        "candidates": d.candidates,
        "featuremap_size": torch.tensor(d.featuremap_size),
    }


def _layer(layer: str, thresholds: torch.Tensor, t: dict[str, torch.Tensor]) -> LayerDissection:
    size = tuple(int(v) for v in t["featuremap_size"])
    return LayerDissection(layer, thresholds, t["iou"], t["top_indices"], t["top_scores"], size, t["candidates"])

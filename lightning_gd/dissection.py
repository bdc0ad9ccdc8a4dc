"""Dissection (paper §3.1, Eq. 2): which concept, if any, each unit of a generator layer matches.

The recipe, in the paper's order:
1. thresholds — `quantile`: each unit's top-(1−q) level of its upsampled activations (one pass that
   stops the generator right after the layer); `iqr`: per unit, the threshold maximising I/H against
   its best concept, on a separate validation sample of z (one pass with the segmenter);
2. tallies — one pass of generator and segmenter: upsample r to the segmentation size, threshold, and
   pool intersections and areas over the whole sample (a unit×concept intersection is one matmul);
3. IoU, a label per unit (best concept, its category, IoU), interpretable units, top-k images per unit.

Every stage is a set of `torchmetrics` metrics, so sharding the sample over DDP ranks gives the same result,
and each finished stage is cached in an atomically written file keyed by everything it depends on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric
from tqdm.auto import tqdm

from lightning_gd.concepts import Vocabulary, vocabulary
from lightning_gd.generators import device_of, eval_mode, latents, z_dim_of
from lightning_gd.hooks import TraceDict, resolve_layer
from lightning_gd.io import save_atomic
from lightning_gd.segmenters import Segmenter
from lightning_gd.stats import IoUTally, UnitConceptHistogram, UnitHistogram

THRESHOLD_MODES = ("quantile", "iqr")


@dataclass(frozen=True)
class DissectSettings:
    """Everything a dissection result depends on (besides the two networks)."""

    layers: tuple[str, ...]
    n: int = 1000
    seed: int = 0
    batch_size: int = 50
    threshold: str = "quantile"
    q: float = 0.99
    iqr_n: int = 500
    iqr_seed: int = 1
    stride: int = 4
    parts: bool | tuple[str, ...] = False
    iou_threshold: float = 0.05
    top_k: int = 10

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_MODES:
            raise ValueError(f"unknown threshold mode '{self.threshold}'; choose one of {', '.join(THRESHOLD_MODES)}")
        if not 0.0 < self.q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {self.q}")
        if self.n < 1 or self.batch_size < 1 or self.stride < 1 or self.top_k < 1:
            raise ValueError("n, batch_size, stride and top_k must be positive")
        if self.threshold == "iqr" and self.iqr_seed == self.seed:
            raise ValueError("the IQR threshold must be chosen on a separate sample: iqr_seed must differ from seed")


@dataclass
class LayerDissection:
    layer: str
    thresholds: torch.Tensor  # (U,) one threshold per unit
    iou: torch.Tensor  # (U, C) pooled IoU
    top_indices: torch.Tensor  # (U, k) sample indices of the images that activate each unit most
    top_scores: torch.Tensor  # (U, k) their max activation
    featuremap_size: tuple[int, int] = (0, 0)

    @property
    def num_units(self) -> int:
        return self.iou.shape[0]

    def units(
        self, vocab: Vocabulary, iou_threshold: float = 0.05, unrealistic: frozenset[int] = frozenset()
    ) -> list[dict]:
        """Per unit: best concept (label), its category, IoU, threshold, and whether it is interpretable.

        Units in `unrealistic` (the realism filter, §S-6.3) keep their IoU but are never interpretable."""
        best_iou, best = self.iou.max(1)
        return [
            {
                "unit": u,
                "label": vocab.names[int(best[u])],
                "category": vocab.categories[int(best[u])],
                "iou": float(best_iou[u]),
                "threshold": float(self.thresholds[u]),
                "interpretable": bool(best_iou[u] > iou_threshold) and u not in unrealistic,
                "realistic": u not in unrealistic,
            }
            for u in range(self.num_units)
        ]


@dataclass
class Dissection:
    settings: DissectSettings
    vocabulary: Vocabulary
    layers: dict[str, LayerDissection] = field(default_factory=dict)
    unrealistic: dict[str, frozenset[int]] = field(default_factory=dict)  # per layer, left out of the labels

    def units(self, layer: str) -> list[dict]:
        return self.layers[layer].units(
            self.vocabulary, self.settings.iou_threshold, self.unrealistic.get(layer, frozenset())
        )

    def filter_unrealistic(self, layer: str, unit_fid: torch.Tensor | list[float], max_fid: float) -> list[int]:
        """The realism filter (§S-6.3): leave units whose per-unit FID exceeds `max_fid` out of the labels."""
        unit_fid = torch.as_tensor(unit_fid, dtype=torch.float64)
        if layer not in self.layers:
            raise KeyError(f"no dissection of layer '{layer}'; dissected: {', '.join(self.layers)}")
        if unit_fid.numel() != self.layers[layer].num_units:
            raise ValueError(
                f"per-unit FID has {unit_fid.numel()} units but layer '{layer}' has {self.layers[layer].num_units}"
            )
        dropped = [u for u in range(unit_fid.numel()) if float(unit_fid[u]) > max_fid]
        self.unrealistic[layer] = frozenset(dropped)
        return dropped

    def summary(self, layer: str) -> dict:
        """Interpretable units, distinct concepts, mean IoU of interpretable units, counts per concept."""
        units = [u for u in self.units(layer) if u["interpretable"]]
        per_concept: dict[str, int] = {}
        for u in units:
            per_concept[u["label"]] = per_concept.get(u["label"], 0) + 1
        return {
            "layer": layer,
            "units": self.layers[layer].num_units,
            "interpretable": len(units),
            "distinct_concepts": len(per_concept),
            "mean_iou": sum(u["iou"] for u in units) / len(units) if units else 0.0,
            "per_concept": dict(sorted(per_concept.items(), key=lambda kv: -kv[1])),
            "unrealistic": sorted(self.unrealistic.get(layer, frozenset())),
        }


# ----------------------------------------------------------------------------------------------- sampling


def shard(n: int) -> range:
    """This rank's sample indices (all of them without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return range(torch.distributed.get_rank(), n, torch.distributed.get_world_size())
    return range(n)


def _is_rank_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def sample_offsets(indices: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image pixel offsets (oy, ox) ∈ [0, stride)² of the sparse grid, fixed by the sample index."""
    k = indices % (stride * stride)
    return k // stride, k % stride


def _sparse_grid(
    indices: torch.Tensor, size: tuple[int, int], stride: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows (B, H/s) and columns (B, W/s) of each image's sparse grid."""
    oy, ox = sample_offsets(indices.to(device), stride)
    ys = oy[:, None] + stride * torch.arange(size[0] // stride, device=device)[None, :]
    xs = ox[:, None] + stride * torch.arange(size[1] // stride, device=device)[None, :]
    return ys, xs


def sparse_upsample(r: torch.Tensor, indices: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """The values F.interpolate(r, size, bilinear) takes at pixels (oy + stride·a, ox + stride·b) of each image:
    (B, U, h, w) → (B, U, H/stride, W/stride), without materialising the full upsampled map."""
    if stride == 1:
        return upsample(r, size)
    ys, xs = _sparse_grid(indices, size, stride, r.device)
    gy = (2 * ys.to(r.dtype) + 1) / size[0] - 1  # pixel centres in grid_sample's align_corners=False coordinates
    gx = (2 * xs.to(r.dtype) + 1) / size[1] - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # (B, H/s, W/s, 2)
    return F.grid_sample(r, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sparse_labels(labels: torch.Tensor, indices: torch.Tensor, stride: int) -> torch.Tensor:
    """Labels (B, H, W) at the same sparse pixels as `sparse_upsample`."""
    if stride == 1:
        return labels
    ys, xs = _sparse_grid(indices, tuple(labels.shape[-2:]), stride, labels.device)
    return labels[torch.arange(labels.shape[0], device=labels.device)[:, None, None], ys[:, :, None], xs[:, None, :]]


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation as F.interpolate(align_corners=False) computes it."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), i0] += 1 - w1
    m[torch.arange(n_out), i1] += w1
    return m.to(device=device, dtype=dtype)


def upsample(r: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """r↑: (B, U, h, w) → (B, U, H, W), bilinear (identity when the sizes already agree).

    Bilinear interpolation is separable, so it is two small matmuls, A_h · r · A_wᵀ; on a CPU this is several
    times faster than F.interpolate (which converts memory layouts) and equal to it to float rounding."""
    if tuple(r.shape[-2:]) == tuple(size):
        return r
    a_h = interpolation_matrix(r.shape[-2], size[0], r.device, r.dtype)  # (H, h)
    a_w = interpolation_matrix(r.shape[-1], size[1], r.device, r.dtype)  # (W, w)
    return torch.matmul(torch.matmul(a_h, r), a_w.T)  # (B, U, H, w) → (B, U, H, W)


def _featuremap(output, layer: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"layer '{layer}' must output a featuremap (B, units, h, w) to be dissected; got {shape}")
    if not torch.isfinite(output).all():
        raise ValueError(f"layer '{layer}' produced NaN or Inf activations")
    return output.float()


class TopK(Metric):
    """The k samples with the largest score per unit; states gather across DDP ranks and are re-ranked."""

    full_state_update = False

    def __init__(self, num_units: int, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("values", torch.full((k, num_units), -float("inf")), dist_reduce_fx="cat")
        self.add_state("indices", torch.full((k, num_units), -1, dtype=torch.long), dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, indices: torch.Tensor) -> None:
        """scores (B, U) for samples `indices` (B,)."""
        vals = torch.cat([self.values, scores.float()])
        idx = torch.cat([self.indices, indices.to(self.indices)[:, None].expand_as(scores)])
        # ties broken by the smaller sample index, so any batch split or rank count picks the same samples
        self.values, self.indices = _topk_stable(vals, idx, self.k)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        # under DDP, torchmetrics stacks the ranks' tensor states (world, k, U) before the "cat": flatten them
        U = self.values.shape[-1]
        vals, idx = _topk_stable(self.values.reshape(-1, U), self.indices.reshape(-1, U), self.k)
        return vals.T, idx.T  # (U, k)


def _topk_stable(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(idx, dim=0, stable=True)
    vals, idx = vals.gather(0, order), idx.gather(0, order)
    top = torch.argsort(vals, dim=0, descending=True, stable=True)[:k]
    return vals.gather(0, top), idx.gather(0, top)


# ----------------------------------------------------------------------------------------------- passes


def _batches(indices: range, batch_size: int, desc: str, progress: bool):
    idx = torch.tensor(list(indices), dtype=torch.long)
    chunks = list(idx.split(batch_size))
    return tqdm(chunks, desc=desc, disable=not (progress and _is_rank_zero()), leave=False)


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
    dev = device_of(generator)
    for idx in _batches(shard(n), batch_size, desc, progress):
        with TraceDict(generator, layers) as tr:
            x = generator(latents(idx, z_dim, seed).to(dev))
        yield idx, {layer: _featuremap(tr[layer].output, layer) for layer in layers}, segmenter.labels(x)


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
    for idx in _batches(shard(s.n), s.batch_size, "thresholds (quantile)", progress):
        with TraceDict(generator, layers, stop=True) as tr:
            generator(latents(idx, z_dim, s.seed).to(dev))
        for layer in layers:
            r = _featuremap(tr[layer].output, layer)
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
    C = len(vocab.names)
    batches = _segmented_batches(
        generator, segmenter, layers, s.iqr_n, s.iqr_seed, z_dim, s.batch_size, "thresholds (iqr)", progress
    )
    for idx, maps, labels in batches:
        groups = [sparse_labels(g, idx, s.stride) for g in vocab.label_groups(labels)]
        for layer, r in maps.items():
            if layer not in hists:
                hists[layer] = UnitConceptHistogram(r.shape[1], C).to(r.device)
            hists[layer].update(sparse_upsample(r, idx, tuple(labels.shape[-2:]), s.stride), groups, vocab.offsets)
    out = {}
    for layer, h in hists.items():
        thresholds, ratio = h.compute()  # (U, C)
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


# ----------------------------------------------------------------------------------------------- caching


def fingerprint(module: nn.Module) -> str:
    """A content hash of a module's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha1(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def stage_key(stage: str, layer: str, payload: dict) -> str:
    blob = json.dumps({"stage": stage, "layer": layer, **payload}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- recipe


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
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("no layers to dissect")
    for layer in layers:
        resolve_layer(generator, layer)  # unknown names fail here, listing the close ones
    if settings is None:
        settings = DissectSettings(layers=tuple(layers), **overrides)
    elif overrides or settings.layers != tuple(layers):
        settings = DissectSettings(**{**asdict(settings), **overrides, "layers": tuple(layers)})
    s = settings
    z_dim = z_dim_of(generator, z_dim)
    vocab = vocabulary(segmenter, list(s.parts) if isinstance(s.parts, tuple) else s.parts)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if s.n < torch.distributed.get_world_size() or (
            s.threshold == "iqr" and s.iqr_n < torch.distributed.get_world_size()
        ):
            raise ValueError(f"n={s.n} samples cannot be shared by {torch.distributed.get_world_size()} ranks")
    with eval_mode(generator, segmenter):
        with torch.no_grad():
            x0 = generator(latents([0], z_dim, s.seed).to(device_of(generator)))
        size = tuple(segmenter.labels(x0).shape[-2:])

        ids = {"generator": fingerprint(generator), "segmenter": fingerprint(segmenter)}
        threshold_keys = {
            "quantile": {"n": s.n, "seed": s.seed, "q": s.q, "stride": s.stride, "size": size},
            "iqr": {"n": s.iqr_n, "seed": s.iqr_seed, "stride": s.stride, "vocab": vocab.names},
        }[s.threshold]
        cache = Path(cache_dir) if cache_dir is not None else None

        def cached(stage: str, payload: dict, compute):
            paths = (
                {
                    lay: cache / f"{stage}-{lay}-{stage_key(stage, lay, {**ids, **payload})}.safetensors"
                    for lay in layers
                }
                if cache
                else {}
            )
            if cache and all(p.is_file() for p in paths.values()):
                return {lay: load_file(str(p)) for lay, p in paths.items()}
            result = compute()
            if cache and _is_rank_zero():
                for lay, tensors in result.items():
                    save_atomic(tensors, paths[lay])
            return result

        def thresholds_stage():
            if s.threshold == "quantile":
                t = quantile_thresholds(generator, layers, s, size, z_dim, progress)
            else:
                t = iqr_thresholds(generator, segmenter, vocab, layers, s, z_dim, progress)
            return {lay: {"thresholds": v} for lay, v in t.items()}

        t = cached(f"thresholds_{s.threshold}", threshold_keys, thresholds_stage)
        thresholds = {lay: v["thresholds"] for lay, v in t.items()}

        def tally_stage():
            res = tally(generator, segmenter, vocab, layers, thresholds, s, z_dim, progress)
            return {
                lay: {
                    "iou": d.iou,
                    "top_indices": d.top_indices,
                    "top_scores": d.top_scores,
                    "featuremap_size": torch.tensor(d.featuremap_size),
                }
                for lay, d in res.items()
            }

        tally_key = {
            **threshold_keys,
            "mode": s.threshold,
            "tally_n": s.n,
            "tally_seed": s.seed,
            "top_k": s.top_k,
            "vocab": vocab.names,
        }
        res = cached("tally", tally_key, tally_stage)
    out = Dissection(s, vocab)
    for lay in layers:
        r = res[lay]
        out.layers[lay] = LayerDissection(
            lay,
            thresholds[lay],
            r["iou"],
            r["top_indices"],
            r["top_scores"],
            tuple(int(v) for v in r["featuremap_size"]),
        )
    return out

"""The passes of a dissection, fed one batch at a time. Quantile mode needs one generator + segmenter pass
(`QuantilePass`: thresholds and IoU tallies together, `bands`); IQR mode chooses thresholds on its own validation
sample (`IqrThresholds`), then tallies the fixed masks (`FixedTally`). A pass holds `torchmetrics` metrics: their
states are summed over batches and, at `finish`, over DDP ranks, so any batch split and any number of ranks give
the same result. `DissectionModule` feeds them from a Trainer's loop (or the library's own) over the seeded
`LatentDataModule`: each batch is (sample indices (B,) on the host, featuremaps per layer (B, U, h, w), label
groups (B, H, W))."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lightning_gd.dissection.bands import BandTally, RangeTracker, ShareSpread, band_below
from lightning_gd.dissection.concepts import Vocabulary
from lightning_gd.dissection.featuremaps import sparse_labels, sparse_upsample
from lightning_gd.dissection.results import DissectSettings, LayerDissection
from lightning_gd.dissection.stats import TopK, UnitConceptHistogram, UnitHistogram, relative_peaks

Batch = tuple[torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]
# the featuremaps and label groups of these samples again, for these layers (the rare second pass)
Regenerate = Callable[[torch.Tensor, list[str]], Iterator[Batch]]


@dataclass(frozen=True)
class Shapes:
    """What one probe sample says about the networks: units and featuremap size per layer, segmentation size."""

    units: dict[str, int]
    featuremap: dict[str, tuple[int, int]]
    segmentation: tuple[int, int]


# the band starts BAND_Z standard errors of the unit's warm-up share below q (`bands.band_below`), at least
# BAND_FLOOR·(1 − q) and at most BAND_BELOW·(1 − q): the pixels above its start are the ones counted
BAND_Z, BAND_FLOOR, BAND_BELOW = 6.0, 0.5, 2.5
WHOLE_RANGE_BINS = 4096  # band bins of the (rare) second pass: its band is the whole range, so finer


def _rows(batch: Batch, keep: torch.Tensor) -> Batch:
    """The samples of a batch where `keep` (B,) (host bool) holds."""
    idx, maps, groups = batch
    if bool(keep.all()):
        return batch
    pos = keep.nonzero().squeeze(1)
    sub = {layer: r.index_select(0, pos.to(r.device)) for layer, r in maps.items()}
    return idx[pos], sub, [g.index_select(0, pos.to(g.device)) for g in groups]


class QuantilePass:
    """Quantile thresholds and IoU tallies from one generator + segmenter pass over the n samples.

    The warm-up samples 0 … m−1 (m = min(n, warmup), the same samples whatever the number of ranks) come first on
    every rank (the loaders give each rank its samples in ascending order); their strided activation histograms
    give each unit its warm-up q-quantile and a band around it, from level q − δ to 1 − (1 − q)/4. δ is 6
    standard errors of the mean of the unit's per-image shares above that quantile (`bands.band_below`; between
    0.5 and 2.5 times 1 − q): a unit that fires a little everywhere gets a narrow band, one that fires in a few
    images a deep one. Measured on the world ProGAN and the earlier DCGAN (all 16 layers, 3 seeds, N = 1,000):
    the pooled threshold sat at most 4.5 of those standard errors below q (0.0068 as a level at q = 0.99), and the
    median δ on its layer4 is 0.0125: 2.45 % of the pixels are counted, against 3.57 % with a fixed 2.5·(1 − q)
    band. The band opens when a rank meets its first sample past the warm-up (or at the end): the histograms are
    summed over the ranks then, so every rank gets the same band. The warm-up batches are kept until then
    (featuremaps and labels, not images) and tallied with the rest. Units whose pooled quantile falls outside the
    band are tallied again over a band spanning their whole range (a second pass, for those units only; rare)."""

    def __init__(self, shapes: Shapes, vocab: Vocabulary, s: DissectSettings, device: torch.device) -> None:
        self.shapes, self.vocab, self.s = shapes, vocab, s
        self.warm = min(s.n, s.warmup)
        self.hists = {layer: UnitHistogram(u).to(device) for layer, u in shapes.units.items()}
        self.tops = {layer: TopK(u, s.candidates).to(device) for layer, u in shapes.units.items()}
        self.ranges = {layer: RangeTracker(u).to(device) for layer, u in shapes.units.items()}
        self.bands: dict[str, BandTally] | None = None
        self.kept: list[Batch] = []
        self.seen: list[torch.Tensor] = []  # this rank's sample indices, for the second pass

    def update(self, idx: torch.Tensor, maps: dict[str, torch.Tensor], groups: list[torch.Tensor]) -> None:
        self.seen.append(idx)
        warm = idx < self.warm
        if self.bands is not None:
            if bool(warm.any()):
                raise RuntimeError(
                    f"warm-up samples {idx[warm].tolist()} arrived after later ones: the quantile pass needs each "
                    "rank's samples in ascending order (as LatentDataModule's loaders give them)"
                )
            self._tally(idx, maps, groups)
            return
        if bool(warm.any()):
            w_idx, w_maps, _ = _rows((idx, maps, groups), warm)
            for layer, r in w_maps.items():
                self.hists[layer].update(sparse_upsample(r, w_idx, self.shapes.segmentation, self.s.stride))
        self.kept.append((idx, maps, groups))
        if not bool(warm.all()):
            self._open_bands()

    def _open_bands(self) -> None:
        self.bands = {layer: self._band(layer) for layer in self.hists}
        for batch in self.kept:
            self._tally(*batch)
        self.kept = []

    def _band(self, layer: str) -> BandTally:
        """One layer's band: from q − δ (δ from the spread of the kept warm-up samples' shares above the warm-up
        q-quantile, `bands.band_below`) to 1 − (1 − q)/4, both read off the warm-up histogram."""
        s, h = self.s, self.hists[layer]
        spread = ShareSpread(h.quantile(s.q)).to(h.counts.device)
        # the strided values are computed again rather than kept from the histogram's update: on a 256²
        # segmentation they would hold ~400 MB per layer and batch, against two cheap grid_samples here
        for idx, maps, _ in self.kept:
            w_idx, w_maps, _ = _rows((idx, {layer: maps[layer]}, []), idx < self.warm)
            spread.update(sparse_upsample(w_maps[layer], w_idx, self.shapes.segmentation, s.stride))
        below = band_below(*spread.compute(), s.q, BAND_Z, BAND_FLOOR, BAND_BELOW)
        lo, hi = h.quantile(s.q - below), h.quantile(1 - (1 - s.q) / 4)
        return BandTally(lo, torch.maximum(lo, hi), len(self.vocab.names), s.bins).to(lo.device)

    def _tally(self, idx: torch.Tensor, maps: dict[str, torch.Tensor], groups: list[torch.Tensor]) -> None:
        for layer, r in maps.items():
            self.bands[layer].update(r, groups, self.vocab.offsets)
            self.tops[layer].update(relative_peaks(r), idx)
            self.ranges[layer].update(r)

    def finish(self, regenerate: Regenerate) -> dict[str, LayerDissection]:
        """Per layer: thresholds, IoU and top images of the pooled sample (every rank's counts summed)."""
        if self.bands is None:  # every sample of this rank was a warm-up sample
            self._open_bands()
        out = {}
        for layer in self.shapes.units:
            thresholds, iou, missed = self.bands[layer].quantile_iou(self.s.q)
            if bool(missed.any()):  # the same units on every rank: the counts were summed over them
                redo = missed.nonzero().flatten()
                t2, iou2 = self._whole_range(layer, redo, regenerate)
                thresholds[redo], iou[redo] = t2.to(thresholds), iou2.to(iou)
            scores, top_idx = self.tops[layer].compute()
            out[layer] = LayerDissection.with_candidates(
                layer,
                thresholds.cpu(),
                iou.cpu(),
                top_idx.cpu(),
                scores.cpu(),
                self.shapes.featuremap[layer],
                self.s.top_k,
            )
        return out

    def _whole_range(self, layer: str, units: torch.Tensor, regenerate: Regenerate):
        """Thresholds and IoU of `units` from a band over their whole activation range [min, max]."""
        warnings.warn(
            f"{layer}: the warm-up band missed the top-{1 - self.s.q:.2%} threshold of {len(units)} unit(s) "
            f"({', '.join(map(str, units[:8].tolist()))}{', …' if len(units) > 8 else ''}); one more pass for them",
            stacklevel=4,
        )
        low, high = self.ranges[layer].compute()
        lo, hi = low[units], torch.maximum(low[units], high[units])
        tally = BandTally(lo, hi, len(self.vocab.names), WHOLE_RANGE_BINS).to(lo.device)
        seen = torch.cat(self.seen) if self.seen else torch.zeros(0, dtype=torch.long)
        for _, maps, groups in regenerate(seen, [layer]):
            tally.update(maps[layer][:, units.to(maps[layer].device)], groups, self.vocab.offsets)
        thresholds, iou, missed = tally.quantile_iou(self.s.q)
        if bool(missed.any()):  # cannot happen: a band over [min, max] holds every quantile
            raise RuntimeError(f"{layer}: no threshold found in the whole activation range of units {units[missed]}")
        return thresholds, iou


class IqrThresholds:
    """IQR mode's first pass, on the validation sample: per unit, the I/H-maximising threshold of the concept for
    which that ratio is highest (paper Eq. 2), from strided per-concept histograms."""

    def __init__(self, shapes: Shapes, vocab: Vocabulary, s: DissectSettings, device: torch.device) -> None:
        self.shapes, self.vocab, self.s = shapes, vocab, s
        C = len(vocab.names)
        H, W = shapes.segmentation
        sampled = (H // s.stride) * (W // s.stride)  # pixels `sparse_upsample` reads per image
        # no count can pass the pixels a unit is read at over the validation sample: int32 counts while they fit
        hists = {layer: UnitConceptHistogram(u, C, max_count=s.iqr_n * sampled) for layer, u in shapes.units.items()}
        self.hists = {layer: h.to(device) for layer, h in hists.items()}
        # featuremap locations per sampled pixel: the effective sample size of the significance test
        self.per_pixel = {layer: min(1.0, h * w / sampled) for layer, (h, w) in shapes.featuremap.items()}

    def update(self, idx: torch.Tensor, maps: dict[str, torch.Tensor], groups: list[torch.Tensor]) -> None:
        groups = [sparse_labels(g, idx, self.s.stride) for g in groups]
        for layer, r in maps.items():
            sampled = sparse_upsample(r, idx, self.shapes.segmentation, self.s.stride)  # (B, U, H/s, W/s)
            self.hists[layer].update(sampled, groups, self.vocab.offsets)

    def finish(self, regenerate: Regenerate | None = None) -> dict[str, torch.Tensor]:
        """Per layer, the thresholds (U,)."""
        out = {}
        for layer, h in self.hists.items():
            thresholds, ratio = h.compute(self.per_pixel[layer], self.s.q)  # (U, C)
            out[layer] = thresholds.gather(1, ratio.argmax(1, keepdim=True)).squeeze(1).float().cpu()
        return out


class FixedTally:
    """IQR mode's second pass: pooled IoU of every unit's fixed mask r↑ > t with every concept, and the top-k
    images per unit."""

    def __init__(
        self,
        shapes: Shapes,
        vocab: Vocabulary,
        s: DissectSettings,
        thresholds: dict[str, torch.Tensor],
        device: torch.device,
    ) -> None:
        self.shapes, self.vocab, self.s, self.thresholds = shapes, vocab, s, thresholds
        C = len(vocab.names)
        self.tallies = {layer: BandTally(t, t, C, bins=0).to(device) for layer, t in thresholds.items()}
        self.tops = {layer: TopK(u, s.candidates).to(device) for layer, u in shapes.units.items()}

    def update(self, idx: torch.Tensor, maps: dict[str, torch.Tensor], groups: list[torch.Tensor]) -> None:
        for layer, r in maps.items():
            self.tallies[layer].update(r, groups, self.vocab.offsets)
            self.tops[layer].update(relative_peaks(r), idx)

    def finish(self, regenerate: Regenerate | None = None) -> dict[str, LayerDissection]:
        out = {}
        for layer, tally in self.tallies.items():
            scores, top_idx = self.tops[layer].compute()
            out[layer] = LayerDissection.with_candidates(
                layer,
                self.thresholds[layer],
                tally.iou().cpu(),
                top_idx.cpu(),
                scores.cpu(),
                self.shapes.featuremap[layer],
                self.s.top_k,
            )
        return out

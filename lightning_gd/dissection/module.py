"""Dissection (paper §3.1) as a LightningModule over the frozen generator and segmenter, run by a Trainer over the
seeded `LatentDataModule`: `validate` chooses the `iqr` thresholds on the validation sample (`iqr_n` samples of
`iqr_seed`), `test` tallies the IoU on the test sample (`n` samples of `seed`; in `quantile` mode thresholds and
tallies come from this one pass). The statistics are torchmetrics metrics (`passes`) whose states are reduced
over the ranks of whatever strategy the Trainer runs, so `devices`, `num_nodes` and `strategy` change nothing in
the result. Each stage is cached under a key of everything it depends on (`lightning_gd.cache.Cache`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from pytorch_lightning import LightningModule
from torch import nn

from lightning_gd.cache import Cache, fingerprint
from lightning_gd.dissection.concepts import Vocabulary, vocabulary
from lightning_gd.dissection.passes import (
    BAND_BELOW,
    BAND_FLOOR,
    BAND_Z,
    Batch,
    FixedTally,
    IqrThresholds,
    QuantilePass,
    Shapes,
)
from lightning_gd.dissection.results import Dissection, DissectSettings, LayerDissection
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import LatentDataModule, is_rank_zero, latents
from lightning_gd.models.generators import device_of, z_dim_of
from lightning_gd.models.hooks import TraceDict, resolve_layer
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import check_featuremap


class DissectionModule(LightningModule):
    """Dissect `layers` of a frozen `generator` against a frozen `segmenter`'s concepts:

        module = DissectionModule(G, "layer4", seg, n=1000, threshold="iqr")
        data = module.datamodule()
        trainer.validate(module, data)  # iqr mode only: a threshold per unit, on the validation sample
        trainer.test(module, data)  # module.result: the `Dissection`, the same on every rank

    `lightning_gd.dissection.dissect` does this with or without a Trainer.

    Args:
        generator: the generator (its layers are hooked by name; never trained here).
        layers: the layer name(s) to dissect.
        segmenter: the segmenter whose concepts label the units.
        settings: the sample and the method (`DissectSettings`); keyword `overrides` replace its fields.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        cache_dir: where finished stages are stored and found again (None: no cache).
    """

    def __init__(
        self,
        generator: nn.Module,
        layers: str | list[str],
        segmenter: Segmenter,
        settings: DissectSettings | None = None,
        z_dim: int | None = None,
        cache_dir: str | Path | None = None,
        **overrides,
    ) -> None:
        super().__init__()
        # submodules, so that the Trainer puts them on its device and in its precision
        self.generator, self.segmenter = generator, segmenter
        layers = [layers] if isinstance(layers, str) else list(layers)
        self.settings = settings_for(generator, layers, settings, overrides)
        self.layers = list(self.settings.layers)
        self.z_dim = z_dim_of(generator, z_dim)
        parts = self.settings.parts
        self.vocab: Vocabulary = vocabulary(segmenter, list(parts) if isinstance(parts, tuple) else parts)
        self.cache_dir = cache_dir
        self.thresholds: dict[str, torch.Tensor] | None = None  # per layer (U,): after `validate` (iqr) or `test`
        self.result: Dissection | None = None  # after `test`
        self._shapes: Shapes | None = None
        self._keys: dict[str, dict] = {}
        self._pass: QuantilePass | IqrThresholds | FixedTally | None = None  # None: this stage came from the cache
        self._cache = Cache(None)

    def datamodule(self) -> LatentDataModule:
        """The seeded z: the test sample (`n` of `seed`) that is tallied and the validation sample (`iqr_n` of
        `iqr_seed`) that iqr mode chooses its thresholds on."""
        s = self.settings
        val_seed = s.iqr_seed if s.iqr_seed != s.seed else s.seed + 1  # quantile mode reads no validation sample
        return LatentDataModule(
            n_train=1,
            n_val=s.iqr_n,
            n_test=s.n,
            batch_size=s.batch_size,
            train_seed=max(s.seed, val_seed) + 1,
            val_seed=val_seed,
            test_seed=s.seed,
            z_dim=self.z_dim,
        )

    # ------------------------------------------------------------------------------------- the Trainer's hooks

    def on_validation_epoch_start(self) -> None:
        if self.settings.threshold != "iqr":
            raise InvalidValue("validate chooses iqr thresholds; quantile mode finds its thresholds in `test`")
        self._begin("thresholds")

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._feed(batch)

    def on_validation_epoch_end(self) -> None:
        self._end("thresholds")

    def on_test_epoch_start(self) -> None:
        self._begin("tally")

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._feed(batch)

    def on_test_epoch_end(self) -> None:
        self._end("tally")

    # ------------------------------------------------------------------------------------- stages

    def _begin(self, stage: str) -> None:
        """Look the stage up in the cache (every rank must find it) or start its pass."""
        self._check_ranks()
        if stage == "tally" and self.settings.threshold == "iqr" and self.thresholds is None:
            raise RuntimeError("iqr mode: run `validate` (the thresholds, on the validation sample) before `test`")
        if self._shapes is None:
            self._shapes = self._probe()
            self._keys = cache_keys(self.generator, self.segmenter, self.settings, self._shapes, self.vocab)
        self._cache = Cache(self.cache_dir, write=is_rank_zero())
        name, payload = self._stage_key(stage)
        stored = self._cache.load_labels(name, payload, self.layers)
        self._pass = None
        if stored is not None:
            self._keep(stage, stored)
            return
        if is_rank_zero():
            self._say_why_again(name)
        s, device = self.settings, device_of(self.generator)
        if stage == "thresholds":
            self._pass = IqrThresholds(self._shapes, self.vocab, s, device)
        elif s.threshold == "quantile":
            self._pass = QuantilePass(self._shapes, self.vocab, s, device)
        else:
            self._pass = FixedTally(self._shapes, self.vocab, s, self.thresholds, device)

    def _feed(self, batch: tuple) -> None:
        if self._pass is None:
            return
        idx, z = batch
        maps, labels = self._segment(z, self.layers)
        with torch.autocast(z.device.type, enabled=False):  # statistics in float32, whatever the Trainer's precision
            # the indices on the host: they steer the passes (a GPU is waited for per batch anyway, by `counts`)
            self._pass.update(idx.cpu(), maps, self.vocab.label_groups(labels))

    def _end(self, stage: str) -> None:
        if self._pass is None:
            return
        found = self._pass.finish(self._regenerate)
        self._pass = None
        if stage == "thresholds":
            stored = {layer: {"thresholds": t} for layer, t in found.items()}
        elif self.settings.threshold == "quantile":
            stored = {layer: {"thresholds": d.thresholds, **_tensors(d)} for layer, d in found.items()}
        else:
            stored = {layer: _tensors(d) for layer, d in found.items()}
        self._cache.save_labels(*self._stage_key(stage), stored)
        self._keep(stage, stored)

    def _keep(self, stage: str, stored: dict[str, dict[str, torch.Tensor]]) -> None:
        """Take a stage's tensors (computed or cached) as this module's thresholds or result."""
        with torch.inference_mode(False):  # a Trainer's inference mode: copies that the caller may use freely
            stored = {layer: {k: t.clone() for k, t in tensors.items()} for layer, tensors in stored.items()}
        if stage == "thresholds" or self.settings.threshold == "quantile":
            self.thresholds = {layer: stored[layer]["thresholds"] for layer in self.layers}
        if stage == "tally":
            layers = {layer: _layer(layer, self.thresholds[layer], stored[layer]) for layer in self.layers}
            self.result = Dissection(self.settings, self.vocab, layers)

    def _say_why_again(self, name: str) -> None:
        """One line when the cache holds this stage of these layers for other settings or networks only (a `dissect`
        of another n, say): the pass that follows can take minutes, and without the line it looks like a cache miss."""
        if self.cache_dir is None:
            return
        others = sorted(p for layer in self.layers for p in Path(self.cache_dir).glob(f"{name}-{layer}-*.safetensors"))
        if others:
            s = self.settings
            print(
                f"dissection of {', '.join(self.layers)}: the {len(others)} cached in {self.cache_dir} "
                f"{'is' if len(others) == 1 else 'are'} of other settings or networks (another n?); dissecting "
                f"{s.n:,} samples (seed {s.seed}, {s.threshold} thresholds) again",
                flush=True,
            )

    def _stage_key(self, stage: str) -> tuple[str, dict]:
        if stage == "thresholds":
            return f"thresholds_{self.settings.threshold}", self._keys["thresholds"]
        return ("dissect_quantile" if self.settings.threshold == "quantile" else "tally"), self._keys["tally"]

    def _check_ranks(self) -> None:
        s = self.settings
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        ranks = torch.distributed.get_world_size() if distributed else 1
        if s.n < ranks or (s.threshold == "iqr" and s.iqr_n < ranks):
            raise InvalidValue(f"n={s.n} samples cannot be shared by {ranks} ranks")

    # ------------------------------------------------------------------------------------- the networks

    @torch.no_grad()
    def _probe(self) -> Shapes:
        """Units and featuremap size per layer and the segmentation size, from sample 0 (a clear error for a
        layer that gives no featuremap, NaN or Inf, or a stride larger than the segmentation)."""
        maps, labels = self._segment(self._latents(torch.tensor([0]), self.settings.seed), self.layers)
        size = tuple(labels.shape[-2:])
        stride = self.settings.stride
        if stride > min(size):
            raise InvalidValue(
                f"stride {stride} is larger than the {size[0]}×{size[1]} segmentation: use ≤ {min(size)}"
            )
        units = {layer: r.shape[1] for layer, r in maps.items()}
        return Shapes(units, {layer: tuple(r.shape[-2:]) for layer, r in maps.items()}, size)

    def _segment(self, z: torch.Tensor, layers: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(featuremaps per layer (B, U, h, w) in float32, segmenter labels (B, H, W)) of one batch of z."""
        with TraceDict(self.generator, layers) as tr:
            x = self.generator(z)
        return {layer: check_featuremap(tr[layer].output, layer) for layer in layers}, self.segmenter.labels(x)

    def _latents(self, indices: torch.Tensor, seed: int) -> torch.Tensor:
        """z of these samples on the generator's device, in the Trainer's precision as its loop would give them."""
        z = latents(indices, self.z_dim, seed).to(device_of(self.generator))
        return self._trainer.precision_plugin.convert_input(z) if self._trainer is not None else z

    def _regenerate(self, indices: torch.Tensor, layers: list[str]) -> Iterator[Batch]:
        """The test sample's batches again, for the samples `indices` of this rank."""
        for idx in indices.split(self.settings.batch_size):
            precision = self._trainer.precision_plugin.forward_context() if self._trainer is not None else None
            with torch.no_grad(), precision or contextlib.nullcontext():
                maps, labels = self._segment(self._latents(idx, self.settings.seed), layers)
            yield idx, maps, self.vocab.label_groups(labels)


def settings_for(
    generator: nn.Module, layers: list[str], settings: DissectSettings | None, overrides: dict
) -> DissectSettings:
    """The settings of a dissection of `layers` (checked to exist in the generator): `settings` with `overrides`."""
    if not layers:
        raise InvalidValue("no layers to dissect")
    for layer in layers:
        resolve_layer(generator, layer)  # unknown names fail here, listing the close ones
    if settings is None:
        return DissectSettings(layers=tuple(layers), **overrides)
    if overrides or settings.layers != tuple(layers):
        return DissectSettings(**{**asdict(settings), **overrides, "layers": tuple(layers)})
    return settings


def cache_keys(
    generator: nn.Module, segmenter: Segmenter, s: DissectSettings, shapes: Shapes, vocab: Vocabulary
) -> dict[str, dict]:
    """What the cached stages depend on: the threshold stage (iqr) and the tally stage."""
    networks = {"generator": fingerprint(generator), "segmenter": fingerprint(segmenter)}
    if s.threshold == "quantile":
        method = {
            "n": s.n,
            "seed": s.seed,
            "q": s.q,
            "stride": s.stride,
            "size": shapes.segmentation,
            "warmup": s.warmup,
            "bins": s.bins,
            "band": [BAND_Z, BAND_FLOOR, BAND_BELOW],
        }
    else:  # q: the fallback of units with no significant threshold
        method = {"n": s.iqr_n, "seed": s.iqr_seed, "stride": s.stride, "vocab": vocab.names, "q": s.q}
    key = {**networks, **method}
    tally = {
        **key,
        "mode": s.threshold,
        "tally_n": s.n,
        "tally_seed": s.seed,
        "top_k": s.top_k,
        "candidates": s.candidates,
        "top_score": "relative_peak",
        "vocab": vocab.names,
    }
    return {"thresholds": key, "tally": tally}


def _tensors(d: LayerDissection) -> dict[str, torch.Tensor]:
    return {
        "iou": d.iou,
        # with n ≤ top_k, top_indices is all of candidates (one storage), which safetensors refuses to save
        "top_indices": d.top_indices.clone(),
        "top_scores": d.top_scores,
        "candidates": d.candidates,
        "featuremap_size": torch.tensor(d.featuremap_size),
    }


def _layer(layer: str, thresholds: torch.Tensor, t: dict[str, torch.Tensor]) -> LayerDissection:
    size = tuple(int(v) for v in t["featuremap_size"])
    return LayerDissection(layer, thresholds, t["iou"], t["top_indices"], t["top_scores"], size, t["candidates"])

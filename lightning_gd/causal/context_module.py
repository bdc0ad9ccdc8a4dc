"""Insertion context and tracing (paper §4.4, §S-6.5) as a LightningModule over the frozen generator and segmenter,
run by a Trainer's `test` over the seeded `LatentDataModule` (the n images of `seed`): each batch's insertions at
every location (`context.insert_at_locations`), their per-image results written into `SampleRows` states and the
tracing magnitudes into `TensorSum` states, all reduced over the ranks, so every rank ends with every image's
results in sample order, whatever `devices`, `num_nodes` and `strategy` are. `measure_context` runs it from
Python, through a given Trainer or in this process."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule, Trainer
from torch import nn

from lightning_gd.causal.context import insert_at_locations, later_layers
from lightning_gd.dissection.stats import SampleRows, TensorSum
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import LatentDataModule, latents, rng, run_stages
from lightning_gd.models.generators import device_of, eval_mode
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.split import LayerSplit

PER_IMAGE = ("before", "after", "confidence_before", "confidence_after", "background")  # (B, L) each


class ContextModule(LightningModule):
    """Insert `units` of `layer` at `k_c` at each featuremap location of n images and measure the concept:

        module = ContextModule(G, seg, "door", "layer4", units, k_c, n=200, seed=3)
        trainer.test(module, module.datamodule())  # module.result: what `context_summary.context_result` reads

    Args:
        generator, segmenter: the frozen networks.
        concept: the concept inserted; layer: the layer of its units.
        units: the units inserted; k_c: the value of every unit of the layer (U,) (the inserted ones are read).
        n, seed: the images and the seed of their z.
        locations: a fixed uniform sample of this many featuremap locations (None: all).
        region: insert over a region × region square whose top-left corner is the location.
        trace: also record every later layer (§S-6.5).
        batch_size: images per batch; chunk: edited images per `f` pass.
        z_dim: latent size, if the generator has no `z_dim` attribute.
    """

    def __init__(
        self,
        generator: nn.Module,
        segmenter: Segmenter,
        concept: str,
        layer: str,
        units: list[int],
        k_c: torch.Tensor,
        n: int = 200,
        seed: int = 3,
        locations: int | None = None,
        region: int = 1,
        trace: bool = False,
        batch_size: int = 4,
        chunk: int = 256,
        z_dim: int | None = None,
    ) -> None:
        super().__init__()
        # submodules, so that the Trainer puts them on its device
        self.generator, self.segmenter = generator, segmenter
        self.concept_index = segmenter.concept_index(concept)
        self.split = LayerSplit(generator, layer, z_dim)
        self.layer, self.units, self.k_c = layer, [int(u) for u in units], k_c
        self.n, self.seed, self.locations, self.region, self.trace = n, seed, locations, region, trace
        self.batch_size, self.chunk = batch_size, chunk
        self.result: dict | None = None  # after `test`

    def datamodule(self) -> LatentDataModule:
        """The n images of `seed` as the test sample (nothing else is read)."""
        return LatentDataModule(
            n_train=1,
            n_val=1,
            n_test=self.n,
            batch_size=self.batch_size,
            train_seed=self.seed + 1,
            val_seed=self.seed + 2,
            test_seed=self.seed,
            z_dim=self.split.z_dim,
        )

    def on_test_epoch_start(self) -> None:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if self.n < world:
            raise InvalidValue(f"n={self.n} images cannot be shared by {world} ranks")
        with torch.no_grad():
            z = latents([0], self.split.z_dim, self.seed).to(device_of(self.generator))
            self.size = tuple(self.split.h(z).shape[-2:])
        every = self.size[0] * self.size[1]
        if self.locations is None or self.locations >= every:
            self.where = torch.arange(every)
        else:
            chosen = torch.randperm(every, generator=rng(self.seed, stream="test_locations"))[: self.locations]
            self.where = chosen.sort().values
        self.traced = later_layers(self.split) if self.trace else []
        L = len(self.where)
        self._rows = {key: SampleRows(self.n, (L,)).to(device_of(self.generator)) for key in PER_IMAGE}
        self._rows["background"] = SampleRows(self.n, (L,), torch.long).to(device_of(self.generator))
        self._traced: dict[str, tuple[SampleRows, TensorSum, TensorSum]] = {}  # per layer, on its first batch
        self._window: torch.Tensor | None = None

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        idx, z = batch
        k_c = self.k_c.to(z.device)
        where = {"locations": self.where, "region": self.region, "chunk": self.chunk, "trace": self.traced}
        sums = insert_at_locations(self.split, self.segmenter, z, self.units, k_c, self.concept_index, **where)
        for key, rows in self._rows.items():
            rows.update(idx, getattr(sums, key))
        for name in self.traced:
            if name not in self._traced:
                channels = sums.change[name].shape[-1]
                states = SampleRows(self.n, (len(self.where), channels)), TensorSum((channels,)), TensorSum(())
                self._traced[name] = tuple(s.to(device_of(self.generator)) for s in states)
            change, magnitude, elements = self._traced[name]
            change.update(idx, sums.change[name])
            magnitude.update(sums.magnitude[name])
            elements.update(torch.tensor(sums.elements[name]))
        self._window = sums.window

    def on_test_epoch_end(self) -> None:
        with torch.inference_mode(False):  # copies that the caller may use outside the Trainer's inference mode
            found = {key: rows.compute().cpu().clone() for key, rows in self._rows.items()}
            found["change"] = {name: s[0].compute().cpu().clone() for name, s in self._traced.items()}
            found["magnitude"] = {name: s[1].compute().cpu().clone() for name, s in self._traced.items()}
            found["window"] = self._window.cpu().clone()
        found["elements"] = {name: float(s[2].compute()) for name, s in self._traced.items()}
        found |= {"index": torch.arange(self.n), "locations": self.where, "size": self.size, "layers": self.traced}
        self.result = {**found, "concept_index": self.concept_index}
        self._rows, self._traced = {}, {}


def measure_context(
    G: nn.Module,
    seg: Segmenter,
    concept: str,
    layer: str,
    units: list[int],
    k_c: torch.Tensor,
    n: int,
    seed: int,
    locations: int | None = None,
    region: int = 1,
    trace: bool = False,
    batch_size: int = 4,
    chunk: int = 256,
    z_dim: int | None = None,
    progress: bool = True,
    trainer: Trainer | None = None,
) -> dict:
    """Everything `context_summary.context_result` and `where_images` need: per image and location the concept's
    pixels and the segmenter's confidence before and after insertion, the background, the window sizes, the
    location list, and with `trace` the per-layer changes and magnitudes; the same on every rank.

    `trainer` runs the module (its `test`; the networks are back on their own devices afterwards); without one it
    runs in this process on the generator's device, over this rank's share of the images when torch.distributed
    is initialized (then every rank must call it)."""
    where = {"locations": locations, "region": region, "trace": trace}
    module = ContextModule(
        G, seg, concept, layer, units, k_c, n, seed, **where, batch_size=batch_size, chunk=chunk, z_dim=z_dim
    )
    data = module.datamodule()
    with eval_mode(G, seg):
        return run_stages(module, data, [("test", f"context[{concept}]")], (G, seg), device_of(G), trainer, progress)

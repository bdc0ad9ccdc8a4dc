"""Unit emergence (paper §S-6.6, Fig. 18): dissect one layer at points of training and watch interpretable units,
distinct concepts and their IoU grow, and the top images of a few fixed units change.

One measurement, `EmergenceModule`: the dissection of the layer on a fixed probe sample of z (seeded per index,
so successive measurements see the same z), then a record of what the emergence result keeps (the paper's three
measures, the units per concept, each unit's best IoU and concept, the fixed units) and the fixed units' top
images, each unit's featuremap on them (`UnitImages`). `measure_unit_emergence` runs it through a given Trainer
or, without one, in this process; its users:
- `lightning_gd.callbacks.UnitEmergenceMonitor` and `log_unit_emergence` — in this process, inside someone's
  training run (every N batches) or plain PyTorch loop, without touching their Trainer;
- `lightning_gd.jobs.dissect_checkpoints` — over the saved checkpoints of a finished run, through the Trainer of
  its `--trainer.*` options.

A measurement runs under `torch.no_grad()`, in eval mode (restored afterwards), and forks the torch RNG, so a
training run that measures draws the same random numbers as one that does not. Under torch.distributed every rank
must measure together (the dissection shards the probe sample and reduces its statistics across ranks); every
rank gets the same measurement.
"""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import torch
from pytorch_lightning import Trainer
from torch import nn

from lightning_gd import allocator
from lightning_gd.dissection.module import DissectionModule
from lightning_gd.dissection.results import Dissection
from lightning_gd.dissection.top_images import unit_images
from lightning_gd.errors import InvalidValue
from lightning_gd.latents import run_stages
from lightning_gd.models.generators import device_of, quiet_measurement
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.results.images import UnitImages


class Measurement(NamedTuple):
    """One emergence measurement: the JSON-able `record`, the `dissection` it summarises, and the top images of
    the fixed units (`images`: rows in the order of `record["fixed_units"]`; None when no unit is followed)."""

    record: dict
    dissection: Dissection
    images: UnitImages | None


class EmergenceModule(DissectionModule):
    """The dissection of `layer` (quantile thresholds: one `test` pass over the n probe samples of `seed`), then
    on every rank the record and the fixed units' top images:

        module = EmergenceModule(G, "layer4", seg, n=200, top_k=4, num_units=4)
        trainer.test(module, module.datamodule())  # module.record, module.images, module.result

    Args:
        generator, layer, segmenter: the frozen networks and the layer to dissect.
        units: the units whose top images are kept (default: the `num_units` top units of this measurement,
            `top_units`); none (`[]`, or `num_units` 0): no images.
        num_units: how many units to follow when `units` is not given.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        settings: `DissectSettings` fields (n, seed, batch_size, iou_threshold, top_k, …).
    """

    def __init__(
        self,
        generator: nn.Module,
        layer: str,
        segmenter: Segmenter,
        units: list[int] | None = None,
        num_units: int = 4,
        z_dim: int | None = None,
        **settings,
    ) -> None:
        super().__init__(generator, layer, segmenter, z_dim=z_dim, threshold="quantile", **settings)
        self.units, self.num_units = (None if units is None else [int(u) for u in units]), num_units
        self.record: dict | None = None  # after `test`
        self.images: UnitImages | None = None  # after `test`, when some unit is followed

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()  # probes the layer's shape first
        layer = self.layers[0]
        units = self._shapes.units[layer]
        if self.units is not None and any(not 0 <= u < units for u in self.units):
            raise InvalidValue(f"units {self.units} out of range: {layer} has {units} units (0 to {units - 1})")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        record = emergence_record(self.result, self.layers[0])
        fixed = self.units if self.units is not None else top_units(record, self.num_units)
        self.record = {**record, "fixed_units": fixed}
        self.images = self._top_images(fixed) if fixed else None

    def _top_images(self, units: list[int]) -> UnitImages:
        """The units' top images of the probe sample (each generated once) and each unit's featuremap on them, on
        the Trainer's device and in its precision; copies the caller may use outside its inference mode."""
        res = self.result.layers[self.layers[0]]
        shown = {res.layer: (res, units, res.top_indices[units])}
        trainer = self._trainer
        precision = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
        seed = self.settings.seed
        with torch.inference_mode(False), precision:
            return unit_images(
                self.generator,
                shown,
                self.z_dim,
                seed,
                self.settings.batch_size,
                z_of=lambda samples: self._latents(torch.tensor(samples, dtype=torch.long), seed),
            )


def emergence_record(result: Dissection, layer: str) -> dict:
    """What the emergence result keeps of one dissection of `layer`: the paper's three measures, the units per
    concept (every concept, zeros included), each unit's best IoU and concept, and the probe sample."""
    best_iou, best = result.layers[layer].iou.max(1)  # (U,), (U,)
    summary = result.summary(layer)
    names = result.vocabulary.names
    s = result.settings
    return {
        "layer": layer,
        "units": summary["units"],
        "interpretable": summary["interpretable"],
        "distinct_concepts": summary["distinct_concepts"],
        "mean_iou": summary["mean_iou"],
        "per_concept": {c: summary["per_concept"].get(c, 0) for c in names},
        "best_iou": [round(float(v), 6) for v in best_iou],
        "best_concept": [names[int(i)] for i in best],
        "iou_threshold": s.iou_threshold,
        "n": s.n,
        "seed": s.seed,
    }


def measure_unit_emergence(
    generator: nn.Module,
    layer: str,
    segmenter: Segmenter,
    n: int = 200,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    top_k: int = 4,
    z_dim: int | None = None,
    units: list[int] | None = None,
    num_units: int = 4,
    trainer: Trainer | None = None,
) -> Measurement:
    """Dissect `layer` on the probe sample and keep the record and the fixed units' top images (`EmergenceModule`).

    `trainer` runs the pass (its `test`: any accelerator, devices, nodes, strategy, precision; the networks are back
    on their own devices afterwards); without one it runs in this process on the generator's device, over this
    rank's share of the probe sample when torch.distributed is initialized (then every rank must call it)."""
    t0 = time.perf_counter()
    allocator.tune()  # large blocks reused from the heap (`allocator`), as `dissect` does
    if trainer is None:
        segmenter.to(device_of(generator))
    sample = {"n": n, "seed": seed, "batch_size": batch_size, "iou_threshold": iou_threshold, "top_k": top_k}
    module = EmergenceModule(generator, layer, segmenter, units, num_units, z_dim, **sample)
    nets = (generator, segmenter)
    with quiet_measurement(*nets):
        stages = [("test", "unit emergence")]
        run_stages(module, module.datamodule(), stages, nets, device_of(generator), trainer, verb="measured")
    record = {**module.record, "seconds": time.perf_counter() - t0}
    return Measurement(record, module.result, module.images)


def top_units(record: dict, k: int) -> list[int]:
    """k units worth watching: the best interpretable unit of each concept, best first (so the picture shows
    several concepts, not k units of the commonest one), then the remaining units by IoU (ties: the lower unit)."""
    iou, concept = record["best_iou"], record["best_concept"]
    order = sorted(range(len(iou)), key=lambda u: (-iou[u], u))
    first: dict[str, int] = {}
    for u in order:
        if iou[u] > record["iou_threshold"]:
            first.setdefault(concept[u], u)
    picked = list(first.values())[:k]
    return picked + [u for u in order if u not in picked][: k - len(picked)]

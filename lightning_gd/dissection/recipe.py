"""Dissection (paper §3.1, Eq. 2): which concept, if any, each unit of a generator layer matches.

The recipe, in the paper's order:
1. thresholds — `quantile`: each unit's top-(1−q) level of its upsampled activations over the whole sample;
   `iqr`: per unit, the threshold maximising I/H against its best concept, on a separate validation sample of z
   (one pass with the segmenter);
2. tallies — intersections and areas of the thresholded, upsampled featuremaps with every concept, pooled over
   the sample (`counts`). In quantile mode,
   thresholds and tallies come from the same single pass of generator and segmenter (`bands`);
3. IoU, a label per unit (best concept, its category, IoU), interpretable units, top-k images per unit.

`DissectionModule` is the recipe as a LightningModule (a Trainer's `validate` and `test`); `dissect` runs it from
Python, through a given Trainer or in this process. Each stage is cached under a key of everything it depends on
(`lightning_gd.cache.Cache`).
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning import Trainer
from torch import nn

from lightning_gd import allocator
from lightning_gd.dissection.module import DissectionModule
from lightning_gd.dissection.results import Dissection, DissectSettings
from lightning_gd.latents import run_stages
from lightning_gd.models.generators import device_of, eval_mode
from lightning_gd.models.segmenters import Segmenter


def dissect(
    generator: nn.Module,
    layers: str | list[str],
    segmenter: Segmenter,
    settings: DissectSettings | None = None,
    z_dim: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    trainer: Trainer | None = None,
    **overrides,
) -> Dissection:
    """Dissect one or several layers of `generator` against `segmenter`'s concepts.

    `settings` (or keyword overrides of its fields, e.g. `n=500, threshold="iqr"`) fixes the sample and the
    method; `cache_dir` makes finished stages reusable across runs with the same settings and networks.
    `trainer` runs the passes (its `validate` and `test`: any accelerator, devices, nodes, strategy, precision;
    the networks are back on their own devices afterwards); without one they run in this process on the
    generator's device, over this rank's share of the samples when torch.distributed is initialized (then every
    rank must call it). Every rank gets the same result.
    """
    allocator.tune()  # large blocks reused from the heap, not mapped again per batch (`allocator`)
    module = DissectionModule(generator, layers, segmenter, settings, z_dim, cache_dir, **overrides)
    data = module.datamodule()
    iqr = module.settings.threshold == "iqr"
    stages = [("validate", "thresholds (iqr)"), ("test", "IoU tallies")] if iqr else [("test", "dissection (one pass)")]
    nets = (generator, segmenter)
    with eval_mode(*nets):
        return run_stages(module, data, stages, nets, device_of(generator), trainer, progress, "dissected")

"""The recipe of §4.2 / §S-6.1 from Python: per-unit FID of every unit, the ranking, and the ablation table
(Tables 1–2), through a given Trainer (any accelerator, devices, nodes, strategy) or in this process."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning import Trainer
from torch import nn

from lightning_gd.latents import run_stages
from lightning_gd.models.generators import device_of, eval_mode
from lightning_gd.realism.fid import Extractor, RealStatistics
from lightning_gd.realism.module import UnitFidModule
from lightning_gd.results import UnitFidResult


def find_artifact_units(
    generator: nn.Module,
    layer: str,
    extractor: Extractor,
    real: RealStatistics,
    n: int = 10_000,
    top_k: int = 1_000,
    seed: int = 0,
    n_ablate: int = 20,
    units: list[int] | None = None,
    random_draws: int = 5,
    n_eval: int = 2_000,
    eval_seed: int = 1,
    batch_size: int = 100,
    z_dim: int | None = None,
    storage: str | Path | None = None,
    trainer: Trainer | None = None,
    progress: bool = False,
) -> dict:
    """Per-unit FID of every unit from one pass over n samples (each unit's top_k images), the units ranked by it,
    and the ablation table of the top n_ablate units, the user's `units`, and random units, on n_eval held-out
    samples (`eval_seed`) and on the images where the top units fire most. Returns {"unit_fid", "ranking", "rows",
    "top_images"}, the same on every rank.

    `trainer` runs the passes (its `validate` and `test`; the networks are back on their own devices afterwards);
    without one they run in this process on the generator's device, over this rank's share of the samples when
    torch.distributed is initialized (then every rank must call it). `storage`: a folder where each rank keeps its
    per-sample scores and features memory-mapped (for n too large for memory)."""
    sample = {"n": n, "top_k": top_k, "seed": seed, "n_eval": n_eval, "eval_seed": eval_seed, "batch_size": batch_size}
    table = {"n_ablate": n_ablate, "units": units, "random_draws": random_draws}
    module = UnitFidModule(generator, layer, extractor, real, **sample, **table, z_dim=z_dim, storage=storage)
    data = module.datamodule()
    nets = (generator, extractor.module)
    stages = [("validate", "scores + features"), ("test", "ablation FID")]
    with eval_mode(*nets):
        return run_stages(module, data, stages, nets, device_of(generator), trainer, progress)


def unit_fid_result(layer: str, found: dict, top_k: int, n: int, info: dict) -> UnitFidResult:
    """What `unit_fid.json` holds: what `find_artifact_units` found for `layer` (n samples, each unit's top_k), and
    where the numbers come from (`info`: the generator, the feature extractor, the real images)."""
    doc = {
        "layer": layer,
        "n": n,
        "top_k": top_k,
        "score": "max activation over the featuremap",
        "ranking": found["ranking"],
        "unit_fid": found["unit_fid"].tolist(),
        "ablation": found["rows"],
        **info,
    }
    return UnitFidResult.from_document(doc, "the per-unit FIDs")

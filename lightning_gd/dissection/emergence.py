"""Unit emergence (paper §S-6.6, Fig. 18): dissect one layer at points of training and watch interpretable units,
distinct concepts and their IoU grow, and the top images of a few fixed units change.

Three entry points share one measurement:
- `log_unit_emergence(G, step, writer)` — plain PyTorch: measure now, log to a `SummaryWriter`;
- `lightning_gd.callbacks.UnitEmergenceMonitor` — the same, every N batches of anyone's Lightning run;
- `lightning_gd.jobs.dissect_checkpoints(paths)` — the same over the saved checkpoints of a finished run.

A measurement is `dissect(G, layer, segmenter)` on a fixed probe sample of z (seeded per index), so successive
measurements see the same z. It runs under `torch.no_grad()`, in eval mode (restored afterwards), and forks the
torch RNG, so a training run that measures draws the same random numbers as one that does not. Under
torch.distributed every rank must measure together (the dissection shards the probe sample and reduces its
statistics across ranks); pass `writer=None` on all ranks but one.
"""

from __future__ import annotations

import time

from torch import nn

from lightning_gd import zoo
from lightning_gd.dissection.recipe import dissect
from lightning_gd.dissection.results import Dissection
from lightning_gd.models.generators import device_of, quiet_measurement
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.reports.emergence import TAG, write_unit_emergence


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
) -> tuple[dict, Dissection]:
    """Dissect `layer` on the probe sample; returns a JSON-able record (the paper's three measures, the units per
    concept, each unit's best IoU and concept) and the dissection. Every torch.distributed rank must call it."""
    t0 = time.perf_counter()
    segmenter.to(device_of(generator))
    with quiet_measurement(generator, segmenter):
        result = dissect(
            generator,
            layer,
            segmenter,
            n=n,
            seed=seed,
            batch_size=batch_size,
            iou_threshold=iou_threshold,
            top_k=top_k,
            z_dim=z_dim,
            progress=False,
        )
    best_iou, best = result.layers[layer].iou.max(1)  # (U,), (U,)
    summary = result.summary(layer)
    names = result.vocabulary.names
    record = {
        "layer": layer,
        "units": summary["units"],
        "interpretable": summary["interpretable"],
        "distinct_concepts": summary["distinct_concepts"],
        "mean_iou": summary["mean_iou"],
        "per_concept": {c: summary["per_concept"].get(c, 0) for c in names},
        "best_iou": [round(float(v), 6) for v in best_iou],
        "best_concept": [names[int(i)] for i in best],
        "iou_threshold": iou_threshold,
        "seconds": time.perf_counter() - t0,
    }
    return record, result


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


def log_unit_emergence(
    generator: nn.Module,
    step: int,
    writer=None,
    layer: str = "layer4",
    segmenter: Segmenter | None = None,
    history: list[dict] | None = None,
    n: int = 200,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    units: list[int] | None = None,
    num_units: int = 4,
    top_k: int = 4,
    z_dim: int | None = None,
    tag: str = TAG,
) -> dict:
    """Measure unit emergence in `layer` of `generator` now and log it to `writer` (a SummaryWriter) at `step`.

    `history` (a list the caller keeps) receives the record, and feeds the units × time heatmap. The fixed units
    whose top images are shown are `units`, else those of the history's first record, else the current top
    `num_units` by IoU. Returns the record."""
    segmenter = zoo.segmenter(segmenter)
    record, result = measure_unit_emergence(
        generator, layer, segmenter, n, seed, batch_size, iou_threshold, top_k, z_dim
    )
    if units is not None:
        fixed = list(units)
    elif history:
        fixed = list(history[0]["fixed_units"])
    else:
        fixed = top_units(record, num_units)
    record = {"step": int(step), **record, "fixed_units": fixed}
    if history is not None:
        history.append(record)
    if writer is not None:
        write_unit_emergence(writer, record, result, generator, history or [record], seed, z_dim, tag)
    return record

"""Unit emergence outside Lightning: `log_unit_emergence` measures without changing the generator (modes, hooks,
RNG, BatchNorm statistics restored even on error), logs to a plain `SummaryWriter`, and `top_units` picks the
units worth watching. The Lightning monitor built on it is tested in tests/test_callbacks.py."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gd.dissection.emergence import log_unit_emergence, measure_unit_emergence, top_units
from tests.helpers import PROBE, TinyGenerator, segmenter

pytestmark = pytest.mark.usefixtures("one_thread")


def test_measurement_restores_modes_hooks_and_rng_even_on_error():
    G = TinyGenerator().train()
    G.mix[1].eval()  # a frozen BatchNorm inside a training generator keeps its own mode
    stats = G.mix[1].running_mean.clone()
    rng = torch.get_rng_state()
    log_unit_emergence(G, 0, None, layer="mix", segmenter=segmenter(), **PROBE)
    assert G.training and G.mix.training and not G.mix[1].training
    assert torch.equal(G.mix[1].running_mean, stats) and torch.equal(torch.get_rng_state(), rng)

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    handle = G.tint.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        log_unit_emergence(G, 0, None, layer="mix", segmenter=segmenter(), **PROBE)
    handle.remove()
    assert all(not m._forward_hooks for m in G.modules())  # the dissection's traces are gone
    assert G.training and not G.mix[1].training and torch.equal(torch.get_rng_state(), rng)


def test_plain_pytorch_entry_point_logs_the_same_tags(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    G, history = TinyGenerator(), []
    with SummaryWriter(str(tmp_path)) as writer:
        for step in (0, 100):
            log_unit_emergence(G, step, writer, layer="layer1", segmenter=segmenter(), history=history, **PROBE)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [e.value for e in acc.Scalars("emergence/layer1/interpretable_units")] == [1, 1]
    assert [e.step for e in acc.Scalars("emergence/layer1/distinct_concepts")] == [0, 100]
    assert [r["step"] for r in history] == [0, 100]
    assert len(acc.Images("emergence/layer1/best_iou_heatmap")) == 2


def test_record_is_the_planted_unit():
    record, result = measure_unit_emergence(TinyGenerator(), "layer1", segmenter(), PROBE["n"], 0, 12, top_k=2)
    assert record["layer"] == "layer1" and record["units"] == 3 and result.settings.n == PROBE["n"]
    assert record["interpretable"] == 1 and record["per_concept"] == {"sky": 0, "dome": 1, "grass": 0}
    assert record["best_concept"][0] == "dome" and record["best_iou"][0] > 0.6 and record["best_iou"][2] == 0.0


def test_top_units_take_the_best_unit_of_each_concept_first():
    record = {"best_iou": [0.9, 0.8, 0.02, 0.5, 0.5], "best_concept": ["a", "a", "b", "c", "a"], "iou_threshold": 0.05}
    assert top_units(record, 2) == [0, 3]  # the best "a", then the best "c", before the second "a"
    assert top_units(record, 4) == [0, 3, 1, 4]  # then by IoU; ties: the lower unit
    assert top_units(record, 9) == [0, 3, 1, 4, 2]  # uninterpretable units come last

"""Unit emergence outside Lightning: `log_unit_emergence` measures without changing the generator (modes, hooks,
RNG, BatchNorm statistics restored even on error), logs to a plain `SummaryWriter`, and `top_units` picks the
units worth watching; the measurement through a Trainer equals the one in this process, top images included. The
Lightning monitor built on it is tested in tests/test_callbacks.py."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gd.callbacks import log_unit_emergence
from lightning_gd.dissection.emergence import measure_unit_emergence, top_units
from tests.dissection.test_module import same_layer, trainer
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
    record, result, images = measure_unit_emergence(TinyGenerator(), "layer1", segmenter(), PROBE["n"], 0, 12, top_k=2)
    assert record["layer"] == "layer1" and record["units"] == 3 and result.settings.n == PROBE["n"]
    assert record["interpretable"] == 1 and record["per_concept"] == {"sky": 0, "dome": 1, "grass": 0}
    assert record["best_concept"][0] == "dome" and record["best_iou"][0] > 0.6 and record["best_iou"][2] == 0.0
    assert record["fixed_units"] == [0, 1, 2] and (record["n"], record["seed"]) == (PROBE["n"], 0)
    top = result.layers["layer1"].top_indices  # (U, 2): each followed unit's top images, in its own order
    assert [images.samples[images.slots["layer1"][r]].tolist() for r in range(3)] == top.tolist()


def test_a_trainer_measures_what_this_process_measures():
    """Through a Trainer's `test` (the `dissect-checkpoints` path) and in this process (the monitor's path): the
    same record, dissection and followed units' images and featuremaps, and the networks back where they were."""
    G, seg = TinyGenerator(), segmenter()
    kw = {"n": PROBE["n"], "batch_size": 7, "top_k": 2, "units": [1, 0]}  # batches of 7: the last one short
    here = measure_unit_emergence(G, "mix", seg, **kw)
    there = measure_unit_emergence(G, "mix", seg, **kw, trainer=trainer())
    strip = ("seconds",)
    assert {k: v for k, v in here.record.items() if k not in strip} == {
        k: v for k, v in there.record.items() if k not in strip
    }
    same_layer(there.dissection.layers["mix"], here.dissection.layers["mix"])
    a, b = here.images, there.images
    assert torch.equal(a.samples, b.samples) and torch.equal(a.images, b.images)
    assert torch.equal(a.slots["mix"], b.slots["mix"]) and torch.equal(a.thresholds["mix"], b.thresholds["mix"])
    torch.testing.assert_close(a.maps["mix"], b.maps["mix"], atol=1e-6, rtol=0)
    assert not b.images.is_inference() and not b.maps["mix"].is_inference()
    assert a.slots["mix"].shape == (2, 2) and len(a.images) >= 2 and a.images.dtype == torch.uint8
    assert all(p.device.type == "cpu" for p in (*G.parameters(), *seg.parameters()))


def test_units_out_of_range_are_named():
    with pytest.raises(ValueError, match=r"units \[0, 5\] out of range: layer1 has 3 units"):
        measure_unit_emergence(TinyGenerator(), "layer1", segmenter(), PROBE["n"], top_k=2, units=[0, 5])


def test_top_units_take_the_best_unit_of_each_concept_first():
    record = {"best_iou": [0.9, 0.8, 0.02, 0.5, 0.5], "best_concept": ["a", "a", "b", "c", "a"], "iou_threshold": 0.05}
    assert top_units(record, 2) == [0, 3]  # the best "a", then the best "c", before the second "a"
    assert top_units(record, 4) == [0, 3, 1, 4]  # then by IoU; ties: the lower unit
    assert top_units(record, 9) == [0, 3, 1, 4, 2]  # uninterpretable units come last

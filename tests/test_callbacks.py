"""The callbacks in someone else's training run: the unit-emergence monitor (schedule, numbers, TensorBoard, no
effect on training, resume, DDP, bad settings) and the FID monitor (schedule, numbers against a direct computation,
artifact ablation given and found, resume state, bad settings).

`ForeignGAN` (`tests.helpers`) is not the project's GAN: manual optimisation, its generator at `nets.G`. That
generator draws the planted scene of `tests.helpers` (layer1 unit 0 *is* the dome mask, so the colour segmenter
finds exactly one interpretable unit: dome) plus a small learned tint from a trainable `mix` block with BatchNorm,
so training moves its weights and running statistics without changing the segmenter's labels.

Fits are shared through module-scoped fixtures; every Trainer runs a handful of batches on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_gd import zoo
from lightning_gd.callbacks import FIDMonitor, UnitEmergenceMonitor
from lightning_gd.dissection.emergence import measure_unit_emergence
from lightning_gd.models.hooks import LayerNotFoundError
from lightning_gd.realism.artifacts import ablation_fid, per_unit_fid, scores_and_features
from lightning_gd.realism.fid import real_statistics
from tests.helpers import CONCEPTS, PROBE, ForeignGAN, TinyGenerator, segmenter, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent


def _trainer(root: Path, batches: int, callbacks=(), logger=True, **kwargs) -> pl.Trainer:
    """`batches` training batches of `ForeignGAN` (two optimiser steps each), logging to TensorBoard by default."""
    logger = TensorBoardLogger(root, name="", version=0) if logger is True else logger
    return tiny_trainer(
        root, max_epochs=None, max_steps=2 * batches, logger=logger, callbacks=list(callbacks), **kwargs
    )


def _fit(root: Path, batches: int, monitors=(), **kwargs) -> tuple[pl.Trainer, ForeignGAN]:
    pl.seed_everything(0, verbose=False)
    module = ForeignGAN()
    trainer = _trainer(root, batches, monitors, **kwargs)
    trainer.fit(module)
    return trainer, module


def _monitors(**kwargs) -> list[UnitEmergenceMonitor]:
    return [
        UnitEmergenceMonitor("nets.G", layer, segmenter(), every_n_batches=2, **PROBE, **kwargs)
        for layer in ("layer1", "mix")
    ]


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """5 batches with two monitors (layer1 and mix) every 2 batches, and the same run without them."""
    tmp = tmp_path_factory.mktemp("monitored")
    monitors = _monitors()
    trainer, module = _fit(tmp / "with", 5, monitors)
    rng_with = torch.get_rng_state()
    plain_trainer, plain = _fit(tmp / "without", 5)
    return trainer, module, monitors, rng_with, plain, torch.get_rng_state()


def test_monitor_measures_on_batches_and_logs_planted_unit(monitored):
    trainer, module, (m1, m_mix), *_ = monitored
    assert trainer.global_step == 10  # two optimiser steps per batch: scheduling must not use global_step
    for m in (m1, m_mix):
        assert [r["batch"] for r in m.history] == [2, 4, 5]  # every 2 batches, then the end of training
        assert [r["step"] for r in m.history] == [4, 8, 10]
    for r in m1.history:
        assert r["interpretable"] == 1 and r["distinct_concepts"] == 1
        assert r["per_concept"] == {"sky": 0, "dome": 1, "grass": 0}
        # the default top-1 % threshold keeps the dome's core (≈ 0.69 of it); the dead unit has no region at all
        assert r["best_concept"][0] == "dome" and r["best_iou"][0] > 0.6 and r["best_iou"][2] == 0.0
        assert r["mean_iou"] == pytest.approx(r["best_iou"][0])
        assert r["fixed_units"] == [0, 1]  # the top units at the first measurement, then kept
    assert m_mix.history[0]["units"] == 4 and m_mix.history[0]["layer"] == "mix"


def test_monitor_writes_tensorboard(monitored):
    trainer, _, (m1, _), *_ = monitored
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"tensors": 0, "images": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    for layer in ("layer1", "mix"):
        base = f"emergence/{layer}"
        for name in ("interpretable_units", "distinct_concepts", "mean_iou"):
            assert [e.step for e in acc.Scalars(f"{base}/{name}")] == [4, 8, 10]
        assert {f"{base}/units_per_concept/{c}" for c in CONCEPTS} <= set(tags["scalars"])
        assert f"{base}/best_iou" in tags["histograms"]
        assert {f"{base}/best_iou_heatmap", f"{base}/fixed_units"} <= set(tags["images"])
        assert len(acc.Images(f"{base}/fixed_units")) == 3
    assert [e.value for e in acc.Scalars("emergence/layer1/interpretable_units")] == [1, 1, 1]
    assert [e.value for e in acc.Scalars("emergence/layer1/units_per_concept/dome")] == [1, 1, 1]
    mean = acc.Scalars("emergence/layer1/mean_iou")[-1].value
    assert mean == pytest.approx(m1.history[-1]["mean_iou"])
    # TensorBoard reads the last layout a run holds: it has a section for each monitor of the run
    assert [c.title for c in last_layout(acc).category] == ["emergence/layer1", "emergence/mix"]


def last_layout(acc: EventAccumulator):
    """The custom-scalars layout TensorBoard shows for a run (the last one written to it)."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    return layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])


def test_monitor_does_not_change_training(monitored):
    _, module, _, rng_with, plain, rng_without = monitored
    a, b = module.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, changed  # weights and BatchNorm statistics, generator and discriminator
    assert torch.equal(rng_with, rng_without)  # the monitor drew nothing from the global RNG
    assert module.nets["G"].training  # left in train mode
    assert all(not m._forward_hooks for m in module.modules())


def test_record_matches_a_direct_dissection(monitored):
    _, module, (_, m_mix), *_ = monitored
    record = measure_unit_emergence(module.nets["G"], "mix", segmenter(), PROBE["n"], 0, 5, top_k=2).record
    last = m_mix.history[-1]
    assert record["best_concept"] == last["best_concept"] and record["interpretable"] == last["interpretable"]
    torch.testing.assert_close(torch.tensor(record["best_iou"]), torch.tensor(last["best_iou"]), atol=1e-5, rtol=0)


class Overshoot(pl.Callback):
    """From the first batch on, the generator's images are scaled 3× (a generator in training leaving [-1, 1])."""

    def on_train_start(self, trainer, pl_module):
        pl_module.nets["G"].register_forward_hook(lambda module, inputs, output: 3 * output)


def test_monitor_measures_a_generator_that_overshoots_the_image_range(tmp_path):
    """The setup's dry run sees images in range; later the generator overshoots (×3): the measurement clamps them
    to [-1, 1] (as a viewer would show them) instead of stopping the training run."""
    monitor = UnitEmergenceMonitor("nets.G", "layer1", segmenter(), every_n_batches=2, **PROBE)
    trainer, module = _fit(tmp_path, 3, [Overshoot(), monitor])
    assert [r["batch"] for r in monitor.history] == [2, 3]
    with torch.no_grad():
        x = module.nets["G"](torch.randn(2, module.nets["G"].z_dim))
    assert x.abs().max() > 1.5  # the overshoot is real, and the monitor's clamp hook is gone after measuring


def test_other_loggers_get_the_scalars(tmp_path):
    monitor = UnitEmergenceMonitor("nets.G", "layer1", segmenter(), every_n_batches=2, **PROBE)
    trainer = _trainer(tmp_path, 2, [monitor], logger=CSVLogger(tmp_path))
    with pytest.warns(UserWarning, match="no TensorBoardLogger"):
        trainer.fit(ForeignGAN())
    rows = (Path(trainer.loggers[0].log_dir) / "metrics.csv").read_text()
    assert "emergence/layer1/interpretable_units" in rows and "emergence/layer1/units_per_concept/dome" in rows
    assert [r["batch"] for r in monitor.history] == [2]


# ----------------------------------------------------------------------------------------------- resume


def test_history_survives_resume(foreign_resumed):
    ckdir, first, second = foreign_resumed
    assert [r["batch"] for r in first.history] == [2, 4]
    assert [r["batch"] for r in second.history] == [2, 4, 6]  # restored, then continued; no repeat at the end
    assert [r["step"] for r in second.history] == [4, 8, 12]
    assert second.history[:2] == first.history
    state = torch.load(ckdir / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    assert [r["batch"] for r in state[second.state_key]["history"]] == [2, 4, 6]


# ----------------------------------------------------------------------------------------------- DDP

_DDP_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {root!r})
import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy
from lightning_gd.callbacks import UnitEmergenceMonitor
from tests.helpers import PROBE, ForeignGAN, segmenter

if __name__ == "__main__":
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    monitor = UnitEmergenceMonitor("nets.G", "mix", segmenter(), every_n_batches=1, **PROBE)
    module = ForeignGAN()
    # "ddp" with gloo; the discriminator's loss leaves the generator's parameters unused
    strategy = DDPStrategy(process_group_backend="gloo", find_unused_parameters=True)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=4, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[monitor])
    trainer.fit(module)
    out = {out!r}
    torch.save(module.nets["G"].state_dict(), f"{{out}}/G{{trainer.global_rank}}.pt")
    with open(f"{{out}}/history{{trainer.global_rank}}.json", "w") as f:
        json.dump(monitor.history, f)
"""


def test_two_ddp_ranks_log_what_one_rank_measures(tmp_path):
    script = tmp_path / "ddp_monitor.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT.format(root=str(ROOT), out=str(tmp_path))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    h0, h1 = (json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1))
    assert [r["batch"] for r in h0] == [1, 2] and [r["step"] for r in h0] == [2, 4]
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in h0] == [
        {k: v for k, v in r.items() if k not in strip} for r in h1
    ]  # both ranks hold the same, reduced, measurement
    G = TinyGenerator()
    G.load_state_dict(torch.load(tmp_path / "G0.pt", weights_only=True))
    one = measure_unit_emergence(G, "mix", segmenter(), PROBE["n"], 0, 7, top_k=2).record  # one process, all samples
    for key in ("interpretable", "distinct_concepts", "per_concept", "best_concept"):
        assert one[key] == h0[-1][key], key
    torch.testing.assert_close(torch.tensor(one["best_iou"]), torch.tensor(h0[-1]["best_iou"]), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- errors


def _setup_error(tmp_path, **kwargs):
    monitor = UnitEmergenceMonitor(segmenter=segmenter(), every_n_batches=1, **{**PROBE, **kwargs})
    trainer = _trainer(tmp_path, 2, [monitor], logger=False)
    module = ForeignGAN()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    return trainer, module, before


@pytest.mark.parametrize(
    "path, message",
    [
        ("nets.H", r"ForeignGAN\.nets \(ModuleDict\) has no attribute 'H'; its children: G, D"),
        ("generator", r"ForeignGAN \(ForeignGAN\) has no attribute 'generator'; its children: nets"),
        ("nets.G.layer4", r"ForeignGAN\.nets\.G \(TinyGenerator\) .* children: embed, layer1, mix, tint, render"),
    ],
)
def test_wrong_attribute_path_fails_at_setup_listing_children(tmp_path, path, message):
    trainer, module, before = _setup_error(tmp_path, generator=path, layer="layer1")
    with pytest.raises(AttributeError, match=message):
        trainer.fit(module)
    assert trainer.global_step == 0 and all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_wrong_layer_fails_at_setup_listing_layers(tmp_path):
    trainer, module, _ = _setup_error(tmp_path, generator="nets.G", layer="layer9")
    with pytest.raises(LayerNotFoundError, match=r"no layer 'layer9'.*valid layers: embed, layer1, mix"):
        trainer.fit(module)
    assert trainer.global_step == 0


def test_layer_without_featuremap_and_bad_units_fail_at_setup(tmp_path):
    trainer, module, _ = _setup_error(tmp_path, generator="nets.G", layer="embed")
    with pytest.raises(ValueError, match=r"layer 'embed' must output a featuremap .* got \(1, 258\)"):
        trainer.fit(module)
    trainer, module, _ = _setup_error(tmp_path, generator="nets.G", layer="mix", units=[1, 4])
    with pytest.raises(ValueError, match=r"units \[1, 4\] out of range; mix has 4"):
        trainer.fit(module)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_batches": 0}, "every_n_batches must be an integer ≥ 1"),
        ({"n": 0}, "n must be an integer ≥ 1"),
        ({"iou_threshold": 1.5}, r"iou_threshold must be in \[0, 1\)"),
        ({"units": [-1]}, "units must be non-negative"),
        ({"segmenter": nn.Identity()}, "segmenter must be a zoo spec or a Segmenter"),
    ],
)
def test_invalid_settings_fail_at_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        UnitEmergenceMonitor("nets.G", "layer1", **kwargs)


# ----------------------------------------------------------------------------------------------- FID monitor

SMALL = {"n": 12, "batch_size": 6, "real_n": 16}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fidmon")
    given = FIDMonitor("nets.G", every_n_batches=2, layer="layer1", artifact_units=[0], cache_dir=str(tmp), **SMALL)
    found = FIDMonitor(
        "nets.G", every_n_batches=4, layer="layer1", find_artifacts=1, top_k=4, cache_dir=str(tmp), tag="found", **SMALL
    )
    trainer, module = _fit(tmp / "run", 5, [given, found])
    return tmp, trainer, module, given, found


def test_fid_monitor_measures_on_batches_and_at_the_end(fitted):
    _, _, _, given, found = fitted
    assert [r["batch"] for r in given.history] == [2, 4, 5]
    assert [r["batch"] for r in found.history] == [4, 5]
    assert all(r["fid"] > 0 and r["fid_ablated"] > 0 for r in given.history)
    assert all(r["artifact_units"] == [0] for r in given.history)


def test_fid_monitor_numbers_match_a_direct_computation(fitted):
    tmp, _, module, given, found = fitted
    G = module.nets["G"].eval()
    ex = zoo.feature_extractor("world")
    real = real_statistics(ex, zoo.real_images("world", n=SMALL["real_n"]), cache_dir=str(tmp), progress=False)
    last = given.history[-1]
    assert last["fid"] == pytest.approx(ablation_fid(G, "layer1", [], ex, real, 12, 5, 6), rel=1e-6)
    assert last["fid_ablated"] == pytest.approx(ablation_fid(G, "layer1", [0], ex, real, 12, 5, 6), rel=1e-6)
    scores, feats = scores_and_features(G, "layer1", ex, 12, 5, 6, progress=False)
    worst = int(torch.argmax(per_unit_fid(scores, feats, real, 4, progress=False)))
    assert found.history[-1]["artifact_units"] == [worst]
    assert found.history[-1]["fid"] == pytest.approx(last["fid"], rel=1e-6)  # same z, same generator


def test_fid_monitor_measures_a_generator_that_overshoots_the_image_range(tmp_path):
    """A generator in training that leaves [-1, 1] (×3 from the first batch) is measured, its images clamped as
    uint8 images are, instead of stopping the run; the number is what a direct computation on it gives."""
    monitor = FIDMonitor("nets.G", every_n_batches=2, layer="layer1", artifact_units=[0], cache_dir=str(tmp_path),
                         **SMALL)  # fmt: skip
    _, module = _fit(tmp_path / "run", 3, [Overshoot(), monitor])
    assert [r["batch"] for r in monitor.history] == [2, 3]
    G = module.nets["G"].eval()  # still overshooting: the Overshoot hook stays
    ex = zoo.feature_extractor("world")
    real = real_statistics(ex, zoo.real_images("world", n=SMALL["real_n"]), cache_dir=str(tmp_path), progress=False)
    assert monitor.history[-1]["fid"] == pytest.approx(ablation_fid(G, "layer1", [], ex, real, 12, 5, 6), rel=1e-6)


def test_fid_monitor_logs_to_the_run(fitted):
    _, trainer, _, _, _ = fitted
    acc = EventAccumulator(trainer.logger.log_dir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"fid/fid", "fid/fid_ablated"} <= tags
    assert len(acc.Scalars("fid/fid")) >= 3
    layout = {c.title: [t for chart in c.chart for t in chart.multiline.tag] for c in last_layout(acc).category}
    assert layout == {"fid": ["fid/fid", "fid/fid_ablated"], "found": ["found/fid", "found/fid_ablated"]}


def test_fid_monitor_state_round_trips(fitted):
    _, _, _, given, _ = fitted
    fresh = FIDMonitor("nets.G", layer="layer1", artifact_units=[0], **SMALL)
    assert len(given.history) == 3 and all("fid" in r for r in given.history)  # a history worth restoring
    fresh.load_state_dict(given.state_dict())
    assert fresh.history == given.history


def test_fid_monitor_wrong_path_and_layer_fail_at_setup(tmp_path):
    with pytest.raises(AttributeError, match="its children: G, D"):
        _fit(tmp_path / "a", 1, [FIDMonitor("nets.X", **SMALL)])
    with pytest.raises(KeyError, match="layer1"):
        _fit(tmp_path / "b", 1, [FIDMonitor("nets.G", layer="layr1", artifact_units=[0], **SMALL)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds 0 PNG/JPEG images"):  # at setup, before any training batch
        _fit(tmp_path / "d", 1, [FIDMonitor("nets.G", real_images=str(tmp_path / "empty"), **SMALL)])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        bad = FIDMonitor("nets.G", feature_extractor="inception", feature_extractor_weights_path="nope.pth", **SMALL)
        _fit(tmp_path / "c", 1, [bad])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"artifact_units": [0]}, "need the layer"),
        ({"n": 1}, "at least 2"),
        ({"every_n_batches": 0}, "every_n_batches"),
        ({"layer": "layer1", "find_artifacts": 2, "top_k": 50, "n": 10}, "top_k in"),
    ],
)
def test_fid_monitor_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FIDMonitor("nets.G", **kwargs)

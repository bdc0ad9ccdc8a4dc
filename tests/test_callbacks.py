"""The unit-emergence monitor in someone else's training run, its plain-PyTorch twin, and checkpoint dissection.

`ForeignGAN` is not the project's GAN: manual optimisation, its generator at `nets.G`. That generator draws the
planted scene of `tests.helpers` (layer1 unit 0 *is* the dome mask, so the colour segmenter finds exactly one
interpretable unit: dome) plus a small learned tint from a trainable `mix` block with BatchNorm, so training
moves its weights and running statistics without changing the segmenter's labels.

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
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_gd import cli
from lightning_gd.callbacks import UnitEmergenceMonitor
from lightning_gd.hooks import LayerNotFoundError
from lightning_gd.monitoring import checkpoint_files, dissect_checkpoints, log_unit_emergence, measure_unit_emergence
from tests.helpers import CONCEPTS, SCALE, Z_DIM, Planted, Render, segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
PROBE = {"n": 24, "batch_size": 12, "top_k": 2, "num_units": 2}


class TinyGenerator(nn.Module):
    """z (B, Z_DIM) → 64×64 images: the planted scene at ±0.9 plus a learned tint of at most ±0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.embed = nn.Identity()  # (B, Z_DIM): not a featuremap
        self.layer1 = Planted()  # (B, 3, 16, 16): dome, noise, dead
        self.mix = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())  # (B, 4, 16, 16), trained
        self.tint = nn.Conv2d(4, 3, 1)
        self.render = Render()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.layer1(self.embed(z))
        tint = torch.tanh(self.tint(F.interpolate(self.mix(r), scale_factor=SCALE)))  # (B, 3, 64, 64)
        return 0.9 * self.render(r) + 0.1 * tint


class ForeignGAN(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        disc = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 16 * 16, 1))
        self.nets = nn.ModuleDict({"G": TinyGenerator(), "D": disc})

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.nets["G"].parameters(), lr=1e-2),
            torch.optim.Adam(self.nets["D"].parameters(), lr=1e-2),
        )

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        real = batch[0]
        fake = self.nets["G"](torch.randn(real.shape[0], Z_DIM))
        loss_d = F.softplus(-self.nets["D"](real)).mean() + F.softplus(self.nets["D"](fake.detach())).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = F.softplus(-self.nets["D"](fake)).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()

    def train_dataloader(self):
        real = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
        return DataLoader(TensorDataset(real), batch_size=4, shuffle=True)  # shuffling draws from the global RNG


def _trainer(root: Path, batches: int, callbacks=(), logger=True, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2 * batches,  # two optimiser steps per batch
        default_root_dir=root,
        logger=TensorBoardLogger(root, name="", version=0) if logger is True else logger,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"enable_checkpointing": False, **kwargs},
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
    assert "custom_scalars__config__" in tags["tensors"]  # the layout, written once per layer
    assert len(acc.Tensors("custom_scalars__config__")) == 2


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
    record, _ = measure_unit_emergence(module.nets["G"], "mix", segmenter(), PROBE["n"], 0, 5, top_k=2)
    last = m_mix.history[-1]
    assert record["best_concept"] == last["best_concept"] and record["interpretable"] == last["interpretable"]
    torch.testing.assert_close(torch.tensor(record["best_iou"]), torch.tensor(last["best_iou"]), atol=1e-5, rtol=0)


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


def test_other_loggers_get_the_scalars(tmp_path):
    monitor = UnitEmergenceMonitor("nets.G", "layer1", segmenter(), every_n_batches=2, **PROBE)
    trainer = _trainer(tmp_path, 2, [monitor], logger=CSVLogger(tmp_path))
    with pytest.warns(UserWarning, match="no TensorBoardLogger"):
        trainer.fit(ForeignGAN())
    rows = (Path(trainer.loggers[0].log_dir) / "metrics.csv").read_text()
    assert "emergence/layer1/interpretable_units" in rows and "emergence/layer1/units_per_concept/dome" in rows
    assert [r["batch"] for r in monitor.history] == [2]


# ----------------------------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    ckdir = tmp / "ckpts"

    def run(batches: int, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        monitor = UnitEmergenceMonitor("nets.G", "mix", segmenter(), every_n_batches=2, **PROBE)
        ckpt = ModelCheckpoint(dirpath=ckdir, save_last=True, every_n_train_steps=4, filename="{step}", save_top_k=-1)
        trainer = _trainer(tmp, batches, [monitor, ckpt], enable_checkpointing=True)
        trainer.fit(ForeignGAN(), ckpt_path=ckpt_path)
        return monitor

    first = run(4)
    second = run(6, ckpt_path="last")
    return ckdir, first, second


def test_history_survives_resume(resumed):
    ckdir, first, second = resumed
    assert [r["batch"] for r in first.history] == [2, 4]
    assert [r["batch"] for r in second.history] == [2, 4, 6]  # restored, then continued; no repeat at the end
    assert [r["step"] for r in second.history] == [4, 8, 12]
    assert second.history[:2] == first.history
    state = torch.load(ckdir / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    assert [r["batch"] for r in state[second.state_key]["history"]] == [2, 4, 6]


def test_dissect_checkpoints_of_a_foreign_run(resumed, tmp_path):
    ckdir, _, second = resumed
    out = tmp_path / "emergence"
    history = dissect_checkpoints(
        [ckdir], out, "mix", TinyGenerator(), "nets.G", segmenter(), n=PROBE["n"], top_k=2, num_units=2, tb_dir=tmp_path
    )
    assert [r["step"] for r in history] == [4, 8, 12]  # step=4, step=8, step=12; last.ckpt repeats step 12
    assert [r["batches"] for r in history] == [2, 4, 6]
    for r, monitored in zip(history, second.history):  # the same probe z and weights as the monitor saw
        assert r["best_concept"] == monitored["best_concept"]
        torch.testing.assert_close(torch.tensor(r["best_iou"]), torch.tensor(monitored["best_iou"]), atol=1e-5, rtol=0)
    assert json.loads((out / "emergence.json").read_text())[0]["step"] == 4
    for name in ("emergence.png", "emergence_heatmap.png", "emergence_units.png"):
        assert (out / name).stat().st_size > 1000
    acc = EventAccumulator(str(tmp_path / "emergence-emergence"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("emergence/mix/interpretable_units")] == [4, 8, 12]


def test_checkpoint_files_from_folders_globs_and_files(resumed):
    ckdir, _, _ = resumed
    names = ["last.ckpt", "step=12.ckpt", "step=4.ckpt", "step=8.ckpt"]
    assert [p.name for p in checkpoint_files(ckdir)] == names
    assert [p.name for p in checkpoint_files([str(ckdir / "step=*.ckpt"), ckdir / "last.ckpt"])] == names[1:] + names[
        :1
    ]
    with pytest.raises(FileNotFoundError, match="no checkpoint matches the pattern"):
        checkpoint_files(str(ckdir / "epoch=*.ckpt"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint_files([ckdir / "missing.ckpt"])


def test_dissect_checkpoints_command_and_bad_prefix(resumed, tmp_path, monkeypatch, capsys):
    ckdir, _, _ = resumed
    monkeypatch.chdir(ROOT)
    common = ["--layer", "layer1", "--n", "12", "--out", str(tmp_path / "o"), "--tb_dir", "null"]
    gen = ["--generator", '{"class_path": "tests.test_callbacks.TinyGenerator"}']
    seg = ["--segmenter", '{"class_path": "tests.helpers.ColourSegmenter"}']
    cli.main(["dissect-checkpoints", str(ckdir / "step=8.ckpt"), *gen, *seg, "--prefix", "nets.G", *common])
    assert "interpretable" in capsys.readouterr().out  # the printed table
    (doc,) = json.loads((tmp_path / "o" / "emergence.json").read_text())
    assert doc["step"] == 8 and doc["interpretable"] == 1 and doc["per_concept"]["dome"] == 1
    with pytest.raises(KeyError, match="no weights under 'generator.'; its state_dict prefixes: nets"):
        cli.main(["dissect-checkpoints", str(ckdir / "step=8.ckpt"), *gen, *seg, *common])


# ----------------------------------------------------------------------------------------------- DDP

_DDP_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {root!r})
import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy
from lightning_gd.callbacks import UnitEmergenceMonitor
from tests.helpers import segmenter
from tests.test_callbacks import PROBE, ForeignGAN

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
    one, _ = measure_unit_emergence(G, "mix", segmenter(), PROBE["n"], 0, 7, top_k=2)  # one process, all samples
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
        ({"segmenter": nn.Identity()}, "segmenter must be a lightning_gd.segmenters.Segmenter"),
    ],
)
def test_invalid_settings_fail_at_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        UnitEmergenceMonitor("nets.G", "layer1", **kwargs)

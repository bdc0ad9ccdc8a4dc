"""The world's `GANModule` under a real `pl.Trainer` on CPU, tiny widths: manual optimisation (two optimiser
steps per batch), the EMA generator, the fixed `validation_z`, logging, checkpoint resumption, and the exporter's
BatchNorm recalibration. The `Generator`'s contract is tested in test_models.py.

Fits are shared through module-scoped fixtures: one 6-step fit, and a 4-step fit resumed twice to 8 steps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gd.world.data import SceneDataModule
from lightning_gd.world.gan import GANModule, recalibrate_batchnorm
from lightning_gd.world.models import Generator
from tests.helpers import tiny_trainer

TINY = {"g_width": 16, "d_width": 8, "num_val_z": 8, "ema_decay": 0.9}
LAYERS = ("layer1", "layer2", "layer3", "layer4", "layer5", "layer6")


pytestmark = pytest.mark.usefixtures("one_thread")


def _data() -> SceneDataModule:
    return SceneDataModule(batch_size=4, train_size=16, val_size=4)


def _trainer(root: Path, max_steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    return tiny_trainer(
        root,
        max_epochs=None,
        max_steps=max_steps,
        logger=TensorBoardLogger(root),
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        log_every_n_steps=1,
        limit_val_batches=1,
        val_check_interval=2,
        num_sanity_val_steps=1,
        **kwargs,
    )


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


class EMAWatch(pl.Callback):
    """Counts training batches and checks, per batch, ema_after == decay * ema_before + (1 - decay) * g_after."""

    def __init__(self) -> None:
        self.batches, self.max_error, self.buffers_copied = 0, [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = [p.detach().clone() for p in module.generator_ema.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1
        d = module.hparams.ema_decay
        err = 0.0
        for e0, e1, g in zip(self.before, module.generator_ema.parameters(), module.generator.parameters()):
            err = max(err, (e1 - (d * e0 + (1 - d) * g)).abs().max().item())
        self.max_error.append(err)
        self.buffers_copied.append(
            all(torch.equal(a, b) for a, b in zip(module.generator_ema.buffers(), module.generator.buffers()))
        )


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gan6")
    torch.manual_seed(0)
    module = GANModule(**TINY)
    before = {name: _params(getattr(module, name)) for name in ("generator", "generator_ema", "discriminator")}
    watch = EMAWatch()
    trainer = _trainer(tmp, 6, [watch])
    trainer.fit(module, datamodule=_data())
    ckpt = tmp / "six.ckpt"
    trainer.save_checkpoint(ckpt)
    return trainer, module, before, watch, tmp, ckpt


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_manual_optimisation_counts_both_optimisers_and_updates_all_nets(six_steps):
    trainer, module, before, watch, _, _ = six_steps
    assert not module.automatic_optimization
    assert trainer.state.status.value == "finished"
    assert trainer.global_step == 6 and watch.batches == 3  # two optimiser steps per batch
    opt_g, opt_d = (o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers)
    assert {id(p) for g in opt_g.param_groups for p in g["params"]} == {id(p) for p in module.generator.parameters()}
    assert {id(p) for g in opt_d.param_groups for p in g["params"]} == {
        id(p) for p in module.discriminator.parameters()
    }
    for opt in (opt_g, opt_d):
        assert all(int(s["step"]) == 3 for s in opt.state.values()) and len(opt.state) > 0
    after = {name: _params(getattr(module, name)) for name in before}
    for name in before:
        assert _changed(before[name], after[name]), f"{name} did not change"
    assert _changed(after["generator_ema"], after["generator"])  # the EMA lags
    assert not any(p.requires_grad for p in module.generator_ema.parameters())


def test_ema_follows_decay_rule_each_batch(six_steps):
    _, _, _, watch, _, _ = six_steps
    assert len(watch.max_error) == 3
    assert max(watch.max_error) < 1e-6, watch.max_error
    assert len(watch.buffers_copied) == 3 and all(watch.buffers_copied)  # BatchNorm statistics are copied, not averaged


def test_ema_update_by_hand_on_one_training_step():
    """One `training_step` outside a Trainer, its optimisers stubbed: the EMA moves by (1 - decay) toward G."""
    torch.manual_seed(1)
    module = GANModule(**TINY)
    opt_g, opt_d = module.configure_optimizers()
    module.optimizers = lambda: (opt_g, opt_d)
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda *a, **k: None
    module.train()
    with torch.no_grad():  # make EMA and G differ before the step
        for p in module.generator_ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ema0 = _params(module.generator_ema)
    d0 = _params(module.discriminator)
    module.training_step(torch.rand(4, 3, 64, 64) * 2 - 1, 0)
    g1, ema1 = _params(module.generator), _params(module.generator_ema)
    decay = module.hparams.ema_decay
    for k in ema0:
        torch.testing.assert_close(ema1[k], decay * ema0[k] + (1 - decay) * g1[k], rtol=0, atol=1e-6)
    assert _changed(d0, _params(module.discriminator))
    assert all(int(s["step"]) == 1 for s in opt_d.state.values()) and all(
        int(s["step"]) == 1 for s in opt_g.state.values()
    )


def test_validation_z_is_a_seeded_buffer():
    torch.manual_seed(5)
    a = GANModule(**TINY, val_seed=7)
    torch.manual_seed(6)  # the global RNG state does not matter
    b = GANModule(**TINY, val_seed=7)
    c = GANModule(**TINY, val_seed=8)
    assert "validation_z" in dict(a.named_buffers()) and "validation_z" in a.state_dict()
    assert a.validation_z.shape == (TINY["num_val_z"], 128)
    assert torch.equal(a.validation_z, b.validation_z)
    assert not torch.equal(a.validation_z, c.validation_z)


def test_validation_z_is_checkpointed_and_unchanged_by_training(six_steps):
    _, module, _, _, _, ckpt = six_steps
    fresh = GANModule(**TINY)
    assert torch.equal(module.validation_z, fresh.validation_z)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(state["validation_z"], fresh.validation_z)


def test_tensorboard_has_samples_and_losses(six_steps):
    trainer, _, _, _, _, _ = six_steps
    acc = EventAccumulator(trainer.logger.log_dir)
    acc.Reload()
    tags = acc.Tags()
    assert "samples/validation_z" in tags["images"]
    assert {"loss/d", "loss/g"} <= set(tags["scalars"])
    images = acc.Images("samples/validation_z")
    # make_grid of 8 images, 8 per row, padding 2: one row
    assert (images[-1].width, images[-1].height) == (8 * 66 + 2, 66 + 2)
    assert images[0].step == 0  # the sanity check's grid, then one per validation
    assert len(images) >= 2 and images[-1].step > 0
    for tag in ("loss/d", "loss/g"):
        values = acc.Scalars(tag)
        assert len(values) == 3 and all(v.value == v.value and v.value > 0 for v in values)  # finite, positive


class AtTrainStart(pl.Callback):
    """What a resumed run starts from: its global step, validation_z and the optimisers' Adam step counts."""

    def on_train_start(self, trainer, module):
        self.seen = {
            "global_step": trainer.global_step,
            "validation_z": module.validation_z.clone(),
            "steps": [sorted(int(s["step"]) for s in o.state.values()) for o in trainer.optimizers],
        }


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gan_resume")
    ckdir = tmp / "ckpts"
    torch.manual_seed(0)
    first = GANModule(**TINY)
    t1 = _trainer(tmp / "run1", 4, [ModelCheckpoint(dirpath=ckdir, save_last=True)])
    t1.fit(first, datamodule=_data())
    last = ckdir / "last.ckpt"
    snap = torch.load(last, map_location="cpu", weights_only=True)

    runs = {}
    for how, ckpt_path in (("path", str(last)), ("last", "last")):
        counter = EMAWatch()
        module = GANModule(**TINY, val_seed=99)  # a different z: resumption must restore the checkpoint's
        # "last" is looked up in the ModelCheckpoint's dirpath, so that run shares the first run's
        cb = ModelCheckpoint(dirpath=ckdir if how == "last" else tmp / f"ckpts_{how}", save_last=True)
        start = AtTrainStart()
        trainer = _trainer(tmp / f"run_{how}", 8, [cb, counter, start])
        trainer.fit(module, datamodule=_data(), ckpt_path=ckpt_path)
        runs[how] = (trainer, module, counter, start.seen, cb)
    return first, snap, runs


def test_checkpoint_holds_both_optimiser_states(resumed):
    first, snap, _ = resumed
    assert snap["global_step"] == 4
    assert len(snap["optimizer_states"]) == 2
    for opt_state in snap["optimizer_states"]:
        assert opt_state["state"] and all(int(s["step"]) == 2 for s in opt_state["state"].values())
    assert torch.equal(snap["state_dict"]["validation_z"], first.validation_z)


@pytest.mark.parametrize("how", ["path", "last"])
def test_resume_continues_steps_optimisers_and_validation_z(resumed, how):
    first, snap, runs = resumed
    trainer, module, counter, start, cb = runs[how]
    assert start["global_step"] == 4
    assert start["steps"] == [[2] * len(s["state"]) for s in snap["optimizer_states"]]  # Adam restored
    assert torch.equal(start["validation_z"], first.validation_z)  # restored from the checkpoint
    assert trainer.global_step == 8 and counter.batches == 2
    assert len(trainer.optimizers) == 2
    for opt in trainer.optimizers:
        assert opt.state and all(int(s["step"]) == 4 for s in opt.state.values())
    assert torch.equal(module.validation_z, first.validation_z)
    saved = torch.load(cb.last_model_path, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 8
    assert len(saved["optimizer_states"]) == 2
    for opt_state in saved["optimizer_states"]:
        assert opt_state["state"] and all(int(s["step"]) == 4 for s in opt_state["state"].values())
    assert torch.equal(saved["state_dict"]["validation_z"], first.validation_z)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_recalibrate_batchnorm_gives_exact_averages_and_restores_mode(training):
    torch.manual_seed(2)
    G = Generator(z_dim=128, width=16)
    with torch.no_grad():  # a trained-looking G: stale running statistics that must be discarded
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(5.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    G.train(training)
    reference = copy.deepcopy(G).train()
    batches, batch_size, seed = 3, 8, 4

    out = recalibrate_batchnorm(G, batches=batches, batch_size=batch_size, seed=seed)
    assert out is G and G.training is training
    assert all(m.training is training for m in G.modules())
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 6 and all(m.momentum == 0.1 for m in bns)  # momentum restored
    assert all(int(m.num_batches_tracked) == batches for m in bns)

    # by hand: the same z batches through a train-mode copy, inputs of every BatchNorm captured with hooks
    inputs: dict[str, list[torch.Tensor]] = {}
    names = [n for n, m in reference.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    handles = [
        reference.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, []).append(a[0]))
        for n in names
    ]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(batches):
            reference(torch.randn(batch_size, 128, generator=g))
    for h in handles:
        h.remove()
    assert len(names) == 6
    for name in names:
        x = torch.cat(inputs[name])  # (batches * B, C, H, W)
        bn = G.get_submodule(name)
        torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=0, atol=1e-4)
        per_batch_var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in inputs[name]]).mean(0)
        torch.testing.assert_close(bn.running_var, per_batch_var, rtol=1e-4, atol=1e-4)

"""The world's `GANModule` under a real `pl.Trainer` on CPU, tiny widths: manual optimisation (two optimiser
steps per batch), the EMA rule, the lazy R1 penalty against a hand computation, the discriminator's minibatch
standard deviation, the fixed `validation_z`, logging and checkpoint resumption. The generator is the published
ProGAN class; its layout is tested in test_models.py.

Fits are shared through module-scoped fixtures: one 6-step fit, and a 4-step fit resumed twice to 8 steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.world.data import SceneDataModule
from lightning_gd.world.gan import Discriminator, GANModule, ema_beta, minibatch_stddev, r1_penalty
from lightning_gd.zoo.progan import ProGAN
from tests.helpers import tiny_trainer

TINY = {"sizes": [16, 16, 16, 8, 8, 4], "d_widths": [4, 8, 8, 8, 8], "num_val_z": 8, "r1_every": 2}


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
    """Counts training batches and checks, per batch, ema_after == β · ema_before + (1 − β) · g_after with β from
    the half-life rule at the images seen after the batch."""

    def __init__(self) -> None:
        self.batches, self.max_error, self.betas = 0, [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = [p.detach().clone() for p in module.generator_ema.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1
        hp = module.hparams
        beta = 0.5 ** (4 / min(hp.ema_kimg * 1000, hp.ema_rampup * int(module.images_seen)))  # by hand, batch 4
        err = 0.0
        for e0, e1, g in zip(self.before, module.generator_ema.parameters(), module.generator.parameters()):
            err = max(err, (e1 - (beta * e0 + (1 - beta) * g)).abs().max().item())
        self.max_error.append(err)
        self.betas.append(beta)


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
    # ramp-up: 0.05 · 4, 0.05 · 8, 0.05 · 12 images of half-life, so β grows from 0.5^20 towards 1
    assert watch.betas == pytest.approx([0.5 ** (4 / (0.05 * 4 * k)) for k in (1, 2, 3)])


def _stubbed(module: GANModule) -> tuple:
    """`module` ready for `training_step` outside a Trainer: optimisers, backward and logging stubbed."""
    opt_g, opt_d = module.configure_optimizers()
    module.optimizers = lambda: (opt_g, opt_d)
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = module.log = lambda *a, **k: None
    return opt_g, opt_d


def test_ema_update_by_hand_on_one_training_step():
    """One `training_step` outside a Trainer: the EMA moves by (1 − β) toward G, β = 0.5^(B / half-life)."""
    torch.manual_seed(1)
    module = GANModule(**TINY, ema_rampup=None, ema_kimg=0.01)  # half-life 10 images, no ramp-up
    opt_g, opt_d = _stubbed(module)
    module.train()
    with torch.no_grad():  # make EMA and G differ before the step
        for p in module.generator_ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ema0 = _params(module.generator_ema)
    d0 = _params(module.discriminator)
    module.training_step(torch.rand(4, 3, 64, 64) * 2 - 1, 0)
    g1, ema1 = _params(module.generator), _params(module.generator_ema)
    beta = 0.5 ** (4 / 10)
    assert ema_beta(4, 4, 0.01, None) == pytest.approx(beta)
    for k in ema0:
        torch.testing.assert_close(ema1[k], beta * ema0[k] + (1 - beta) * g1[k], rtol=0, atol=1e-6)
    assert _changed(d0, _params(module.discriminator))
    assert all(int(s["step"]) == 1 for s in opt_d.state.values()) and all(
        int(s["step"]) == 1 for s in opt_g.state.values()
    )
    assert int(module.images_seen) == 4


def test_training_z_depend_on_step_and_rank_not_on_the_process_rng(monkeypatch):
    """The z of a training step come from (z_seed, global step, rank): a resumed run, whose process RNG is
    reseeded, goes on with new z instead of repeating its first steps' z."""
    module = GANModule(**TINY)

    def at(step: int, rank: int = 0, z_seed: int = 0) -> torch.Tensor:
        monkeypatch.setattr(GANModule, "global_step", property(lambda self: step))
        monkeypatch.setattr(GANModule, "global_rank", property(lambda self: rank))
        module.hparams.z_seed = z_seed
        return module.training_z(4)

    torch.manual_seed(0)
    first = at(10)
    torch.manual_seed(0)
    torch.randn(100)  # another RNG state
    assert torch.equal(at(10), first) and first.shape == (4, module.z_dim)
    assert not torch.equal(at(12), first) and not torch.equal(at(10, rank=1), first)
    assert not torch.equal(at(10, z_seed=1), first)
    assert abs(float(torch.cat([at(s) for s in range(0, 400, 2)]).std()) - 1) < 0.05  # standard normal
    with pytest.raises(InvalidValue, match="z_seed"):
        GANModule(**TINY, z_seed=-1)


def test_a_training_step_generates_from_training_z(monkeypatch):
    module = GANModule(**TINY)
    _stubbed(module)
    drawn, seen = [], []
    original = GANModule.training_z
    monkeypatch.setattr(GANModule, "training_z", lambda self, n: drawn.append(original(self, n)) or drawn[-1])
    monkeypatch.setattr(module.generator, "forward", lambda z: seen.append(z) or torch.zeros(len(z), 3, 64, 64))
    module.train()
    module.training_step(torch.rand(4, 3, 64, 64) * 2 - 1, 0)
    assert len(drawn) == 1 and seen and seen[0] is drawn[0]  # the generator got the step's seeded z


class SquareD(nn.Module):
    """D(x) = (a · x)²: ∇ₓD = 2 (a · x) a, so ‖∇ₓD‖² = 4 (a · x)² ‖a‖² by hand."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(numel) / numel**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.a) ** 2


def test_r1_penalty_matches_hand_computation_and_is_differentiable():
    torch.manual_seed(2)
    x = torch.randn(5, 3, 4, 4)
    d = SquareD(48)
    r1 = r1_penalty(d, x)
    ax = x.flatten(1) @ d.a.detach()
    expected = (4 * ax**2 * d.a.detach().pow(2).sum()).mean()
    torch.testing.assert_close(r1, expected, rtol=1e-5, atol=0)
    r1.backward()  # the penalty trains D: d r1 / d a = mean of 8 (a·x) x ‖a‖² + 8 (a·x)² a
    a = d.a.detach()
    grad = (8 * ax[:, None] * x.flatten(1) * a.pow(2).sum() + 8 * ax[:, None] ** 2 * a).mean(0)
    torch.testing.assert_close(d.a.grad, grad, rtol=1e-4, atol=1e-6)
    assert not x.requires_grad  # the caller's images are left alone


@pytest.mark.parametrize("step, applied", [(0, True), (2, False), (4, True)])  # global_step: 2 per batch
def test_r1_enters_the_discriminator_loss_every_r1_every_batches(monkeypatch, step, applied):
    """The discriminator's loss is softplus(−D(real)) + softplus(D(fake)) (means), plus γ/2 · R1 · r1_every on
    every r1_every-th batch only, recomputed by hand from a copy of D taken before the step."""
    torch.manual_seed(3)
    module = GANModule(**TINY, r1_gamma=0.5)  # r1_every = 2
    _stubbed(module)
    monkeypatch.setattr(GANModule, "global_step", property(lambda self: step))
    losses, fakes = [], []
    module.manual_backward = lambda loss: (losses.append(loss.detach()), loss.backward())
    module.generator.register_forward_hook(lambda m, a, out: fakes.append(out.detach()))
    check = Discriminator(TINY["d_widths"])
    check.load_state_dict(module.discriminator.state_dict())
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    module.training_step(real, 0)
    (fake,) = fakes
    expected = nn.functional.softplus(-check(real)).mean() + nn.functional.softplus(check(fake)).mean()
    if applied:
        expected = expected + 0.5 / 2 * r1_penalty(check, real) * 2
    assert len(losses) == 2  # the discriminator's, then the generator's
    torch.testing.assert_close(losses[0], expected.detach(), rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_by_hand():
    x = torch.randn(8, 3, 4, 4)
    y = minibatch_stddev(x, group=4)
    assert y.shape == (8, 4, 4, 4) and torch.equal(y[:, :3], x)
    groups = x.reshape(4, 2, 3, 4, 4)  # sample i is in group i % 2, as the reshape (group, B / group) puts it
    for i in range(8):
        members = groups[:, i % 2]
        std = members.std(dim=0, unbiased=False).mean()
        torch.testing.assert_close(y[i, 3], torch.full((4, 4), float(std)), rtol=1e-4, atol=1e-6)
    assert minibatch_stddev(torch.randn(6, 2, 4, 4), group=4).shape == (6, 3, 4, 4)  # 6 % 4: one group of all


def test_discriminator_shapes_and_a_clear_error_for_the_wrong_widths():
    D = Discriminator([4, 8, 8, 8, 8])
    assert D(torch.randn(3, 3, 64, 64)).shape == (3,)
    with pytest.raises(ValueError, match="make a 32² input, not 64²"):
        Discriminator([4, 8, 8, 8], resolution=64)


def test_the_generators_are_the_published_progan_class_and_only_the_ema_clamps():
    module = GANModule(**TINY)
    assert type(module.generator) is ProGAN and type(module.generator_ema) is ProGAN
    assert not module.generator[-1].tanh and module.generator_ema[-1].tanh
    assert module.generator.state_dict().keys() == module.generator_ema.state_dict().keys()
    with torch.no_grad():
        module.generator_ema[-1].wscale.b.fill_(5.0)  # push every pixel out of range
        assert module.generator_ema(torch.randn(2, 16)).max() <= 1.0
    assert math.isclose(ema_beta(32, 10**9, 10.0, 0.05), 0.5 ** (32 / 10000))


def test_training_runs_channels_last_and_the_layout_changes_no_value(six_steps):
    """The fit puts every network in the channels-last layout (faster convolutions); a contiguous copy of the
    trained networks computes the same images and scores, to float32 rounding (kernels sum in another order)."""
    _, module, _, _, _, _ = six_steps
    for name in ("generator", "generator_ema", "discriminator"):
        net = getattr(module, name)
        kernels = [p for p in net.parameters() if p.dim() == 4]
        assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels), name
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    plain = GANModule(**TINY)
    plain.load_state_dict(module.state_dict())
    assert all(p.is_contiguous() for p in plain.parameters())
    with torch.no_grad():
        for name in ("generator", "generator_ema"):
            torch.testing.assert_close(getattr(module, name)(z), getattr(plain, name)(z), rtol=1e-4, atol=1e-4)
        x = plain.generator(z)
        torch.testing.assert_close(module.discriminator(x), plain.discriminator(x), rtol=1e-4, atol=1e-4)


def test_validation_z_is_a_seeded_buffer():
    torch.manual_seed(5)
    a = GANModule(**TINY, val_seed=7)
    torch.manual_seed(6)  # the global RNG state does not matter
    b = GANModule(**TINY, val_seed=7)
    c = GANModule(**TINY, val_seed=8)
    assert "validation_z" in dict(a.named_buffers()) and "validation_z" in a.state_dict()
    assert a.validation_z.shape == (TINY["num_val_z"], 16)
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
    assert {"samples/ema", "samples/generator"} <= set(tags["images"])
    assert {"loss/d", "loss/g", "loss/r1", "ema/beta"} <= set(tags["scalars"])
    images = acc.Images("samples/ema")
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

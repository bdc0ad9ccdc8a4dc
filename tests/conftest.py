import functools
import shutil

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: more intra-op threads only add contention (25x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """`module_tmp(name)`: a fresh folder like `tmp_path_factory.mktemp(name)`, removed when the module's tests end.
    For fixtures that write published-size checkpoints (hundreds of MB): the suite's peak disk use stays at one
    module's files instead of the whole session's (CI shares its disk with everything else on the machine)."""
    made = []

    def make(name: str):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def trainer(tmp_path):
    """`trainer(**overrides)`: the tests' one tiny CPU Trainer (`tests.helpers.tiny_trainer`) writing under tmp_path:
    one epoch, no logger, no checkpoints, no progress bar, no model summary unless overridden."""
    from tests.helpers import tiny_trainer

    return functools.partial(tiny_trainer, tmp_path)


@pytest.fixture(scope="session")
def foreign_resumed(tmp_path_factory):
    """A foreign GAN run (`tests.helpers.ForeignGAN`) with a unit-emergence monitor on `mix`: 4 batches with a
    checkpoint every 4 optimiser steps, then resumed from last.ckpt to 6 batches. Returns (checkpoint folder,
    first monitor, resumed monitor); its checkpoints are step=4, step=8, step=12 and last.ckpt."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_gd.callbacks import UnitEmergenceMonitor
    from tests.helpers import PROBE, ForeignGAN, segmenter, tiny_trainer

    tmp = tmp_path_factory.mktemp("resume")
    ckdir = tmp / "ckpts"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(batches: int, ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        monitor = UnitEmergenceMonitor("nets.G", "mix", segmenter(), every_n_batches=2, **PROBE)
        ckpt = ModelCheckpoint(dirpath=ckdir, save_last=True, every_n_train_steps=4, filename="{step}", save_top_k=-1)
        trainer = tiny_trainer(
            tmp, max_epochs=None, max_steps=2 * batches, callbacks=[monitor, ckpt], enable_checkpointing=True
        )
        trainer.fit(ForeignGAN(), ckpt_path=ckpt_path)
        return monitor

    try:
        first = run(4)
        second = run(6, ckpt_path="last")
    finally:
        torch.set_num_threads(threads)
    return ckdir, first, second


@pytest.fixture
def cli_debug(monkeypatch):
    """`cli.main` raises a user error as the exception itself (tests check its type and message), as --debug does;
    without it the command line prints one line and exits with status 2 (tests/test_bad_input.py)."""
    monkeypatch.setenv("LIGHTNING_GD_DEBUG", "1")

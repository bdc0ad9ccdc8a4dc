"""What a long run prints while it runs: the bar without `v_num` on a terminal, one line per epoch and per quarter of
a test when the output is a file or a pipe; `test` logging into its `fit`'s TensorBoard run; a dissection that says
why it runs again when the cache holds one of other settings."""

from __future__ import annotations

import io

import pytest
import torch
from jsonargparse import Namespace
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_gd.cli.lightning import join_latest_run
from lightning_gd.cli.progress import ConsoleBar, LineProgress, console_callbacks
from lightning_gd.dissection import dissect
from tests.helpers import ColourSegmenter, PlantedGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


class Line(LightningModule):
    """y = w·x, fitted by SGD: a model whose epochs take no time."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = ((self.w * x - 2 * x) ** 2).mean()
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def test_step(self, batch, batch_idx):
        (x,) = batch
        self.log("test/error", (self.w - 2).abs())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(batches: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.linspace(0, 1, 4 * batches)), batch_size=4)


def test_the_bar_on_a_terminal_lines_elsewhere():
    config = {"enable_progress_bar": True, "callbacks": []}
    (bar,) = console_callbacks(config, interactive=True)
    assert isinstance(bar, ConsoleBar) and config["enable_progress_bar"] is True
    (lines,) = console_callbacks(config, interactive=False)
    assert isinstance(lines, LineProgress) and config["enable_progress_bar"] is False  # no carriage returns in a log
    quiet = {"enable_progress_bar": False, "callbacks": []}
    assert [type(c) for c in console_callbacks(quiet, interactive=True)] == [LineProgress]  # bar off: lines
    own = {"enable_progress_bar": True, "callbacks": [ConsoleBar()]}
    assert console_callbacks(own, interactive=True) == []  # the config's own bar is kept, not doubled


def test_the_bar_has_no_v_num(tmp_path):
    bar = ConsoleBar()
    trainer = Trainer(logger=TensorBoardLogger(tmp_path), callbacks=[bar], max_epochs=1, enable_model_summary=False)
    trainer.fit(Line(), data(2))
    assert "v_num" in super(ConsoleBar, bar).get_metrics(trainer, trainer.lightning_module)  # Lightning's bar
    assert "v_num" not in bar.get_metrics(trainer, trainer.lightning_module)


def test_a_line_per_epoch_and_per_quarter_of_the_test(tmp_path):
    out = io.StringIO()
    settings = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
    trainer = Trainer(logger=False, callbacks=[LineProgress(out)], max_epochs=3, default_root_dir=tmp_path, **settings)
    model = Line()
    trainer.fit(model, data(2))
    trainer.test(model, data(8), verbose=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "fit: Line, 3 epochs"
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(" done")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("train/loss" in line for line in epochs)
    tests = [line for line in lines if line.startswith("test:")]
    assert tests[0] == "test: 8 batches"
    assert [line.split(" in ")[0] for line in tests[1:]] == [f"test: {b}/8 batches" for b in (2, 4, 6, 8)]


def test_test_joins_the_latest_run_of_its_logger(tmp_path):
    def logger(**init_args):
        args = {"save_dir": str(tmp_path), "name": "causal-tree-layer4", "version": None, **init_args}
        return Namespace(class_path="pytorch_lightning.loggers.TensorBoardLogger", init_args=Namespace(**args))

    first = logger()
    join_latest_run(first)
    assert first.init_args.version is None  # no fit yet: a run of its own
    for version in (0, 2, 1):
        (tmp_path / "causal-tree-layer4" / f"version_{version}").mkdir(parents=True)
    latest, named = logger(), logger(version=0)
    join_latest_run([latest, named])
    assert latest.init_args.version == 2 and named.init_args.version == 0


def test_a_dissection_says_why_it_runs_again(tmp_path, capsys):
    g, seg = PlantedGenerator(), ColourSegmenter()
    dissect(g, "layer1", seg, n=8, batch_size=8, cache_dir=tmp_path, progress=False)
    assert "dissecting" not in capsys.readouterr().out  # nothing cached yet: nothing to explain
    dissect(g, "layer1", seg, n=12, batch_size=12, cache_dir=tmp_path, progress=False)
    said = capsys.readouterr().out
    assert "dissection of layer1: the 1 cached in" in said and "dissecting 12 samples (seed 0" in said
    dissect(g, "layer1", seg, n=12, batch_size=12, cache_dir=tmp_path, progress=False)
    assert capsys.readouterr().out == ""  # read from the cache

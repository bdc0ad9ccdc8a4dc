"""The emergence job: `dissect_checkpoints` over the saved checkpoints of someone else's training run
(`tests.helpers.ForeignGAN`, the session's `foreign_resumed` run), checked against what the unit-emergence monitor
measured during that run. It also runs through its command in tests/cli/test_commands.py."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gd.jobs.emergence import dissect_checkpoints
from tests.helpers import PROBE, TinyGenerator, segmenter

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dissect_checkpoints_of_a_foreign_run(foreign_resumed, tmp_path):
    ckdir, _, second = foreign_resumed
    out = tmp_path / "emergence"
    history = dissect_checkpoints(
        [ckdir], layer="mix", generator=TinyGenerator(), prefix="nets.G", segmenter=segmenter(), n=PROBE["n"],
        top_k=2, num_units=2, out=out, tb_dir=tmp_path,
    )  # fmt: skip
    assert [r["step"] for r in history] == [4, 8, 12]  # step=4, step=8, step=12; last.ckpt repeats step 12
    assert [r["batches"] for r in history] == [2, 4, 6]
    for r, monitored in zip(history, second.history):  # the same probe z and weights as the monitor saw
        assert r["best_concept"] == monitored["best_concept"]
        torch.testing.assert_close(torch.tensor(r["best_iou"]), torch.tensor(monitored["best_iou"]), atol=1e-5, rtol=0)
    assert json.loads((out / "emergence.json").read_text())["history"][0]["step"] == 4
    for name in ("emergence.png", "emergence_heatmap.png", "emergence_units.png"):
        assert (out / name).stat().st_size > 1000
    acc = EventAccumulator(str(tmp_path / "emergence-mix"))  # the kind and the layer, not the folder twice
    acc.Reload()
    assert [e.step for e in acc.Scalars("emergence/mix/interpretable_units")] == [4, 8, 12]


# `checkpoint_files` (lightning_gd.models.weights) on the same run's checkpoint folder.

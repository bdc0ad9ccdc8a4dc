"""The dissection as a LightningModule run by a Trainer: the same tables as the library's own loop, in both threshold
modes and at any precision's statistics, and — through `python -m lightning_gd dissect --trainer.devices 2
--trainer.strategy ddp` (two gloo processes started by Lightning) — the same outputs as one device.

The networks are the planted generator and colour segmenter of `tests.helpers` (unit 0 of layer1 is the dome)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_gd.cli import main
from lightning_gd.dissection import DissectionModule, dissect
from tests.dissection.test_recipe import N, settings
from tests.helpers import PlantedGenerator, run_ddp_script, segmenter

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(**kw) -> pl.Trainer:
    quiet = dict(logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    return pl.Trainer(accelerator="cpu", devices=1, **quiet, **kw)


def same_layer(a, b) -> None:
    assert torch.equal(a.thresholds, b.thresholds)
    torch.testing.assert_close(a.iou, b.iou, atol=1e-6, rtol=0)
    assert torch.equal(a.top_indices, b.top_indices) and torch.equal(a.top_scores, b.top_scores)
    assert torch.equal(a.candidates, b.candidates) and a.featuremap_size == b.featuremap_size


@pytest.mark.parametrize("threshold", ["quantile", "iqr"])
def test_a_trainer_dissects_what_the_library_loop_dissects(threshold):
    # warmup 5 and batches of 7: the band opens inside the first batch
    kw = {**settings(threshold, 7), "warmup": 5}
    ref = dissect(PlantedGenerator(), "layer1", segmenter(), progress=False, **kw).layers["layer1"]
    g = PlantedGenerator()
    got = dissect(g, "layer1", segmenter(), progress=False, trainer=trainer(), **kw).layers["layer1"]
    same_layer(got, ref)
    assert not got.iou.is_inference()  # the caller may use the result outside the Trainer's inference mode
    assert g.calls == 1 + (2 if threshold == "iqr" else 1) * -(-N // 7)  # the probe, then each sample once a pass


def test_the_module_under_a_trainer_and_its_cache(tmp_path):
    g, seg = PlantedGenerator(), segmenter()
    module = DissectionModule(g, "layer1", seg, n=N, batch_size=N, threshold="iqr", cache_dir=tmp_path)
    data = module.datamodule()
    with pytest.raises(RuntimeError, match="run `validate`"):
        trainer().test(module, data)
    trainer().validate(module, data)
    trainer().test(module, data)
    assert module.result.units("layer1")[0]["label"] == "dome"
    g.calls = 0
    again = DissectionModule(g, "layer1", seg, n=N, batch_size=N, threshold="iqr", cache_dir=tmp_path)
    trainer().validate(again, data)
    trainer().test(again, data)
    assert g.calls == 1  # the probe: both stages came from the cache
    same_layer(again.result.layers["layer1"], module.result.layers["layer1"])
    quantile = DissectionModule(g, "layer1", seg, n=N)
    with pytest.raises(ValueError, match="quantile mode finds its thresholds in `test`"):
        trainer().validate(quantile, quantile.datamodule())


def test_mixed_precision_keeps_the_statistics_in_float32():
    bf16 = trainer(precision="bf16-mixed")
    d = dissect(PlantedGenerator(), "layer1", segmenter(), progress=False, trainer=bf16, **settings("quantile"))
    lay = d.layers["layer1"]
    assert lay.thresholds.dtype == torch.float32 and 0.375 <= lay.thresholds[0] < 0.390625
    assert lay.iou[0, 1] >= 0.95 and d.units("layer1")[0]["label"] == "dome"


# ----------------------------------------------------------------------------------------------- two DDP processes

GENERATOR = json.dumps({"class_path": "tests.helpers.PlantedGenerator", "init_args": {"two_layers": True}})
# 9 samples in batches of 2: the ranks hold 5 and 4 samples (an unpadded split), in 3 and 2 batches
ARGS = [
    "--generator",
    GENERATOR,
    "--segmenter",
    '{"class_path": "tests.helpers.ColourSegmenter"}',
    "--layers",
    "layer1,layer2",
    "--n",
    "9",
    "--iqr_n",
    "9",
    "--batch_size",
    "2",
    "--q",
    "0.86",
    "--top_k",
    "3",
    "--tb_dir",
    "null",
    "--cache_dir",
    "null",
]
# one warm-up sample: the band opens inside each rank's first batch, and misses (the second pass, on two ranks)
MISSED = {**settings("quantile", 2), "n": 9, "warmup": 1, "q": 0.99}

_DDP = """
import sys
sys.path.insert(0, {root!r})
import torch
from lightning_gd.cli import main
from lightning_gd.dissection import dissect
from lightning_gd.jobs.trainer import TrainerOptions
from tests.helpers import PlantedGenerator, segmenter

torch.set_num_threads(1)
ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
for mode in ("quantile", "iqr"):  # Lightning starts the second process here, running this script again
    main(["dissect", *{args!r}, "--threshold", mode, "--out", {out!r} + "/" + mode, *ddp])
engine = TrainerOptions(devices=2, strategy="ddp").trainer(progress=False)
lay = dissect(PlantedGenerator(), "layer1", segmenter(), progress=False, trainer=engine, **{missed!r}).layers["layer1"]
saved = (lay.thresholds, lay.iou, lay.top_indices, lay.top_scores, lay.candidates)
torch.save(saved, {out!r} + f"/missed{{engine.global_rank}}.pt")
"""


def same_numbers(a, b, path: str = "") -> None:
    """Two JSON documents alike: numbers within 1e-6, everything else (labels, orders, keys) identical."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            same_numbers(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same_numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-6, path
    else:
        assert a == b, path


def test_two_ddp_processes_dissect_what_one_process_dissects(tmp_path, monkeypatch):
    ddp = tmp_path / "ddp"
    script = tmp_path / "ddp_dissect.py"
    script.write_text(textwrap.dedent(_DDP.format(root=str(ROOT), args=ARGS, out=str(ddp), missed=MISSED)))
    proc = run_ddp_script(script, tmp_path)
    assert proc.stdout.count("layer1: ") == 2  # one report per command: rank 0's

    monkeypatch.chdir(tmp_path)
    for mode in ("quantile", "iqr"):
        main(["dissect", *ARGS, "--threshold", mode, "--out", str(tmp_path / "one" / mode)])
        one, two = tmp_path / "one" / mode, ddp / mode
        assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
        same_numbers(json.loads((two / "dissect.json").read_text()), json.loads((one / "dissect.json").read_text()))
        for layer in ("layer1", "layer2"):
            np.testing.assert_allclose(np.load(two / f"iou-{layer}.npy"), np.load(one / f"iou-{layer}.npy"), atol=1e-6)
        # the unit browser embeds each unit's top images: the same samples, in the same order
        assert (two / "report.html").read_bytes() == (one / "report.html").read_bytes(), mode

    ref = dissect(PlantedGenerator(), "layer1", segmenter(), progress=False, **MISSED).layers["layer1"]
    for rank in (0, 1):  # every rank holds the whole result
        thresholds, iou, top_indices, top_scores, candidates = torch.load(ddp / f"missed{rank}.pt")
        assert torch.equal(thresholds, ref.thresholds) and torch.equal(candidates, ref.candidates)
        torch.testing.assert_close(iou, ref.iou, atol=1e-6, rtol=0)
        assert torch.equal(top_indices, ref.top_indices) and torch.equal(top_scores, ref.top_scores)

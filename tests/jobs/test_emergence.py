"""The emergence job: `dissect_checkpoints` over the saved checkpoints of someone else's training run
(`tests.helpers.ForeignGAN`, the session's `foreign_resumed` run), through its Trainer, checked against what the
unit-emergence monitor measured in-process during that run; what it stores (`emergence.json` and the followed
units' images) is drawn again by `report FOLDER` with no network. It also runs through its command in
tests/cli/test_commands.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gd import cli, zoo
from lightning_gd.dissection.emergence import measure_unit_emergence
from lightning_gd.jobs.emergence import dissect_checkpoints, load_checkpoint_generator
from lightning_gd.results.emergence import EmergenceImages
from tests.dissection.test_module import same_numbers
from tests.helpers import PROBE, TinyGenerator, run_ddp_script, segmenter

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def emergence_run(foreign_resumed, tmp_path_factory):
    """The job over the foreign run's checkpoints (step=4, step=8, step=12, last.ckpt), following 2 units."""
    ckdir, _, second = foreign_resumed
    tmp = tmp_path_factory.mktemp("emergence")
    out = tmp / "emergence"
    networks = {"generator": TinyGenerator(), "prefix": "nets.G", "segmenter": segmenter()}
    history = dissect_checkpoints([ckdir], "mix", **networks, n=PROBE["n"], top_k=2, num_units=2, out=out, tb_dir=tmp)
    return ckdir, second, tmp, out, history


def test_dissect_checkpoints_of_a_foreign_run(emergence_run):
    _, second, tmp, out, history = emergence_run
    assert [r["step"] for r in history] == [4, 8, 12]  # step=4, step=8, step=12; last.ckpt repeats step 12
    assert [r["batches"] for r in history] == [2, 4, 6]
    assert [r["checkpoint"].rsplit("/", 1)[-1] for r in history] == ["step=4.ckpt", "step=8.ckpt", "step=12.ckpt"]
    for r, monitored in zip(history, second.history):  # the same probe z and weights as the monitor saw
        assert r["best_concept"] == monitored["best_concept"]
        torch.testing.assert_close(torch.tensor(r["best_iou"]), torch.tensor(monitored["best_iou"]), atol=1e-5, rtol=0)
    assert json.loads((out / "emergence.json").read_text())["history"][0]["step"] == 4
    for name in ("emergence.png", "emergence_heatmap.png", "emergence_units.png"):
        assert (out / name).stat().st_size > 1000
    acc = EventAccumulator(str(tmp / "emergence-mix"), size_guidance={"images": 0})  # the kind and the layer
    acc.Reload()
    assert [e.step for e in acc.Scalars("emergence/mix/interpretable_units")] == [4, 8, 12]
    assert [e.step for e in acc.Images("emergence/mix/fixed_units")] == [4, 8, 12]


def test_the_followed_units_images_are_stored_as_measured(emergence_run):
    """The units are the last checkpoint's top units, followed at every checkpoint; each checkpoint's stored
    images are those its generator draws for the units' top samples (a direct in-process measurement)."""
    ckdir, _, _, out, history = emergence_run
    stored = EmergenceImages.load(out)
    fixed = history[-1]["fixed_units"]
    assert stored.layer == "mix" and stored.steps == [4, 8, 12] and stored.units == fixed and len(fixed) == 2
    assert all(r["fixed_units"] == fixed for r in history)
    assert stored.images.shape[:3] == (3, 2, 2) and stored.images.dtype == torch.uint8
    for t, name in enumerate(("step=4.ckpt", "step=8.ckpt", "step=12.ckpt")):
        G = load_checkpoint_generator(ckdir / name, "nets.G", TinyGenerator())[0]
        direct = measure_unit_emergence(G, "mix", segmenter(), PROBE["n"], top_k=2, units=fixed)
        shown = stored.at(t)
        assert torch.equal(shown.samples, direct.images.samples[direct.images.slots["mix"]].flatten())
        assert torch.equal(shown.images, direct.images.images[direct.images.slots["mix"]].flatten(0, 1))
        torch.testing.assert_close(shown.maps["mix"], direct.images.maps["mix"], atol=1e-6, rtol=0)
        assert torch.equal(shown.thresholds["mix"], direct.images.thresholds["mix"])
        assert sorted(stored.strips(t)) == sorted(fixed)


@pytest.fixture
def no_networks(monkeypatch):
    """Loading a generator, a segmenter or a checkpoint raises."""

    def refuse(*args, **kwargs):
        raise AssertionError("a report loaded a network")

    monkeypatch.setattr(zoo, "generator", refuse)
    monkeypatch.setattr(zoo, "segmenter", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_report_draws_an_emergence_folder_again_with_no_network(emergence_run, tmp_path, no_networks, capsys):
    _, _, _, out, _ = emergence_run
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("emergence.json", EmergenceImages.FILE):
        (folder / name).write_bytes((out / name).read_bytes())
    cli.main(["report", str(folder)])
    printed = capsys.readouterr().out
    for name in ("emergence.png", "emergence_heatmap.png", "emergence_units.png", "index.html"):
        assert (folder / name).read_bytes() == (out / name).read_bytes(), name
        assert name in printed


_DDP_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import torch
from lightning_gd.jobs.emergence import dissect_checkpoints
from lightning_gd.jobs.trainer import TrainerOptions
from tests.helpers import TinyGenerator, segmenter

torch.set_num_threads(1)
# Lightning starts the second process at the Trainer's first `test`, running this script again
dissect_checkpoints(
    {checkpoint!r}, "mix", TinyGenerator(), "nets.G", segmenter(), n={n}, top_k=2, units={units}, out={out!r},
    tb_dir=None, trainer=TrainerOptions(devices=2, strategy="ddp"),
)
"""


def test_two_ddp_processes_measure_what_one_process_measures(emergence_run, tmp_path):
    """The job on a Trainer with `devices=2, strategy="ddp"` (two gloo processes started by Lightning, 12 probe
    samples each) on one checkpoint, following the units of the one-process run, writes that run's record and
    images of the checkpoint."""
    ckdir, _, _, one, history = emergence_run
    out = tmp_path / "ddp"
    run = {"checkpoint": str(ckdir / "step=8.ckpt"), "n": PROBE["n"], "units": history[-1]["fixed_units"]}
    script = tmp_path / "ddp_emergence.py"
    script.write_text(_DDP_SCRIPT.format(root=str(ROOT), **run, out=str(out)))
    proc = run_ddp_script(script, tmp_path)
    assert proc.stdout.count("interpretable, ") == 1  # one line per checkpoint: rank 0's
    (two,) = json.loads((out / "emergence.json").read_text())["history"]
    single = json.loads((one / "emergence.json").read_text())["history"][1]
    for record in (two, single):
        del record["seconds"]  # the only thing that may differ: how long it took
    same_numbers(two, single)
    two_images, one_images = EmergenceImages.load(out), EmergenceImages.load(one)
    assert two_images.steps == [8] and two_images.units == one_images.units
    assert torch.equal(two_images.samples[0], one_images.samples[1])
    assert torch.equal(two_images.images[0], one_images.images[1])
    torch.testing.assert_close(two_images.maps[0], one_images.maps[1], atol=1e-6, rtol=0)
    assert torch.equal(two_images.thresholds[0], one_images.thresholds[1])

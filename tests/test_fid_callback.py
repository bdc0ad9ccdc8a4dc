"""The FID callback in someone else's training run: its schedule, its numbers against a direct computation,
artifact ablation (given and found), resume state, and bad settings."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.artifacts import ablation_fid, per_unit_fid, scores_and_features
from lightning_gd.callbacks import FIDMonitor
from lightning_gd.fid import make_extractor, world_real_statistics
from tests.test_callbacks import _fit

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"n": 12, "batch_size": 6, "real_n": 16}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fidmon")
    given = FIDMonitor("nets.G", every_n_batches=2, layer="layer1", artifact_units=[0], cache_dir=str(tmp), **SMALL)
    found = FIDMonitor(
        "nets.G", every_n_batches=4, layer="layer1", find_artifacts=1, k=4, cache_dir=str(tmp), tag="found", **SMALL
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
    ex = make_extractor()
    real = world_real_statistics(ex, SMALL["real_n"], cache_dir=str(tmp), progress=False)
    last = given.history[-1]
    assert last["fid"] == pytest.approx(ablation_fid(G, "layer1", [], ex, real, 12, 5, 6), rel=1e-6)
    assert last["fid_ablated"] == pytest.approx(ablation_fid(G, "layer1", [0], ex, real, 12, 5, 6), rel=1e-6)
    scores, feats = scores_and_features(G, "layer1", ex, 12, 5, 6, progress=False)
    worst = int(torch.argmax(per_unit_fid(scores, feats, real, 4, progress=False)))
    assert found.history[-1]["artifact_units"] == [worst]
    assert found.history[-1]["fid"] == pytest.approx(last["fid"], rel=1e-6)  # same z, same generator


def test_fid_monitor_logs_to_the_run(fitted):
    _, trainer, _, _, _ = fitted
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(trainer.logger.log_dir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"fid/fid", "fid/fid_ablated"} <= tags
    assert len(acc.Scalars("fid/fid")) >= 3


def test_fid_monitor_state_round_trips(fitted):
    _, _, _, given, _ = fitted
    fresh = FIDMonitor("nets.G", layer="layer1", artifact_units=[0], **SMALL)
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
        ({"layer": "layer1", "find_artifacts": 2, "k": 50, "n": 10}, "k in"),
    ],
)
def test_fid_monitor_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FIDMonitor("nets.G", **kwargs)

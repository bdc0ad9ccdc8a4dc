"""The whole dissection recipe on a generator whose units are known by construction (see `tests.helpers`).

`PlantedGenerator` draws, per sample, a 6×6-cell red "dome" at a z-chosen place of a 16×16 featuremap over a blue
sky (top half) and green grass (bottom half); its layer1 unit 0 *is* the dome mask, unit 1 is sparse noise
independent of the scene, unit 2 is dead. A colour segmenter labels exactly the dome mask upsampled (nearest) to
64×64, so unit 0 must come out as "dome" with IoU ≈ 1, the others near chance or 0.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lightning_gd.dissection import DissectSettings, dissect
from lightning_gd.latents import latents
from lightning_gd.models.hooks import LayerNotFoundError
from tests.helpers import CONCEPTS, DOME_SHARE, FM, SCALE, Z_DIM, PlantedGenerator, segmenter

N = 50


pytestmark = pytest.mark.usefixtures("one_thread")


def settings(threshold: str, batch_size: int = N) -> dict:
    return dict(n=N, seed=0, threshold=threshold, q=1 - DOME_SHARE, iqr_n=N, iqr_seed=1, batch_size=batch_size)


@functools.cache
def run(threshold: str, batch_size: int = N):
    d = dissect(PlantedGenerator(), "layer1", segmenter(), progress=False, **settings(threshold, batch_size))
    return d, d.layers["layer1"]


def dense_iou(thresholds: torch.Tensor) -> torch.Tensor:
    """IoU (U, C) from the full bilinear upsampling and dense masks of all N samples: the recipe by hand."""
    g = PlantedGenerator()
    with torch.no_grad():
        z = latents(range(N), Z_DIM, 0)
        r = g.layer1(z)
        labels = segmenter().labels(g.render(r))
    up = F.interpolate(r, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    iou = torch.zeros(3, len(CONCEPTS), dtype=torch.float64)
    for u in range(3):
        m = up[:, u] > thresholds[u]
        for c in range(len(CONCEPTS)):
            k = labels == c
            union = (m | k).sum().item()
            iou[u, c] = (m & k).sum().item() / union if union else 0.0
    return iou


def chance_iou(mask_share: float, concept_share: float) -> float:
    """IoU of a mask independent of a concept: the bar a noise unit reaches by luck."""
    inter = mask_share * concept_share
    return inter / (mask_share + concept_share - inter)


# ----------------------------------------------------------------------------------------------- planted unit


@pytest.mark.parametrize("threshold", ["quantile", "iqr"])
def test_planted_unit_is_found(threshold):
    d, lay = run(threshold)
    iou = lay.iou
    print(f"\n{threshold}: thresholds {lay.thresholds.tolist()}\nIoU (sky, dome, grass):\n{iou}")
    units = d.units("layer1")
    assert units[0]["label"] == "dome" and units[0]["interpretable"]
    # its threshold falls in the gap between the outside values (≤ 0.375) and the inside ones (≥ 0.390625)
    assert 0.375 <= lay.thresholds[0] < 0.390625
    assert iou[0, 1] >= 0.95
    assert iou[1].max() < 0.2
    assert (iou[2] == 0).all() and not units[2]["interpretable"]  # dead: empty mask in both modes
    # iqr: exact masks at the thresholds; quantile: the one pass interpolates inside the threshold's band bin
    torch.testing.assert_close(iou, dense_iou(lay.thresholds), atol=1e-6 if threshold == "iqr" else 2e-3, rtol=0)
    # the noise unit is no better than an independent mask of its size could be by luck (+ sampling slack)
    g = PlantedGenerator()
    with torch.no_grad():
        r = g.layer1(latents(range(N), Z_DIM, 0))
    up = F.interpolate(r, scale_factor=SCALE, mode="bilinear", align_corners=False)
    share = (up[:, 1] > lay.thresholds[1]).float().mean().item()
    luck = max(chance_iou(share, s) for s in (0.5 * (1 - DOME_SHARE), DOME_SHARE))
    print(f"noise unit: mask share {share:.3f}, IoU {iou[1].max():.3f}, chance {luck:.3f}")
    assert iou[1].max() < luck + 0.05
    # top images: each unit's peak over the image's mean |peak| across units, recomputed here by brute force;
    # the dead unit peaks at 0 in every image — ties, so the smallest sample indices
    peaks = r.amax((2, 3))  # (N, U)
    level = peaks.abs().mean(1, keepdim=True)
    score = torch.where(peaks >= 0, peaks / level, peaks * level)
    for u in range(peaks.shape[1]):
        ref = sorted(range(N), key=lambda i: (-float(score[i, u]), i))[:10]
        assert lay.top_indices[u].tolist() == ref, u
        torch.testing.assert_close(lay.top_scores[u], score[ref, u])
        assert lay.candidates[u, :10].tolist() == ref and lay.candidates.shape[1] == min(N, 50)
    assert lay.top_indices[2].tolist() == list(range(10)) and lay.featuremap_size == (FM, FM)


@pytest.mark.parametrize("threshold", ["quantile", "iqr"])
def test_batch_size_does_not_change_the_result(threshold):
    _, ref = run(threshold)
    for bs in (1, 7):
        _, lay = run(threshold, bs)
        assert torch.equal(lay.thresholds, ref.thresholds), bs
        torch.testing.assert_close(lay.iou, ref.iou, atol=1e-6, rtol=0)
        assert torch.equal(lay.top_indices, ref.top_indices) and torch.equal(lay.top_scores, ref.top_scores)


# ----------------------------------------------------------------------------------------------- cache


def test_stage_cache(tmp_path):
    kw = dict(n=20, batch_size=10, q=0.9, progress=False, cache_dir=tmp_path)
    # a writer that died half-way leaves a temporary file behind; it must never be read
    stale = tmp_path / ".dissect_quantile-layer1-0123456789abcdef.safetensors.999.tmp"
    stale.write_bytes(b"\x00half")
    g, seg = PlantedGenerator(), segmenter()
    first = dissect(g, "layer1", seg, **kw).layers["layer1"]
    assert g.calls == 1 + 2  # probe, 2 batches of the one pass (thresholds and tallies together)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and list(tmp_path.glob("*.tmp")) == [stale]  # the writes left no temporaries

    g.calls = 0
    again = dissect(g, "layer1", seg, **kw).layers["layer1"]
    assert g.calls == 1  # the probe only: both stages come from the cache
    assert torch.equal(again.iou, first.iou) and torch.equal(again.thresholds, first.thresholds)
    assert torch.equal(again.top_indices, first.top_indices) and again.featuremap_size == (FM, FM)

    g.calls = 0
    other = dissect(g, "layer1", seg, **{**kw, "q": 0.8}).layers["layer1"]
    assert g.calls == 3  # a different q: thresholds and tallies recomputed
    assert not torch.equal(other.thresholds, first.thresholds)

    # replace the finished files by half-written temporaries: they are ignored and the stages recomputed
    for name in files:
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).unlink()
        (tmp_path / f".{name}.4242.tmp").write_bytes(data[: len(data) // 2])
    g.calls = 0
    redo = dissect(g, "layer1", seg, **kw).layers["layer1"]
    assert g.calls == 3 and torch.equal(redo.iou, first.iou)


def test_settings_and_overrides():
    g, seg = PlantedGenerator(), segmenter()
    s = DissectSettings(layers=("layer1",), n=8, q=0.9)
    d = dissect(g, "layer1", seg, settings=s, q=0.5, progress=False)
    assert d.settings == replace(s, q=0.5)  # an override applies even when the layers agree
    assert d.layers["layer1"].thresholds[0] == 0  # half of the samples or more are 0 in every unit
    d = dissect(g, "layer1", seg, settings=DissectSettings(layers=("embed",), n=8), progress=False)
    assert d.settings.layers == ("layer1",)


# ----------------------------------------------------------------------------------------------- errors


def test_errors():
    g, seg = PlantedGenerator(), segmenter()
    g.train()
    with pytest.raises(LayerNotFoundError, match="layer1") as err:
        dissect(g, "layr1", seg, n=4, progress=False)
    assert isinstance(err.value, KeyError)
    with pytest.raises(ValueError, match="quantile, iqr"):
        dissect(g, "layer1", seg, n=4, threshold="bogus", progress=False)
    with pytest.raises(ValueError, match="featuremap"):
        dissect(g, "embed", seg, n=4, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        dissect(PlantedGenerator(nan=True), "layer1", seg, n=4, progress=False)
    with pytest.raises(ValueError, match="iqr_seed"):
        dissect(g, "layer1", seg, n=4, threshold="iqr", seed=3, iqr_seed=3, progress=False)
    assert g.training  # the generator's mode is restored after a failure

"""What a dissection is: per unit its label, category, IoU and whether it is interpretable, the summary of a layer,
and the realism filter (paper §S-6.3) that leaves units with a high per-unit FID out of the labels."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.dissection import DissectSettings, dissect
from tests.helpers import DOME_SHARE, PlantedGenerator, segmenter

pytestmark = pytest.mark.usefixtures("one_thread")


def planted_dissection():
    return dissect(PlantedGenerator(), "layer1", segmenter(), n=40, batch_size=40, q=1 - DOME_SHARE, progress=False)


def test_realism_filter():
    d = planted_dissection()
    assert d.units("layer1")[0]["label"] == "dome" and d.units("layer1")[0]["interpretable"]
    before, dome_iou = d.summary("layer1"), d.units("layer1")[0]["iou"]
    assert dome_iou > 0.9 and before["unrealistic"] == [] and all(u["realistic"] for u in d.units("layer1"))

    # a low FID: the dome unit stays; a unit at exactly the threshold is not above it
    assert d.filter_unrealistic("layer1", [3.0, 10.0, 40.0], max_fid=10.0) == [2]
    units = d.units("layer1")
    assert units[0]["interpretable"] and units[0]["realistic"] and units[1]["realistic"]
    assert not units[2]["realistic"] and not units[2]["interpretable"]
    assert d.summary("layer1")["unrealistic"] == [2] and d.summary("layer1")["per_concept"].get("dome") == 1

    # a high FID: the dome unit is left out, its IoU kept; the filter replaces the previous one
    assert d.filter_unrealistic("layer1", torch.tensor([80.0, 1.0, 1.0]), max_fid=10.0) == [0]
    units = d.units("layer1")
    assert units[0]["label"] == "dome" and not units[0]["interpretable"] and not units[0]["realistic"]
    assert units[0]["iou"] == dome_iou
    assert all(u["realistic"] for u in units[1:])
    summ = d.summary("layer1")
    assert summ["unrealistic"] == [0] and "dome" not in summ["per_concept"]
    assert summ["interpretable"] == before["interpretable"] - 1

    with pytest.raises(ValueError, match="2 units but layer 'layer1' has 3"):
        d.filter_unrealistic("layer1", [1.0, 2.0], 10.0)
    with pytest.raises(KeyError, match="layer9"):
        d.filter_unrealistic("layer9", [1.0, 2.0, 3.0], 10.0)
    assert d.summary("layer1")["unrealistic"] == [0]  # failures leave the filter as it was


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown threshold mode 'bogus'; choose one of quantile, iqr"):
        DissectSettings(layers=("layer1",), threshold="bogus")
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\)"):
        DissectSettings(layers=("layer1",), q=1.0)
    with pytest.raises(ValueError, match="must be positive"):
        DissectSettings(layers=("layer1",), top_k=0)
    with pytest.raises(ValueError, match="iqr_seed must differ from seed"):
        DissectSettings(layers=("layer1",), threshold="iqr", seed=1, iqr_seed=1)


# ----------------------------------------------------------------------------------------------- shown top images


def test_distinct_top_images_by_hand():
    from lightning_gd.dissection.results import distinct_top_images

    cands = torch.tensor([[5, 6, 7], [5, 8, 9]])
    assert distinct_top_images(cands, 2).tolist() == [[5, 6], [8, 9]]  # unit 1 leaves sample 5 to unit 0
    assert distinct_top_images(cands, 2, order=[1, 0]).tolist() == [[6, 7], [5, 8]]  # unit 1 chooses first
    # both units want the same two samples: one each in the distinct rounds, then each is filled with the other
    assert distinct_top_images(torch.tensor([[1, 2], [1, 2]]), 2).tolist() == [[1, 2], [1, 2]]  # best first
    # fewer candidates than k: -1 pads
    assert distinct_top_images(torch.tensor([[3, -1, -1]]), 2).tolist() == [[3, -1]]


def test_distinct_top_images_against_brute_force():
    from lightning_gd.dissection.results import distinct_top_images

    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        U, P, k, n = 12, 8, 4, int(torch.randint(6, 60, (1,), generator=gen))
        cands = torch.stack([torch.randperm(n, generator=gen)[:P] for _ in range(U)])
        cands[0, 5:] = -1  # a unit with few candidates
        order = torch.randperm(U, generator=gen).tolist()
        got = distinct_top_images(cands, k, order)
        # brute force: the rounds written out the slow way
        chosen, used = {u: [] for u in range(U)}, []
        for _ in range(k):
            for u in order:
                free = [int(i) for i in cands[u] if i >= 0 and int(i) not in used]
                if free:
                    chosen[u].append(free[0])
                    used.append(free[0])
        for u in order:
            rest = [int(i) for i in cands[u] if i >= 0 and int(i) not in chosen[u]]
            chosen[u] += rest[: k - len(chosen[u])]
            chosen[u].sort(key=[int(i) for i in cands[u]].index)
        for u in range(U):
            row = [int(i) for i in got[u] if i >= 0]
            assert row == chosen[u], (trial, u)
            assert len(row) == min(k, int((cands[u] >= 0).sum())) and len(set(row)) == len(row)
        plain = {int(i) for i in cands[:, :k].flatten() if i >= 0}
        assert len({int(i) for i in got.flatten() if i >= 0}) >= len(plain)  # never fewer distinct images

"""Average causal effects (paper Eq. 4, Figs. 4 and 9) of unit rankings on `CausalPlantedGenerator` (units 0 and 1
draw the dome, unit 2 is a decoy the renderer ignores, unit 3 noise): the ablation counts and insertion sums
against per-image loops, `summarize` against the formulas by hand, and the per-batch sums adding up across any
batch split. `CausalSearch.test` and `ace.evaluate` agree in tests/causal/test_search.py."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.causal import ace
from lightning_gd.latents import latents
from lightning_gd.models.split import LayerSplit
from tests.helpers import CAUSAL_UNITS, CONCEPTS, FM, SCALE, Z_DIM, CausalPlantedGenerator, dome_cell, segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

DOME = CONCEPTS.index("dome")


RANKINGS = torch.tensor([[0, 1, 2, 3], [2, 3, 1, 0], [3, 0, 2, 1], [1, 2, 0, 3]])
SIZES = [1, 2, 4]


def labels_of(g, seg, r: torch.Tensor) -> torch.Tensor:
    return seg.labels(g.render(r[None]))[0]


def ablation_by_hand(g, seg, z) -> tuple[torch.Tensor, torch.Tensor]:
    C = len(seg.concepts)
    original = torch.zeros(C, dtype=torch.float64)
    ablated = torch.zeros(len(RANKINGS), len(SIZES), C, dtype=torch.float64)
    for b in range(len(z)):
        r = g.layer1(z[b : b + 1])[0]
        for c in range(C):
            original[c] += float((labels_of(g, seg, r) == c).sum())
        for i, order in enumerate(RANKINGS):
            for j, n in enumerate(SIZES):
                edited = r.clone()
                edited[order[:n]] = 0.0
                lab = labels_of(g, seg, edited)
                for c in range(C):
                    ablated[i, j, c] += float((lab == c).sum())
    return original, ablated


def window_by_hand(loc: int) -> torch.Tensor:
    y, x = divmod(loc, FM)
    w = torch.zeros(FM * SCALE, FM * SCALE, dtype=torch.bool)
    for yy in range(max(0, y - 1), min(FM, y + 2)):
        for xx in range(max(0, x - 1), min(FM, x + 2)):
            w[yy * SCALE : (yy + 1) * SCALE, xx * SCALE : (xx + 1) * SCALE] = True
    return w


def insertion_by_hand(g, seg, z, n, k, locations) -> dict[str, torch.Tensor]:
    before = 0.0
    after = torch.zeros(len(RANKINGS), dtype=torch.float64)
    appeared = torch.zeros(len(RANKINGS), dtype=torch.float64)
    window = 0.0
    for b in range(len(z)):
        r = g.layer1(z[b : b + 1])[0]
        loc = int(locations[b])
        y, x = divmod(loc, FM)
        w = window_by_hand(loc)
        window += float(w.sum())
        had = int(((labels_of(g, seg, r) == DOME) & w).sum())
        before += had
        for i, order in enumerate(RANKINGS):
            edited = r.clone()
            for u in order[:n].tolist():
                edited[u, y, x] = k[u]
            has = int(((labels_of(g, seg, edited) == DOME) & w).sum())
            after[i] += has
            appeared[i] += float(has > 0 and had == 0)
    return {"before": before, "after": after, "appeared": appeared, "window": window, "count": float(len(z))}


@torch.no_grad()
def test_ablation_counts_match_per_image_loops():
    g, seg = CausalPlantedGenerator(), segmenter()
    split = LayerSplit(g, "layer1")
    z = latents(range(6), Z_DIM, seed=102)
    original, ablated = ace.ablation_counts(split, seg, z, RANKINGS, SIZES)
    exp_original, exp_ablated = ablation_by_hand(g, seg, z)
    assert torch.equal(original, exp_original) and torch.equal(ablated, exp_ablated)
    assert original[DOME] > 0
    # units 0 and 1 together erase every dome pixel; the decoy and the noise unit erase none
    assert ablated[0, 1, DOME] == 0 and ablated[1, 1, DOME] == original[DOME]
    # the featuremap may be passed in: the same counts
    o2, a2 = ace.ablation_counts(split, seg, z, RANKINGS, SIZES, r=split.h(z))
    assert torch.equal(o2, original) and torch.equal(a2, ablated)


@torch.no_grad()
def test_insertion_sums_match_per_image_loops():
    g, seg = CausalPlantedGenerator(), segmenter()
    split = LayerSplit(g, "layer1")
    z = latents(range(6), Z_DIM, seed=102)
    k = torch.tensor([1.0, 1.0, 1.0, 0.2])
    r = split.h(z)
    # corners, an edge, a dome cell, and cells next to a dome (the window overlaps it)
    locations = torch.tensor([0, FM * FM - 1, FM - 1, dome_cell(r, 3, False), 0, 0])
    for b in (4, 5):
        cell = dome_cell(r, b, True)
        locations[b] = cell - 1 if cell % FM else cell + 6  # left of the dome, or right of it
    for n in (1, 2):
        got = ace.insertion_sums(split, seg, z, RANKINGS, n, k, locations, DOME)
        expected = insertion_by_hand(g, seg, z, n, k, locations)
        for key in ("before", "window", "count"):
            assert float(got[key]) == expected[key], (n, key)
        assert torch.equal(got["after"], expected["after"]), n
        assert torch.equal(got["appeared"], expected["appeared"]), n
    # with both causal units inserted the location's 16 pixels turn dome wherever they were not
    assert got["after"][0] > got["before"] and got["after"][1] == got["before"]
    assert got["window"] >= 3 * 4 * SCALE * SCALE  # three corners: 4 cells each, the others 4 to 9


def test_summarize_by_hand():
    g, seg = CausalPlantedGenerator(), segmenter()
    z = latents(range(6), Z_DIM, seed=102)
    with torch.no_grad():
        original, ablated = ablation_by_hand(g, seg, z)
        ins = insertion_by_hand(g, seg, z, 2, torch.ones(CAUSAL_UNITS), torch.tensor([0, 5, 17, 100, 200, 255]))
    names = ["alpha", "iou", "random0", "random1"]
    insertion = {key: torch.as_tensor(v, dtype=torch.float64) for key, v in ins.items()}
    out = ace.summarize(CONCEPTS, "dome", names, SIZES, original, ablated, insertion, top_n=2)
    removed = [[1 - float(ablated[i, j, DOME]) / float(original[DOME]) for j in range(len(SIZES))] for i in range(4)]
    assert out["ablation_removed"]["alpha"] == pytest.approx(removed[0])
    assert out["ablation_removed"]["iou"] == pytest.approx(removed[1])
    mean = [(removed[2][j] + removed[3][j]) / 2 for j in range(len(SIZES))]
    std = [abs(removed[2][j] - removed[3][j]) / 2**0.5 for j in range(len(SIZES))]  # sample std of two
    assert out["ablation_removed"]["random_mean"] == pytest.approx(mean)
    assert out["ablation_removed"]["random_std"] == pytest.approx(std)
    assert out["removed_at_top_n"]["alpha"] == pytest.approx(1.0)  # units 0 and 1: every dome pixel
    assert out["removed_at_top_n"]["iou"] == pytest.approx(0.0)  # the decoy and the noise unit: none
    presence = float(original[DOME] / original.sum())
    assert out["presence"] == pytest.approx(presence)
    for i, name in enumerate(names[:2]):
        gain = (float(ins["after"][i]) - ins["before"]) / ins["window"]
        assert out["insertion_at_top_n"][name]["ace"] == pytest.approx(gain / presence)
        assert out["insertion_at_top_n"][name]["appeared"] == pytest.approx(float(ins["appeared"][i]) / 6)
    j = SIZES.index(2)
    for o, other in enumerate(CONCEPTS):
        side = float(ablated[0, j, o] / original[o] - 1)
        assert out["side_effects_at_top_n"]["alpha"][other] == pytest.approx(side)


def test_batch_sums_add_up_over_any_batch_split():
    """`sum_metrics` summing `batch_sums` over batches of 2 and 4 gives what one batch of all 6 gives."""
    split = LayerSplit(CausalPlantedGenerator(), "layer1")
    seg = segmenter()
    k_c = torch.tensor([1.0, 1.0, 1.0, 0.2])
    idx = torch.arange(6)
    z = latents(idx, Z_DIM, seed=102)
    whole = ace.batch_sums(split, seg, z, idx, RANKINGS, SIZES, 2, k_c, DOME, location_seed=0)
    metrics = ace.sum_metrics(len(CONCEPTS), len(RANKINGS), len(SIZES))
    assert set(metrics) == set(whole)
    for part in idx.split(4):
        for key, value in ace.batch_sums(split, seg, z[part], part, RANKINGS, SIZES, 2, k_c, DOME, 0).items():
            metrics[key].update(value)
    for key, value in whole.items():
        total = metrics[key].compute()
        assert total.shape == value.shape and torch.equal(total.double(), value.double()), key
    assert float(whole["count"]) == 6 and whole["original"][DOME] > 0
    # the insertion locations are fixed per sample index, whatever the batch
    assert torch.equal(ace.uniform_locations(idx, (FM, FM), 0)[4:], ace.uniform_locations(idx[4:], (FM, FM), 0))

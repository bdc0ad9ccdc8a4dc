"""Interventions (paper §3.2, Eqs. 3 and 5; §S-6.4) against brute force: the blend r + P ⊙ α ⊙ (target − r) by
explicit loops over (b, u, y, x), the location helpers, and k_c by a per-sample, per-location recount. The `f ∘ h`
split of the generator is tested in tests/models/test_split.py."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gd.causal.interventions import (
    ablate,
    at_locations,
    concept_means,
    coverage,
    insert,
    intervene,
    location_mask,
    unit_indicator,
)
from lightning_gd.latents import latents
from lightning_gd.models.split import LayerSplit
from tests.helpers import (
    CAUSAL_UNITS,
    Z_DIM,
    CausalPlantedGenerator,
    ColourSegmenter,
    NoLakeSegmenter,
    PlantedGenerator,
    segmenter,
)

pytestmark = pytest.mark.usefixtures("one_thread")

B, U, H, W = 3, 4, 3, 5


# ----------------------------------------------------------------------------------------------- brute force


def blend_loops(r: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """r'[b, u, y, x] = r + P[b, y, x] · α[u] · (t[u] − r), one element at a time (t = 0 without a target)."""
    out = r.clone()
    for b in range(r.shape[0]):
        mb = 0 if mask.shape[0] == 1 else b
        for u in range(r.shape[1]):
            t = 0.0 if target is None else float(target[u])
            for y in range(r.shape[2]):
                for x in range(r.shape[3]):
                    p = float(mask[mb, 0, y, x])
                    out[b, u, y, x] = float(r[b, u, y, x]) + p * float(alpha[u]) * (t - float(r[b, u, y, x]))
    return out


def onehot_loops(locations: list[int], h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(len(locations), 1, h, w)
    for b, loc in enumerate(locations):
        mask[b, 0, loc // w, loc % w] = 1.0
    return mask


def random_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(B, U, H, W, generator=gen)
    alpha = torch.rand(U, generator=gen)
    target = torch.randn(U, generator=gen)
    return r, alpha, target


# ----------------------------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("with_target", [False, True])
@pytest.mark.parametrize("mask_kind", ["locations", "whole", "soft_shared", "soft_per_sample"])
def test_intervene_partial_alpha_matches_loops(with_target, mask_kind):
    r, alpha, target = random_case()
    gen = torch.Generator().manual_seed(1)
    mask = {
        "locations": location_mask(torch.tensor([0, 7, H * W - 1]), (H, W)),
        "whole": torch.ones(1, 1, H, W),
        "soft_shared": torch.rand(1, 1, H, W, generator=gen),
        "soft_per_sample": torch.rand(B, 1, H, W, generator=gen),
    }[mask_kind]
    t = target if with_target else None
    got = intervene(r, alpha, mask, t)
    torch.testing.assert_close(got, blend_loops(r, alpha, mask, t), atol=1e-6, rtol=0)
    # Eq. 5 in closed form, per location: x_a' = (1 − α) r, x_i' = α k + (1 − α) r where P = 1
    if mask_kind == "whole":
        a = alpha[None, :, None, None]
        expected = a * target[None, :, None, None] + (1 - a) * r if with_target else (1 - a) * r
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # nothing moves outside P, and α = 0 changes nothing at all
    assert torch.equal(got[(mask.expand(B, U, H, W) == 0)], r[(mask.expand(B, U, H, W) == 0)])
    assert torch.equal(intervene(r, torch.zeros(U), mask, t), r)


@pytest.mark.parametrize("whole", [False, True])
def test_ablate_and_insert_match_loops(whole):
    r, _, k = random_case(2)
    units = [0, 2]
    indicator = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = None if whole else location_mask(torch.tensor([4, 0, 14]), (H, W))
    loop_mask = torch.ones(1, 1, H, W) if whole else mask
    ablated = ablate(r, units, mask)
    inserted = insert(r, units, k, mask)
    torch.testing.assert_close(ablated, blend_loops(r, indicator, loop_mask, None), atol=1e-6, rtol=0)
    torch.testing.assert_close(inserted, blend_loops(r, indicator, loop_mask, k), atol=1e-6, rtol=0)
    # Eq. 3 exactly: the chosen units are 0 (ablation) or k (insertion) at P; every other value is untouched
    for b in range(B):
        for u in range(U):
            for y in range(H):
                for x in range(W):
                    inside = float(loop_mask[0 if loop_mask.shape[0] == 1 else b, 0, y, x]) == 1.0
                    if u in units and inside:
                        assert ablated[b, u, y, x] == 0
                        assert inserted[b, u, y, x] == pytest.approx(float(k[u]), abs=1e-6)
                    else:
                        assert ablated[b, u, y, x] == r[b, u, y, x]
                        assert inserted[b, u, y, x] == r[b, u, y, x]
    # units given as a tensor act the same as a list; no units is the identity
    assert torch.equal(ablate(r, torch.tensor(units), mask), ablated)
    assert torch.equal(insert(r, [], k, mask), r) and torch.equal(ablate(r, [], mask), r)


def test_unit_indicator():
    assert unit_indicator([3, 1], 5).tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert unit_indicator(torch.tensor([[0], [0]]), 2).tolist() == [1.0, 0.0]  # repeated and nested: still 0/1
    assert unit_indicator([], 3).tolist() == [0.0, 0.0, 0.0]
    for bad in ([5], [-1]):
        with pytest.raises(IndexError, match=r"\[0, 5\)"):
            unit_indicator(bad, 5)


def test_location_mask_and_at_locations():
    locs = [0, 4, 5, 14, 7]
    mask = location_mask(torch.tensor(locs), (H, W))
    assert mask.shape == (len(locs), 1, H, W)
    assert torch.equal(mask, onehot_loops(locs, H, W))
    assert torch.equal(mask.sum((1, 2, 3)), torch.ones(len(locs)))
    assert location_mask(torch.zeros(0, dtype=torch.long), (H, W)).shape == (0, 1, H, W)
    for bad in ([H * W], [-1]):
        with pytest.raises(IndexError, match=f"{H}×{W}"):
            location_mask(torch.tensor(bad), (H, W))

    maps = torch.randn(len(locs), H, W)
    got = at_locations(maps, torch.tensor(locs))
    expected = torch.tensor([float(maps[b, loc // W, loc % W]) for b, loc in enumerate(locs)])
    assert torch.equal(got, expected)
    # reading where the one-hot mask is 1 is the same thing
    assert torch.equal(got, (maps * mask[:, 0]).sum((1, 2)))


def adaptive_mean_loops(scores: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Mean over each location's pixels, the bins of adaptive pooling: [⌊i·H/h⌋, ⌈(i+1)·H/h⌉)."""
    Bn, Hp, Wp = scores.shape
    out = torch.zeros(Bn, h, w)
    for b in range(Bn):
        for i in range(h):
            for j in range(w):
                y0, y1 = (i * Hp) // h, math.ceil((i + 1) * Hp / h)
                x0, x1 = (j * Wp) // w, math.ceil((j + 1) * Wp / w)
                out[b, i, j] = scores[b, y0:y1, x0:x1].double().mean()
    return out


@pytest.mark.parametrize("pixels", [(12, 20), (10, 13)])
def test_coverage_matches_loops(pixels):
    gen = torch.Generator().manual_seed(3)
    hard = torch.rand(2, *pixels, generator=gen) > 0.6  # a 0/1 concept mask: the covered fraction
    soft = torch.rand(2, *pixels, generator=gen)  # soft probabilities: their mean
    for scores in (hard, soft):
        got = coverage(scores, (H, W))
        assert got.shape == (2, H, W) and got.dtype == torch.float32
        torch.testing.assert_close(got, adaptive_mean_loops(scores, H, W), atol=1e-6, rtol=0)
    # a 4×4-pixel block per location: the fraction of its 16 pixels
    block = torch.zeros(1, 4 * H, 4 * W, dtype=torch.bool)
    block[0, 0:3, 0:2] = True  # 6 pixels of location (0, 0)
    assert coverage(block, (H, W))[0, 0, 0] == pytest.approx(6 / 16)
    assert coverage(block, (H, W)).sum() == pytest.approx(6 / 16)


# ----------------------------------------------------------------------------------------------- k_c


class ShiftedColourSegmenter(ColourSegmenter):
    """The colour segmenter reading the image shifted by (1, 2) pixels, so a featuremap location's 4×4 pixels are
    only partly labelled dome at the dome's edges: fractional weights for k_c."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(super().logits(x), shifts=(1, 2), dims=(2, 3))


def k_by_hand(generator, seg, concept: str, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """Σ w·r_u / Σ w with w = the share of each location's pixels labelled c, one sample and location at a time;
    and the mean share of each image's pixels labelled c."""
    c = seg.concepts.index(concept)
    num = torch.zeros(CAUSAL_UNITS if isinstance(generator, CausalPlantedGenerator) else 3, dtype=torch.float64)
    den, share = 0.0, 0.0
    for i in range(n):
        z = latents([i], Z_DIM, seed)
        with torch.no_grad():
            r = generator.layer1(z)[0].double()
            labels = seg.labels(generator(z))[0]
        hits = (labels == c).double()
        share += float(hits.mean())
        h, w = r.shape[-2:]
        sy, sx = labels.shape[0] // h, labels.shape[1] // w
        for y in range(h):
            for x in range(w):
                wt = float(hits[y * sy : (y + 1) * sy, x * sx : (x + 1) * sx].mean())
                num += wt * r[:, y, x]
                den += wt
    return (num / den).float(), share / n


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("make", [PlantedGenerator, CausalPlantedGenerator])
def test_concept_means_match_brute_force(make, shifted):
    n, seed = 9, 4
    g = make()
    seg = ShiftedColourSegmenter() if shifted else segmenter()
    split = LayerSplit(g, "layer1")
    expected_k, expected_presence = k_by_hand(g, seg, "dome", n, seed)
    results = [concept_means(split, seg, "dome", n=n, seed=seed, batch_size=bs, progress=False) for bs in (1, 7, n)]
    for res in results:
        torch.testing.assert_close(res["k_c"], expected_k, atol=1e-6, rtol=0)
        assert float(res["presence"]) == pytest.approx(expected_presence, abs=1e-9)
    # the batch split changes nothing (float64 sums)
    assert torch.allclose(results[0]["k_c"], results[1]["k_c"], atol=1e-7, rtol=0)
    assert torch.allclose(results[0]["k_c"], results[2]["k_c"], atol=1e-7, rtol=0)
    k = results[-1]["k_c"]
    if not shifted:
        # the dome units are exactly 1 wherever the dome is: k = 1; the noise unit's k is its mean there (> 0)
        dome_units = [0] if make is PlantedGenerator else [0, 1, 2]
        torch.testing.assert_close(k[dome_units], torch.ones(len(dome_units)), atol=1e-6, rtol=0)
        noise = 1 if make is PlantedGenerator else 3
        assert 0 < k[noise] < 1
    else:
        # shifted labels cover the dome's edge cells only partly, and spill onto cells where the dome units are 0
        assert 0.5 < k[0] < 1


def test_concept_means_errors():
    split = LayerSplit(CausalPlantedGenerator(), "layer1")
    with pytest.raises(ValueError, match="'lake' does not occur in 6 samples"):
        concept_means(split, NoLakeSegmenter(), "lake", n=6, batch_size=4, progress=False)
    with pytest.raises(KeyError, match="sky, dome, grass") as err:
        concept_means(split, segmenter(), "dom", n=6, progress=False)
    assert "did you mean dome" in str(err.value)

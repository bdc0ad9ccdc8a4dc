"""The `f ∘ h` split of a generator at a probed layer (`LayerSplit`) in each of its three strategies — the
generator's own `forward_from`, the tail of an `nn.Sequential`, and a replay with the featuremap replaced — and
`check_featuremap`, which every reader of a layer goes through."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.causal.interventions import ablate, insert, location_mask
from lightning_gd.latents import latents
from lightning_gd.models.hooks import LayerNotFoundError
from lightning_gd.models.split import LayerSplit, check_featuremap
from tests.helpers import (
    CAUSAL_UNITS,
    FM,
    SCALE,
    Z_DIM,
    CausalPlantedForwardFrom,
    CausalPlantedGenerator,
    CausalPlantedSequential,
    EmptyLayerGenerator,
    PlantedGenerator,
    segmenter,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("make", "strategy"),
    [
        (CausalPlantedForwardFrom, "forward_from"),
        (CausalPlantedSequential, "sequential"),
        (CausalPlantedGenerator, "replay"),
    ],
)
def test_layer_split_strategies(make, strategy):
    g = make()
    split = LayerSplit(g, "layer1")
    assert split.strategy == strategy and split.z_dim == Z_DIM
    z = latents(range(5), Z_DIM, seed=7)
    with torch.no_grad():
        x = g(z)
        r = split.h(z)
        assert r.shape == (5, CAUSAL_UNITS, FM, FM)
        assert torch.equal(r, g.layer1(z))
        assert torch.equal(split.f(r, z), x)  # f(h(z)) == G(z)
        # f renders the featuremap it is given: ablating the two causal units erases the dome, the decoy and
        # the noise unit change nothing
        labels = segmenter().labels
        assert (labels(x) == 1).any()
        assert not (labels(split.f(ablate(r, [0, 1]), z)) == 1).any()
        assert torch.equal(split.f(ablate(r, [2, 3]), z), x)
        assert torch.equal(split.edited(z, lambda t: ablate(t, [0, 1])), split.f(ablate(r, [0, 1]), z))
        # inserting the causal units at one location draws the dome's colour exactly on its pixels
        loc = torch.zeros(5, dtype=torch.long)  # location (0, 0): sky in every sample
        before = labels(x)[:, :SCALE, :SCALE]
        xi = split.f(insert(r, [0, 1], torch.ones(CAUSAL_UNITS), location_mask(loc, (FM, FM))), z)
        assert (labels(xi)[:, :SCALE, :SCALE] == 1).all()
        changed = (labels(xi) != labels(x)).flatten(1).sum(1)
        assert torch.equal(changed, (before != 1).flatten(1).sum(1))


def test_layer_split_h_stops_at_the_layer():
    g = CausalPlantedGenerator()
    split = LayerSplit(g, "layer1")
    calls = []
    handle = g.render.register_forward_hook(lambda *args: calls.append(1))
    try:
        split.h(latents(range(2), Z_DIM))
        assert calls == []  # the renderer never ran
        split.f(split.h(latents(range(2), Z_DIM)), latents(range(2), Z_DIM))
        assert calls == [1]
    finally:
        handle.remove()


def test_layer_split_replay_needs_z():
    split = LayerSplit(CausalPlantedGenerator(), "layer1")
    r = split.h(latents(range(2), Z_DIM))
    with pytest.raises(ValueError, match="pass the z that produced r"):
        split.f(r)
    # the other strategies do not need it
    assert LayerSplit(CausalPlantedSequential(), "layer1").f(r).shape == (2, 3, FM * SCALE, FM * SCALE)
    assert LayerSplit(CausalPlantedForwardFrom(), "layer1").f(r).shape == (2, 3, FM * SCALE, FM * SCALE)


class WrongForwardFrom(CausalPlantedGenerator):
    def forward_from(self, layer: str, r: torch.Tensor) -> torch.Tensor:
        return self.render(r.flip(-1))


def test_layer_split_errors():
    with pytest.raises(ValueError, match="'empty' has no units"):
        LayerSplit(EmptyLayerGenerator(), "empty")
    with pytest.raises(ValueError, match="f\\(h\\(z\\)\\) differs from G\\(z\\)"):
        LayerSplit(WrongForwardFrom(), "layer1")
    with pytest.raises(ValueError, match="must output a featuremap"):
        LayerSplit(PlantedGenerator(), "embed")
    with pytest.raises(LayerNotFoundError, match="layer1"):
        LayerSplit(CausalPlantedGenerator(), "layr1")
    assert LayerSplit(EmptyLayerGenerator(), "inner.layer1").strategy == "replay"


def test_check_featuremap():
    r = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    out = check_featuremap(r, "layer")
    assert out.dtype == torch.float32 and torch.equal(out, r.float())
    with pytest.raises(ValueError, match=r"layer 'x' must output a featuremap \(B, units, h, w\); got \(2, 3\)$"):
        check_featuremap(torch.zeros(2, 3), "x")
    with pytest.raises(ValueError, match="got tuple .*name the featuremap's element"):
        check_featuremap((r, r), "x")
    with pytest.raises(ValueError, match="'x' has no units"):
        check_featuremap(torch.zeros(2, 0, 4, 4), "x")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="'x' produced NaN or Inf"):
            check_featuremap(torch.full((1, 1, 2, 2), bad), "x")

"""The world's networks: the `Generator`'s contract (z shape check, output range, featuremap sizes), and the shipped
models load, have the right shapes and ranges, and the segmenter is accurate."""

import re

import pytest
import torch

from lightning_gd import world
from lightning_gd.world.evaluate import FRESH_SEED, confusion, iou_from_confusion, render
from lightning_gd.world.models import Generator

LAYERS = ("layer1", "layer2", "layer3", "layer4", "layer5", "layer6")


def test_generator_shapes_and_range():
    G = world.load_generator()
    assert not G.training
    x = G(G.sample_z(4, seed=0))
    assert x.shape == (4, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.05  # not a constant image
    from lightning_gd.models.hooks import TraceDict

    sizes = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 16, "layer5": 32, "layer6": 64}
    with TraceDict(G, list(sizes)) as tr:
        G(G.sample_z(1, seed=0))
    assert {name: tr[name].output.shape[-1] for name in sizes} == sizes
    assert torch.equal(G(G.sample_z(2, seed=3)), G(G.sample_z(2, seed=3)))  # eval mode: deterministic


def test_segmenter_accuracy_on_fresh_renders():
    seg = world.load_segmenter()
    images, labels = render(200, seed=FRESH_SEED + 1, show_progress=False)
    probs = seg.probs(images)
    assert probs.shape == (200, len(world.CONCEPTS), 64, 64)
    assert torch.allclose(probs.sum(1), torch.ones(200, 64, 64), atol=1e-4)
    pred = seg.labels(images)
    cm = confusion(pred, labels, len(world.CONCEPTS))
    accuracy = float(cm.diag().sum() / cm.sum())
    assert accuracy >= 0.95, accuracy
    assert float(iou_from_confusion(cm).mean()) >= 0.8


def test_segmenter_probs_are_differentiable():
    seg = world.load_segmenter()
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    seg.probs(x)[:, 0].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(4, 127), (4, 128, 1), (128,), (2, 1, 128)])
def test_generator_rejects_wrong_z_shape(shape):
    G = Generator(z_dim=128, width=16)
    with pytest.raises(ValueError, match=r"expects z of shape \(B, 128\), got " + re.escape(str(shape))):
        G(torch.randn(*shape))


def test_generator_output_range_shape_and_featuremaps():
    torch.manual_seed(3)
    G = Generator(z_dim=128, width=16).eval()
    with torch.no_grad():
        for p in G.output[0].parameters():
            p.mul_(50.0)  # push the pre-tanh activations far out: the range must still hold
    sizes = {}
    handles = [
        getattr(G, n).register_forward_hook(lambda m, a, o, n=n: sizes.__setitem__(n, tuple(o.shape))) for n in LAYERS
    ]
    with torch.no_grad():
        x = G(torch.randn(5, 128))
    for h in handles:
        h.remove()
    assert x.shape == (5, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1 and x.abs().max() > 0.9
    assert [sizes[n][-1] for n in LAYERS] == [4, 8, 16, 16, 32, 64]
    assert all(sizes[n][-2] == sizes[n][-1] for n in LAYERS)
    assert [sizes[n][1] for n in LAYERS] == [16, 16, 8, 8, 4, 2]

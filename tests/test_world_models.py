"""The shipped world models load, have the right shapes and ranges, and the segmenter is accurate."""

import torch

from lightning_gd import world
from lightning_gd.world.evaluate import FRESH_SEED, confusion, iou_from_confusion, render
from lightning_gd.world.features import register_world_feature_extractor


def test_generator_shapes_and_range():
    G = world.load_generator()
    assert not G.training
    x = G(G.sample_z(4, seed=0))
    assert x.shape == (4, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.05  # not a constant image
    from lightning_gd.hooks import TraceDict

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


def test_feature_net_and_fidelity_registration():
    net = world.load_feature_net()
    images, _ = render(4, show_progress=False)
    f = net.forward_features(images)
    assert f.shape == (4, net.feature_dim)
    name = register_world_feature_extractor()
    assert register_world_feature_extractor() == name  # idempotent
    from torch_fidelity.utils import create_feature_extractor

    fe = create_feature_extractor(name, ["features"], cuda=False)
    u8 = ((images + 1) * 127.5).round().to(torch.uint8)
    (feats,) = fe(u8)
    assert torch.allclose(feats.float(), f, atol=1e-3)

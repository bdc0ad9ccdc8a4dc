"""The world's networks: the shipped generator is a ProGAN in the authors' layout (z shape check, clamped output
range, featuremap sizes: layer4 8×8), the shipped models load, and the segmenter is accurate."""

import re

import pytest
import torch

from lightning_gd import world
from lightning_gd.world.evaluate import FRESH_SEED, confusion, iou_from_confusion, render
from lightning_gd.world.gan import WORLD_SIZES
from lightning_gd.zoo.progan import ProGAN

SIZES = {"layer1": 4, "layer2": 4, "layer3": 8, "layer4": 8, "layer5": 16, "layer6": 16, "layer7": 32, "layer8": 32,
         "layer9": 64, "layer10": 64}  # fmt: skip


def test_generator_shapes_and_range():
    G = world.load_generator()
    assert not G.training
    x = G(G.sample_z(4, seed=0))
    assert x.shape == (4, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.05  # not a constant image
    from lightning_gd.models.hooks import TraceDict

    assert type(G) is ProGAN and G.sizes == WORLD_SIZES and G[-1].tanh
    assert list(G._modules) == [*SIZES, "output_64x64"]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in G.modules())
    with TraceDict(G, list(SIZES)) as tr:
        G(G.sample_z(1, seed=0))
    assert {name: tr[name].output.shape[-1] for name in SIZES} == SIZES
    assert tr["layer4"].output.shape[1] == 256
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
    G = ProGAN([128, 8, 8], tanh=True)
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 128\), got " + re.escape(str(shape))):
        G(torch.randn(*shape))


def test_generator_output_is_clamped_to_the_image_range():
    torch.manual_seed(3)
    G = ProGAN([16, 8, 8, 4, 4, 2], tanh=True).eval()
    with torch.no_grad():
        G.output_64x64.conv.weight.mul_(50.0)  # push the images far out: the range must still hold
        x = G(torch.randn(5, 16))
    assert x.shape == (5, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1 and x.abs().max() == 1


def test_shipped_generator_has_the_published_progan_layout():
    """Key names and kernel shapes of a published-style 64×64 ProGAN (`preset(64)`, the authors' layout); only the
    channel widths are the world's (WORLD_SIZES), so a published checkpoint's code path loads and dissects it."""
    from lightning_gd.zoo.progan import preset

    shipped = world.load_generator().state_dict()
    published = ProGAN(preset(64)).state_dict()
    assert list(shipped) == list(published)
    assert len(shipped) == 22  # 10 blocks and the output, a conv weight and a bias each
    z, *widths = WORLD_SIZES
    res_width = {4: widths[0], 8: widths[1], 16: widths[2], 32: widths[3], 64: widths[4]}
    for k in range(1, 11):
        res = 4 * 2 ** ((k - 1) // 2)
        c_out = res_width[res]
        c_in = z if k == 1 else res_width[4 * 2 ** ((k - 2) // 2)]
        kernel = published[f"layer{k}.conv.weight"].shape[-2:]
        assert shipped[f"layer{k}.conv.weight"].shape == (c_out, c_in, *kernel), k
        assert shipped[f"layer{k}.wscale.b"].shape == (c_out,)
    assert shipped["output_64x64.conv.weight"].shape == (3, widths[-1], 1, 1)

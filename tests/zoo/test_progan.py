"""ProGAN in the GAN-dissection layout: the published 256×256 key set loads through the zoo, the images equal an
independent implementation of the block maths, and damaged, renamed or wrapped checkpoints behave as documented.

Checkpoints are random tensors in the published names and shapes, written to tmp_path; nothing is downloaded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lightning_gd import zoo
from lightning_gd.models.hooks import Trace
from lightning_gd.models.split import LayerSplit
from lightning_gd.zoo.progan import ProGAN, WScale, pixel_norm, preset
from tests.helpers import ColourSegmenter

# the authors' channel table: z, then 4×4, 8×8, …, 256×256 (LSUN) and … 1024×1024 (CelebA-HQ)
WIDTHS_256 = [512, 512, 512, 512, 256, 128, 64, 32]
WIDTHS_1024 = [512, 512, 512, 512, 512, 256, 128, 64, 32, 16]
SMALL = [32, 32, 32, 32, 16]  # a 32×32 ProGAN a sixteenth as wide: z_dim 32, layer4 (32, 8, 8)


def published_shapes(widths: list[int]) -> dict[str, tuple[int, ...]]:
    """Key → shape of a converted ProGAN state dict: a 4×4 first conv on z, then two 3×3 convs per resolution,
    then the 1×1 RGB output named for the resolution."""
    shapes, previous = {}, widths[0]
    for stage, channels in enumerate(widths[1:]):
        first, second = 2 * stage + 1, 2 * stage + 2
        k = 4 if stage == 0 else 3
        shapes[f"layer{first}.conv.weight"] = (channels, previous, k, k)
        shapes[f"layer{first}.wscale.b"] = (channels,)
        shapes[f"layer{second}.conv.weight"] = (channels, channels, 3, 3)
        shapes[f"layer{second}.wscale.b"] = (channels,)
        previous = channels
    side = 4 * 2 ** (len(widths) - 2)
    shapes[f"output_{side}x{side}.conv.weight"] = (3, previous, 1, 1)
    shapes[f"output_{side}x{side}.wscale.b"] = (3,)
    return shapes


def random_state(widths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(shape, generator=gen) * (1.0 if key.endswith("weight") else 0.1)
        for key, shape in published_shapes(widths).items()
    }


def reference_images(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The generator written out with torch.nn.functional, from the description of the reference code."""
    x = z.view(z.shape[0], -1, 1, 1)
    blocks = sum(1 for key in state if key.startswith("layer") and key.endswith(".conv.weight"))
    for k in range(1, blocks + 1):
        w, b = state[f"layer{k}.conv.weight"], state[f"layer{k}.wscale.b"]
        x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
        if k >= 3 and k % 2 == 1:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, w, padding=3 if k == 1 else 1)
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        x = F.leaky_relu(x * math.sqrt(2.0 / fan_in) + b.view(1, -1, 1, 1), 0.2)
    (output,) = {key.partition(".")[0] for key in state if key.startswith("output_")}
    w, b = state[f"{output}.conv.weight"], state[f"{output}.wscale.b"]
    x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
    return F.conv2d(x, w) / math.sqrt(w.shape[1]) + b.view(1, -1, 1, 1)


@pytest.fixture(scope="module")
def published_file(module_tmp):
    """A random 256×256 generator with exactly the published keys and shapes, saved as proggan_*.pth."""
    state = random_state(WIDTHS_256)
    path = module_tmp("progan") / "proggan_churchoutdoor-random.pth"
    torch.save(state, path)
    return path, state


def test_published_256_layout_loads_and_matches_the_reference(published_file, one_thread):
    path, state = published_file
    shapes = published_shapes(WIDTHS_256)
    assert len(shapes) == 30 and shapes["layer4.conv.weight"] == (512, 512, 3, 3)
    assert shapes["layer1.conv.weight"] == (512, 512, 4, 4) and shapes["layer7.conv.weight"] == (256, 512, 3, 3)
    G = zoo.generator(f"progan:{path}")
    assert isinstance(G, ProGAN) and G.z_dim == 512 and G.resolution == 256 and not G.training
    assert [name for name, _ in G.named_children()] == [f"layer{k}" for k in range(1, 15)] + ["output_256x256"]
    assert {k: tuple(v.shape) for k, v in G.state_dict().items()} == shapes
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), Trace(G, "layer4") as t:
        x = G(z)
    assert t.output.shape == (1, 512, 8, 8) and x.shape == (1, 3, 256, 256)
    expected = reference_images(state, z)
    assert torch.allclose(x, expected, atol=1e-4, rtol=0), (x - expected).abs().max()
    assert x.abs().max() > 1.0  # unclamped by default, as the original


def test_small_preset_loads_and_matches_the_reference(tmp_path, one_thread):
    assert preset(32, width_scale=1 / 16) == SMALL
    state = random_state(SMALL, seed=2)
    torch.save(state, tmp_path / "small.pth")
    G = zoo.generator(f"progan:{tmp_path / 'small.pth'}")
    assert G.z_dim == 32 and "output_32x32" in dict(G.named_children())
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), Trace(G, "layer4") as t:
        x = G(z)
    assert t.output.shape == (2, 32, 8, 8) and x.shape == (2, 3, 32, 32)
    assert torch.allclose(x, reference_images(state, z), atol=1e-5, rtol=0)


def test_presets_follow_the_authors_table():
    assert preset(256) == WIDTHS_256 and preset(1024) == WIDTHS_1024
    for resolution in (8, 16, 32, 64, 128):
        assert preset(resolution) == WIDTHS_256[: len(preset(resolution))]
    for resolution in (8, 16, 32, 64, 128, 256, 512, 1024):
        G = ProGAN(preset(resolution, width_scale=1 / 64))
        assert G.resolution == resolution and f"output_{resolution}x{resolution}" in dict(G.named_children())
        assert len(G) == 2 * (int(math.log2(resolution)) - 1) + 1
    with pytest.raises(ValueError, match="power of two from 4 to 1024, got 48"):
        preset(48)


def test_block_maths_by_hand():
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    rms = math.sqrt((9 + 16) / 2 + 1e-8)
    assert torch.allclose(pixel_norm(x).flatten(), torch.tensor([3 / rms, 4 / rms]))

    ws = WScale(2, fan_in=8, gain=2.0)
    assert list(ws.state_dict()) == ["b"]  # the scale is a constant, not a parameter or buffer
    with torch.no_grad():
        ws.b.copy_(torch.tensor([0.5, -1.0]))
    y = ws(torch.ones(1, 2, 1, 1)).flatten()
    assert torch.allclose(y, torch.tensor([2 / math.sqrt(8) + 0.5, 2 / math.sqrt(8) - 1.0]))

    # layer1: a 4×4 conv with padding 3 on a 1×1 map, so output pixel (i, j) sees kernel tap (3 − i, 3 − j)
    G = ProGAN([2, 3])
    with torch.no_grad():
        G.layer1.wscale.b.copy_(torch.tensor([0.1, -0.2, 0.3]))
    z = torch.tensor([[1.0, -2.0]])
    zn = z / math.sqrt((1 + 4) / 2 + 1e-8)
    w = G.layer1.conv.weight.detach()  # (3, 2, 4, 4)
    pre = torch.einsum("ocij,c->oij", w.flip(2, 3), zn[0]) * (math.sqrt(2) / 4 / math.sqrt(2))
    expected = F.leaky_relu(pre + G.layer1.wscale.b.detach().view(3, 1, 1), 0.2)
    with torch.no_grad(), Trace(G, "layer1") as t:
        G(z)
    assert t.output.shape == (1, 3, 4, 4) and torch.allclose(t.output[0], expected, atol=1e-6)
    assert G.layer2.wscale.scale == pytest.approx(math.sqrt(2) / 3 / math.sqrt(3))
    assert G.output_4x4.wscale.scale == pytest.approx(1 / math.sqrt(3))


def test_wrong_and_missing_keys_are_listed(tmp_path):
    state = random_state(SMALL)
    del state["layer3.conv.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["layer5.wscale.b"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        zoo.generator(f"progan:{tmp_path / 'bad.pth'}")
    message = str(err.value)
    assert str(tmp_path / "bad.pth") in message
    assert "missing (1): layer3.conv.weight" in message and "unexpected (1): extra.weight" in message
    assert "layer5.wscale.b (7,) (expected (32,))" in message

    torch.save({"net.fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a ProGAN state dict.*layer1.conv.weight.*net.fc.weight"):
        zoo.generator(f"progan:{tmp_path / 'other.pth'}")


def test_old_features_naming_converts(tmp_path):
    state = random_state(SMALL)
    old = {}
    for key, value in state.items():
        if key.startswith("layer"):
            block, _, rest = key.partition(".")
            old[f"features.{int(block[len('layer') :]) - 1}.{rest}"] = value
        else:
            old["output." + key.partition(".")[2]] = value
    assert "features.0.conv.weight" in old and "output.wscale.b" in old and len(old) == len(state)
    torch.save(old, tmp_path / "old.pth")
    G = zoo.generator(f"progan:{tmp_path / 'old.pth'}")
    loaded = G.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_safetensors_and_state_dict_wrapper(tmp_path):
    state = random_state(SMALL, seed=4)
    save_file(state, tmp_path / "g.safetensors")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    z = torch.randn(1, 32)
    expected = reference_images(state, z)
    for name in ("g.safetensors", "wrapped.pth"):
        G = zoo.generator(f"progan:{tmp_path / name}")
        with torch.no_grad():
            assert torch.allclose(G(z), expected, atol=1e-5, rtol=0), name


def test_missing_file_and_missing_path():
    with pytest.raises(FileNotFoundError, match=r"ProGAN checkpoint.*proggan_churchoutdoor-\*\.pth.*nowhere/g\.pth"):
        zoo.generator("progan:/nowhere/g.pth")
    with pytest.raises(ValueError, match="progan needs the path of a ProGAN checkpoint: progan:PATH"):
        zoo.generator("progan")


def test_tanh_option_clamps(tmp_path):
    state = random_state(SMALL)
    state["output_32x32.wscale.b"] = torch.tensor([3.0, -3.0, 0.0])  # pushes red above 1 and green below −1
    torch.save(state, tmp_path / "g.pth")
    z = torch.randn(2, 32)
    with torch.no_grad():
        raw = zoo.generator(f"progan:{tmp_path / 'g.pth'}")(z)
        clamped = zoo.generator(f"progan:{tmp_path / 'g.pth'}", tanh=True)(z)
    assert raw.max() > 1 and raw.min() < -1
    assert torch.equal(clamped, raw.clamp(-1, 1))


def test_forward_from_each_layer():
    G = ProGAN(SMALL).eval()
    z = torch.randn(2, 32)
    names = [name for name, _ in G.named_children()]
    with torch.no_grad():
        x = G(z)
        for name in names:
            with Trace(G, name) as t:
                G(z)
            assert torch.allclose(G.forward_from(name, t.output), x, atol=1e-6), name
    assert LayerSplit(G, "layer4").strategy == "forward_from"
    assert LayerSplit(G, "layer4.wscale").strategy == "replay"  # inside a block: the generator is re-run
    with pytest.raises(ValueError, match="no top-level layer 'layer40'.*layer1, layer2"):
        G.forward_from("layer40", x)
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 32\)"):
        G(torch.randn(2, 31))


def test_dissection_runs_on_a_tiny_progan(tmp_path, one_thread):
    from lightning_gd.dissection import dissect

    torch.save(random_state(SMALL, seed=5), tmp_path / "g.pth")
    G = zoo.generator(f"progan:{tmp_path / 'g.pth'}", tanh=True)  # random weights: clamp into the image range
    d = dissect(G, ["layer2", "layer4"], ColourSegmenter(), n=8, batch_size=4, top_k=2, progress=False)
    assert d.layers["layer2"].iou.shape == (32, 3) and d.layers["layer2"].featuremap_size == (4, 4)
    assert d.layers["layer4"].iou.shape == (32, 3) and d.layers["layer4"].featuremap_size == (8, 8)
    assert torch.isfinite(d.layers["layer4"].iou).all() and d.layers["layer4"].top_indices.shape == (32, 2)
    assert len(d.units("layer4")) == 32


def test_nearest_doubling_equals_interpolate_and_its_gradient():
    from lightning_gd.zoo.progan import Upsample2x

    x = torch.randn(2, 3, 5, 7, requires_grad=True)
    y = Upsample2x()(x)
    assert torch.equal(y, F.interpolate(x, scale_factor=2, mode="nearest"))
    y.square().sum().backward()
    torch.testing.assert_close(x.grad, 8 * x.detach(), rtol=0, atol=0)  # each value copied 4 times: d/dx 4·x² = 8x
    assert torch.equal(
        Upsample2x()(x.detach().transpose(2, 3)), F.interpolate(x.detach().transpose(2, 3), scale_factor=2)
    )

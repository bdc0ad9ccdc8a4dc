"""Weights files: a round trip keeps outputs identical, and every kind of bad file is a clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lightning_gd.world import load_feature_net, load_generator, load_segmenter
from lightning_gd.world.models import FeatureNet, UNet
from lightning_gd.world.render import CONCEPTS
from lightning_gd.world.weights import load_module, read_metadata, save_module
from lightning_gd.zoo.progan import ProGAN

TINY = {"sizes": [16, 8, 8, 4, 4, 2], "tanh": True}


def trained_generator() -> ProGAN:
    """A tiny world-style ProGAN whose biases are not the zero defaults, so every tensor must round-trip."""
    torch.manual_seed(0)
    G = ProGAN(**TINY)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("wscale.b"):
                p.normal_()
    return G.eval()


def test_generator_round_trip_keeps_outputs_identical(tmp_path):
    G = trained_generator()
    path = save_module(G, tmp_path / "sub" / "g.safetensors", TINY, {"note": {"step": 7}})
    assert path == tmp_path / "sub" / "g.safetensors" and path.is_file()
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically, nothing left over
    assert read_metadata(path) == {"kwargs": TINY, "note": {"step": 7}}

    loaded = load_generator(path)
    assert isinstance(loaded, ProGAN) and loaded.sizes == tuple(TINY["sizes"]) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    z = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), G(z), rtol=0, atol=0)
    for (name, a), (_, b) in zip(G.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_load_module_round_trip_for_the_other_architectures(tmp_path):
    torch.manual_seed(1)
    unet = UNet(len(CONCEPTS), width=4).eval()
    feat = FeatureNet(len(CONCEPTS), feature_dim=32, grid=2, width=4).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    save_module(unet, tmp_path / "s.safetensors", {"num_classes": len(CONCEPTS), "width": 4})
    save_module(
        feat, tmp_path / "f.safetensors", {"num_classes": len(CONCEPTS), "feature_dim": 32, "grid": 2, "width": 4}
    )

    assert torch.equal(load_module(UNet, tmp_path / "s.safetensors", "segmenter")(x), unet(x).detach())
    seg = load_segmenter(tmp_path / "s.safetensors")
    assert seg.concepts == CONCEPTS and not seg.training and not any(p.requires_grad for p in seg.parameters())
    torch.testing.assert_close(seg.probs(x), unet(x).softmax(1), rtol=0, atol=0)
    f = load_feature_net(tmp_path / "f.safetensors")
    torch.testing.assert_close(f.forward_features(x), feat.forward_features(x), rtol=0, atol=0)


def test_missing_file_is_a_file_not_found_error_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "generator.safetensors"
    with pytest.raises(FileNotFoundError, match="generator weights not found: .*nowhere/generator.safetensors"):
        load_generator(missing)
    with pytest.raises(FileNotFoundError, match="feature net weights not found"):
        load_feature_net(tmp_path)  # a directory is not a weights file either


@pytest.mark.parametrize("content", [b"", b"hello, I am not a tensor file", json.dumps({"a": 1}).encode() * 10])
def test_file_that_is_not_safetensors_is_a_value_error(tmp_path, content):
    path = tmp_path / "g.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"g\.safetensors is not a readable safetensors file of generator weights"):
        load_generator(path)


def test_safetensors_without_kwargs_metadata_is_a_value_error(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in ProGAN(**TINY).state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="no 'kwargs' metadata"):
        load_generator(path)


def test_weights_of_another_width_name_the_architecture(tmp_path):
    wider = {"sizes": [16, 8, 8, 4, 4, 4], "tanh": True}
    path = save_module(ProGAN(**TINY), tmp_path / "g.safetensors", wider)
    with pytest.raises(ValueError, match=r"does not match the generator architecture \{'sizes': \[16, 8, 8, 4, 4, 4\]"):
        load_generator(path)


def test_segmenter_weights_for_another_vocabulary_are_rejected(tmp_path):
    n = len(CONCEPTS) + 1
    path = save_module(UNet(n, width=4), tmp_path / "s.safetensors", {"num_classes": n, "width": 4})
    with pytest.raises(ValueError, match=f"{n} classes; this world has {len(CONCEPTS)}"):
        load_segmenter(path)

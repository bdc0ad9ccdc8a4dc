"""GeneratorWrapper: z reshaped and resampled as the network wants, images mapped to [-1, 1], layers by their
own names, and forward_from when the network allows it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.models.generators import GeneratorWrapper, default_layer, eval_mode, probe_layers, z_dim_of
from lightning_gd.models.hooks import Trace, layer_names
from lightning_gd.models.split import LayerSplit


class Record(nn.Module):
    def forward(self, z):
        self.z = z
        return torch.zeros(z.shape[0], 3, 2, 2)


def test_z_shape_sampler_and_range():
    net = Record()
    G = GeneratorWrapper(net, z_dim=4, z_shape=(4, 1, 1), sampler="uniform", output_range=(0, 1))
    z = torch.tensor([[0.0, 10.0, -10.0, 1.0]])
    x = G(z)
    assert net.z.shape == (1, 4, 1, 1)
    torch.testing.assert_close(net.z.flatten(), torch.special.ndtr(z[0]) * 2 - 1)
    assert torch.equal(x, torch.full_like(x, -1.0))  # 0 in [0, 1] is -1 in [-1, 1]
    G = GeneratorWrapper(net, z_dim=4, sampler=lambda z: z * 2)
    G(z)
    assert torch.equal(net.z, z * 2)
    with pytest.raises(ValueError, match="does not hold z_dim = 4"):
        GeneratorWrapper(net, z_dim=4, z_shape=(3, 1))
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 4\)"):
        G(torch.zeros(1, 5))


def test_layers_keep_their_names_and_sequential_tail_is_used():
    net = nn.Sequential()
    net.add_module("layer1", nn.Linear(4, 12))
    net.add_module("layer2", nn.Unflatten(1, (3, 2, 2)))
    net.add_module("out", nn.Tanh())
    G = GeneratorWrapper(net, z_dim=4)
    assert layer_names(G) == ["layer1", "layer2", "out"]
    z = torch.randn(3, 4)
    with Trace(G, "layer2") as t:
        x = G(z)
    assert t.output.shape == (3, 3, 2, 2)
    split = LayerSplit(G, "layer2")
    assert split.strategy == "forward_from" and torch.allclose(split.f(split.h(z)), x)
    assert z_dim_of(G) == 4


def test_replay_when_the_network_cannot_run_from_a_layer():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)))

        def forward(self, z):
            return torch.tanh(self.layer1(z))

    G = GeneratorWrapper(Net(), z_dim=4, output_range=(-2, 2))
    split = LayerSplit(G, "layer1")
    z = torch.randn(2, 4)
    assert split.strategy == "replay" and torch.allclose(split.f(split.h(z), z), G(z))


def test_eval_mode_restores_each_submodule():
    net = nn.Sequential(nn.Dropout(), nn.Dropout())
    net[1].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training


def test_the_default_layer_is_the_first_probe_layer_the_network_declares():
    from lightning_gd.zoo.progan import ProGAN
    from lightning_gd.zoo.stylegan2 import StyleGAN2Generator

    assert default_layer(ProGAN([8, 4, 4, 4])) == "layer4"  # the paper's 8×8 layer
    assert probe_layers(ProGAN([8, 4])) == ("layer2",)  # too small for a layer4: its last convolution
    channels = {r: 4 for r in (4, 8, 16, 32, 64)}
    stylegan = StyleGAN2Generator(64, channels, [8, 8])
    assert probe_layers(stylegan) == ("layer6", "layer7", "layer4", "layer5")  # 32×32, then 16×16
    assert default_layer(StyleGAN2Generator(8, {4: 4, 8: 4}, [8, 8])) == "layer2"  # its largest layers
    # a wrapper looks through to the network's declaration, and may declare its own
    assert default_layer(GeneratorWrapper(ProGAN([8, 4, 4, 4]), z_dim=8)) == "layer4"
    net = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)))
    assert default_layer(GeneratorWrapper(net, z_dim=4, probe_layers=["1", "0"])) == "1"


def test_a_generator_without_probe_layers_has_no_default_and_the_error_lists_its_layers():
    net = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)))
    with pytest.raises(InvalidValue, match=r"declares no probe layers.*--layer.*its layers: 0, 1"):
        default_layer(GeneratorWrapper(net, z_dim=4))
    with pytest.raises(InvalidValue, match="non-empty list"):
        GeneratorWrapper(net, z_dim=4, probe_layers="0")
    with pytest.raises(KeyError, match="no layer 'nope'.*valid layers: 0, 1"):
        GeneratorWrapper(net, z_dim=4, probe_layers=["nope"])

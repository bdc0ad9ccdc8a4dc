"""Trace/TraceDict must give the numbers a hand computation gives, eagerly and under torch.compile; an edit is
`edit(output, layer)` in both; tuple outputs are read and edited through `element=`."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_gd.models.hooks import (
    LayerNotFoundError,
    Trace,
    TraceDict,
    enable_compiled_hooks,
    layer_names,
    resolve_layer,
)


class Counter(nn.Module):
    """Identity that counts its calls, to prove that stop really skips the rest of the network."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a stopped forward pass reached a later layer")


def make_net(tail: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers = OrderedDict(
        layer1=nn.Conv2d(2, 4, 3, padding=1),
        act1=nn.ReLU(),
        layer2=nn.Conv2d(4, 3, 1),  # 1x1, so removing an input channel == zeroing that column of its weight
        tail=tail if tail is not None else Counter(),
    )
    return nn.Sequential(layers).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(1))  # (N, C, H, W)


def features(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    return F.relu(F.conv2d(x, net.layer1.weight, net.layer1.bias, padding=1))  # (N, 4, H, W)


def zero_channel(c: int):
    def edit(r: torch.Tensor, layer: str) -> torch.Tensor:
        r = r.clone()
        r[:, c] = 0  # r: (N, C, H, W)
        return r

    return edit


def without_input_channel(net: nn.Sequential, h: torch.Tensor, c: int) -> torch.Tensor:
    """layer2 with input channel c removed from its weight: what ablating unit c must give."""
    w = net.layer2.weight.clone()  # (3, 4, 1, 1)
    w[:, c] = 0
    return F.conv2d(h, w, net.layer2.bias)


@torch.no_grad()
def test_read_equals_manual_features(x):
    net = make_net()
    with Trace(net, "act1") as t:
        y = net(x)
    torch.testing.assert_close(t.output, features(net, x))
    torch.testing.assert_close(y, F.conv2d(features(net, x), net.layer2.weight, net.layer2.bias))
    assert not net.act1._forward_hooks


@torch.no_grad()
def test_zeroing_a_channel_matches_hand_computation(x):
    net = make_net()
    with Trace(net, "act1", edit_output=zero_channel(2)) as t:
        y = net(x)
    assert torch.all(t.output[:, 2] == 0)
    torch.testing.assert_close(t.output[:, [0, 1, 3]], features(net, x)[:, [0, 1, 3]])
    torch.testing.assert_close(y, without_input_channel(net, features(net, x), 2))
    assert not torch.allclose(y, net(x))  # the edit mattered, and it is gone after the context


@torch.no_grad()
def test_alpha_blend_edit(x):
    net = make_net()
    alpha = torch.tensor([0.0, 1.0, 0.25, 0.0]).view(1, 4, 1, 1)  # per unit, broadcast over (N, C, H, W)
    k = torch.full((1, 4, 1, 1), 3.0)
    with Trace(net, "act1", edit_output=lambda r, layer: (1 - alpha) * r + alpha * k) as t:
        y = net(x)
    h = features(net, x)
    blended = (1 - alpha) * h + alpha * k
    torch.testing.assert_close(t.output, blended)
    torch.testing.assert_close(t.output[:, 1], torch.full_like(h[:, 1], 3.0))
    torch.testing.assert_close(t.output[:, 0], h[:, 0])
    torch.testing.assert_close(y, F.conv2d(blended, net.layer2.weight, net.layer2.bias))


@torch.no_grad()
def test_stop_skips_later_layers(x):
    net = make_net()
    with Trace(net, "layer1", stop=True) as t:
        net(x)
        raise AssertionError("unreachable: the forward pass should have been stopped")
    torch.testing.assert_close(t.output, F.conv2d(x, net.layer1.weight, net.layer1.bias, padding=1))
    assert net.tail.calls == 0
    boom = make_net(tail=Boom())
    with Trace(boom, "layer2", stop=True, edit_output=zero_channel(0)) as t:
        boom(x)
    expected = F.conv2d(features(boom, x), boom.layer2.weight, boom.layer2.bias)  # (N, 3, H, W)
    expected[:, 0] = 0
    torch.testing.assert_close(t.output, expected)  # stop retains the edited output
    net(x)
    assert net.tail.calls == 1 and not net.layer1._forward_hooks


def test_retain_detach_and_clone(x):
    net = nn.Sequential(OrderedDict(lin=nn.Conv2d(2, 3, 1), act=nn.ReLU(inplace=True)))
    with Trace(net, "lin") as shared, Trace(net, "lin", clone=True, detach=True) as snap:
        net(x)
    assert torch.all(shared.output >= 0)  # the in-place ReLU rewrote the retained tensor
    assert (snap.output < 0).any() and not snap.output.requires_grad
    torch.testing.assert_close(snap.output.relu(), shared.output.detach())


def test_unknown_layer_lists_close_matches():
    net = make_net()
    with pytest.raises(LayerNotFoundError) as err:
        Trace(net, "layr1")
    msg = str(err.value)
    assert isinstance(err.value, KeyError)
    assert "'layr1'" in msg and "Sequential" in msg and "closest matches: layer1" in msg
    assert "valid layers: layer1, act1, layer2, tail" in msg
    big = nn.Sequential(*[nn.Identity() for _ in range(30)])
    with pytest.raises(KeyError, match=r"closest matches: .*; valid layers: 0, 1, .* 19, \.\.\. \(10 more\)"):
        resolve_layer(big, "40")
    assert layer_names(net) == ["layer1", "act1", "layer2", "tail"]
    assert layer_names(net, nn.Conv2d) == ["layer1", "layer2"]


@torch.no_grad()
def test_hooks_removed_after_exception(x):
    net = make_net()
    with pytest.raises(RuntimeError, match="user error"):
        with Trace(net, "act1", edit_output=zero_channel(0)):
            raise RuntimeError("user error")
    assert not net.act1._forward_hooks
    with pytest.raises(ValueError, match=r"'act1'.*\(2, 4, 5, 5\).*\(2, 4, 5\)"):
        with TraceDict(net, ["layer1", "act1"], edit_output=lambda r, name: r if name == "layer1" else r[..., 0]):
            net(x)
    assert not net.act1._forward_hooks and not net.layer1._forward_hooks
    torch.testing.assert_close(net(x), F.conv2d(features(net, x), net.layer2.weight, net.layer2.bias))


@torch.no_grad()
def test_trace_dict_two_layers_edit_and_stop(x):
    net = make_net()
    seen: list[str] = []

    def edit(r: torch.Tensor, name: str) -> torch.Tensor:
        seen.append(name)
        return zero_channel(3)(r, name) if name == "act1" else r

    with TraceDict(net, ["layer2", "act1"], edit_output=edit) as td:  # listed out of execution order on purpose
        y = net(x)
    assert list(td) == ["layer2", "act1"] and seen == ["act1", "layer2"]
    expected = without_input_channel(net, features(net, x), 3)
    torch.testing.assert_close(td["layer2"].output, expected)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(td["act1"].output[:, :3], features(net, x)[:, :3])
    # stop waits for the last listed layer to run (layer2), not the last one listed (act1)
    with TraceDict(net, ["layer2", "act1"], stop=True) as td:
        net(x)
        raise AssertionError("unreachable")
    assert net.tail.calls == 1  # only the unstopped pass above reached the tail
    torch.testing.assert_close(td["layer2"].output, F.conv2d(features(net, x), net.layer2.weight, net.layer2.bias))
    torch.testing.assert_close(td["act1"].output, features(net, x))


class Pair(nn.Module):
    """A StyleGAN-style block: returns (features, image)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x + 1


class TakePair(nn.Module):
    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return pair[0] - pair[1]


@torch.no_grad()
def test_tuple_outputs_are_read_and_edited_through_element(x):
    net = nn.Sequential(OrderedDict(block=Pair(), out=TakePair()))
    with Trace(net, "block", element=0, edit_output=zero_channel(1)) as t:
        y = net(x)
    expected = x * 2
    expected[:, 1] = 0
    torch.testing.assert_close(t.output, expected)  # the retained value is the edited element
    torch.testing.assert_close(y, expected - (x + 1))  # the next layer got the tuple with that element replaced
    with TraceDict(net, ["block"], element=-1) as td:
        net(x)
    torch.testing.assert_close(td["block"].output, x + 1)
    with pytest.raises(TypeError, match="element="):
        with Trace(net, "block", edit_output=zero_channel(0)):
            net(x)
    with pytest.raises(IndexError, match="2 elements; element=2"):
        with Trace(net, "block", element=2):
            net(x)
    with pytest.raises(TypeError, match="not a tuple"):
        with Trace(net, "out", element=0):
            net(x)
    assert not net.block._forward_hooks and not net.out._forward_hooks


@torch.no_grad()
def test_edits_apply_under_torch_compile(x):
    # backend "eager": dynamo's guards decide whether a hook is seen, and no C++ is compiled. The hook guards are
    # switched on inside a config patch, so the process's dynamo settings are left as they were.
    net = make_net(tail=nn.Identity())
    compiled = torch.compile(net, backend="eager")
    try:
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
            enable_compiled_hooks()
            clean = compiled(x)  # compile before any hook exists: the case dynamo would otherwise serve stale
            torch.testing.assert_close(clean, net(x))
            assert resolve_layer(compiled, "_orig_mod.act1") is resolve_layer(compiled, "act1") is net.act1
            assert layer_names(compiled) == layer_names(net)
            for c in (2, 0):  # a second, different edit must not reuse the first one's graph
                with Trace(compiled, "act1", edit_output=zero_channel(c)) as t:
                    y = compiled(x)
                torch.testing.assert_close(y, without_input_channel(net, features(net, x), c))
                assert torch.all(t.output[:, c] == 0)
                torch.testing.assert_close(compiled(x), clean)  # hook gone: unedited again
            with Trace(compiled, "_orig_mod.layer1", stop=True) as t:
                compiled(x)
            torch.testing.assert_close(t.output, F.conv2d(x, net.layer1.weight, net.layer1.bias, padding=1))
            torch.testing.assert_close(compiled(x), clean)
    finally:
        torch._dynamo.reset()


def test_trace_refuses_a_compiled_model_whose_hooks_dynamo_would_ignore(x):
    flag = torch._dynamo.config.skip_nnmodule_hook_guards
    compiled = torch.compile(make_net(tail=nn.Identity()), backend="eager")
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=True):
        with pytest.raises(RuntimeError, match="ignore the hook.*enable_compiled_hooks"):
            Trace(compiled, "act1")  # refuse rather than silently trace nothing
        with pytest.raises(RuntimeError, match="enable_compiled_hooks"):
            TraceDict(compiled, ["act1", "layer2"])
        assert Trace(make_net(), "act1").module is not None  # an eager model is traced whatever the flag
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=True):
        enable_compiled_hooks()  # what the user calls: the flag is off, and Trace accepts the compiled model
        assert not torch._dynamo.config.skip_nnmodule_hook_guards
        assert Trace(compiled, "act1").module is compiled._orig_mod.act1
    assert torch._dynamo.config.skip_nnmodule_hook_guards == flag  # the patch restored the process's setting

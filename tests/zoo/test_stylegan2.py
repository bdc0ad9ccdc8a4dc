"""StyleGAN2 from local files: rosinality's and NVlabs' layouts load strictly into one pure-PyTorch network whose
images equal a slow reference written from the key names (tests/zoo/stylegan2_reference.py)."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch
from safetensors.torch import save_file

from lightning_gd import zoo
from lightning_gd.dissection import dissect
from lightning_gd.models.hooks import Trace
from lightning_gd.zoo import stylegan2
from lightning_gd.zoo.stylegan2_layers import modulated_conv2d, upfirdn2d
from tests.helpers import ColourSegmenter
from tests.zoo import stylegan2_reference as ref

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, STYLE_DIM, N_MLP = 16, 32, 4
CHANNELS = {4: 16, 8: 12, 16: 8}  # rosinality's names and shapes at 16×16, narrower than its 512 channels


def small_checkpoint(tmp_path, rgb_gain: float = 1.0, name: str = "g.pt", **extra):
    state = ref.random_g_ema(SIZE, STYLE_DIM, N_MLP, CHANNELS, rgb_gain=rgb_gain)
    latent_avg = ref.mapping(state, torch.randn(64, STYLE_DIM)).mean(0)
    torch.save({"g_ema": state, "latent_avg": latent_avg, **extra}, tmp_path / name)
    return tmp_path / name, state, latent_avg


def test_published_size_loads_strictly(tmp_path):
    """A 256×256, channel multiplier 2 checkpoint as train.py saves it (with its argparse args): every key used,
    the architecture read from the shapes, layers named by resolution."""
    shapes = ref.rosinality_shapes(256, 512, 8, ref.rosinality_channels(2))
    g_ema = {k: torch.zeros(1).expand(s) for k, s in shapes.items()}  # expanded: a tiny file
    args = argparse.Namespace(size=256, latent=512, n_mlp=8, channel_multiplier=2)
    torch.save({"g": g_ema, "d": {}, "g_ema": g_ema, "args": args, "latent_avg": torch.ones(512)}, tmp_path / "a.pt")
    G = stylegan2.load(str(tmp_path / "a.pt"))
    assert len(shapes) == len(G.state_dict()) - 1  # all of them but our w_avg
    sizes = G.layer_sizes()
    assert list(sizes) == [f"layer{i}" for i in range(1, 14)]
    assert sizes["layer1"] == (512, 4, 4) and sizes["layer2"] == sizes["layer3"] == (512, 8, 8)
    assert (
        sizes["layer9"] == (512, 64, 64) and sizes["layer10"] == (256, 128, 128) and sizes["layer13"] == (128, 256, 256)
    )
    assert G.z_dim == 512 and G.resolution == 256 and torch.equal(G.w_avg, torch.ones(512))
    assert G.w_avg_source == "latent_avg" and not G.training


def test_mismatches_are_listed_by_name(tmp_path):
    state = ref.random_g_ema(SIZE, STYLE_DIM, N_MLP, CHANNELS)
    del state["convs.1.noise.weight"]
    state["to_rgbs.0.bias"] = torch.zeros(3)
    state["convs.0.extra"] = torch.zeros(1)
    torch.save({"g_ema": state}, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        stylegan2.load(str(tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "missing (1): convs.1.noise.weight" in msg and "unexpected (1): convs.0.extra" in msg
    assert "to_rgbs.0.bias (3,) (expected (1, 3, 1, 1))" in msg


def test_modulated_convolution_matches_per_sample_weights():
    x, weight, styles = torch.randn(3, 5, 6, 6), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    for demodulate in (True, False):
        assert torch.allclose(
            modulated_conv2d(x, weight, styles, demodulate), ref.modconv(x, weight, styles, demodulate), atol=1e-5
        )
    blurred = upfirdn2d(modulated_conv2d(x, weight, styles, up=True), ref.FIR2D * 4, pad=(1, 1))
    assert blurred.shape == (3, 4, 12, 12)
    assert torch.allclose(blurred, ref.modconv(x, weight, styles, True, up=True), atol=1e-5)


@pytest.mark.parametrize(
    "up, down, pad", [(2, 1, (2, 1)), (1, 1, (1, 1)), (1, 2, (1, 1)), (2, 2, (1, 0)), (1, 1, (-1, 2))]
)
def test_upfirdn_matches_zero_insertion_and_fir(up, down, pad):
    x, kernel = torch.randn(2, 3, 5, 7), torch.randn(4, 4)  # an asymmetric kernel: convolution, not correlation
    assert torch.allclose(upfirdn2d(x, kernel, up, down, pad), ref.fir(x, kernel, up, down, pad), atol=1e-5)


def test_images_match_the_reference_and_are_deterministic(tmp_path):
    path, state, latent_avg = small_checkpoint(tmp_path)
    G = stylegan2.load(str(path))
    z = torch.randn(3, STYLE_DIM)
    with torch.no_grad():
        x = G(z)
        assert torch.equal(x, G(z)) and x.shape == (3, 3, SIZE, SIZE)
        assert torch.allclose(x, ref.generate(state, ref.mapping(state, z)), atol=1e-4)
        G.noise = "none"
        assert torch.allclose(G(z), ref.generate(state, ref.mapping(state, z), noise=False), atol=1e-4)
        G.noise, G.truncation = "random", 0.7
        assert not torch.equal(G(z), G(z))
        G.noise = "const"
        w = latent_avg + 0.7 * (ref.mapping(state, z) - latent_avg)
        assert torch.allclose(G(z), ref.generate(state, w), atol=1e-4)
    with pytest.raises(ValueError, match="noise must be one of random, const, none"):
        G.noise = "fixed"


def test_truncation_zero_gives_the_mean_w_image(tmp_path):
    path, state, latent_avg = small_checkpoint(tmp_path)
    G = stylegan2.load(str(path), truncation=0.0)
    W = stylegan2.load(str(path), latent="w")
    assert W.z_dim == STYLE_DIM
    with torch.no_grad():
        x = G(torch.randn(4, STYLE_DIM))
        assert torch.allclose(x, x[:1].expand_as(x), atol=1e-6)
        assert torch.allclose(x[:1], W(latent_avg[None]), atol=1e-6)
        assert torch.allclose(x[:1], ref.generate(state, latent_avg[None]), atol=1e-4)


def test_without_a_stored_mean_w_it_is_estimated(tmp_path):
    state = ref.random_g_ema(SIZE, STYLE_DIM, N_MLP, CHANNELS)
    torch.save({"g_ema": state}, tmp_path / "trained.pt")
    G = stylegan2.load(str(tmp_path / "trained.pt"))
    mean = ref.mapping(state, torch.randn(20000, STYLE_DIM)).mean(0)
    spread = ref.mapping(state, torch.randn(20000, STYLE_DIM)).std(0).max()
    assert G.w_avg_source == "mean of 4096 samples"
    assert (G.w_avg - mean).abs().max() < 5 * spread / 4096**0.5


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_nvlabs_export_gives_the_same_images(tmp_path, suffix):
    path, state, latent_avg = small_checkpoint(tmp_path)
    nvlabs = ref.to_nvlabs(state, latent_avg)
    nv_path = tmp_path / f"G_ema{suffix}"
    save_file(nvlabs, nv_path) if suffix == ".safetensors" else torch.save(nvlabs, nv_path)
    z = torch.randn(3, STYLE_DIM)
    with torch.no_grad():
        a = stylegan2.load(str(path), truncation=0.5)(z)
        b = stylegan2.load(str(nv_path), truncation=0.5)(z)
    assert torch.allclose(a, b, atol=1e-5)


def test_nvlabs_networks_of_another_kind_are_named(tmp_path):
    _, state, latent_avg = small_checkpoint(tmp_path)
    for key, message in [
        ("mapping.embed.weight", "conditional"),
        ("synthesis.b8.skip.weight", "'resnet' architecture"),
        ("synthesis.b8.conv1.extra", "no place in StyleGAN2's generator: synthesis.b8.conv1.extra"),
    ]:
        torch.save({**ref.to_nvlabs(state, latent_avg), key: torch.zeros(1)}, tmp_path / "nv.pt")
        with pytest.raises(ValueError, match=message):
            stylegan2.load(str(tmp_path / "nv.pt"))


class _Payload:
    """Unpickling this touches a file: proof that a loader executed the pickle's code."""

    def __init__(self, sentinel) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def test_pickles_are_refused_without_running_them(tmp_path):
    sentinel = tmp_path / "ran"
    for name in ("network.pkl", "network.pt"):
        (tmp_path / name).write_bytes(pickle.dumps({"G_ema": _Payload(sentinel)}, protocol=2))
        with pytest.raises(ValueError) as err:
            stylegan2.load(str(tmp_path / name))
        assert not sentinel.exists()
    (tmp_path / "network.pkl").write_bytes(b"not even a pickle")
    with pytest.raises(ValueError, match=r"run code when loaded.*torch\.save\(G\.state_dict\(\), 'G_ema\.pt'\)"):
        stylegan2.load(str(tmp_path / "network.pkl"))
    assert "not readable as weights" in str(err.value)  # the .pt: torch's weights-only loader refused it


def test_missing_file_and_other_files_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"StyleGAN2 generator .* not found: .*nowhere\.pt"):
        zoo.generator(f"stylegan2:{tmp_path / 'nowhere.pt'}")
    with pytest.raises(ValueError, match="stylegan2 needs a local file"):
        zoo.generator("stylegan2")
    torch.save({"net": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a StyleGAN2 generator.*style\.1\.weight.*found: net"):
        zoo.generator(f"stylegan2:{tmp_path / 'other.pt'}")


def test_zoo_spec_with_options(tmp_path):
    path, _, _ = small_checkpoint(tmp_path)
    G = zoo.generator(f"stylegan2:{path}", noise="none", truncation=0.7)
    assert isinstance(G, stylegan2.StyleGAN2Generator) and (G.noise, G.truncation, G.latent) == ("none", 0.7, "z")
    with pytest.raises(ValueError, match="noise must be one of random, const, none"):
        zoo.generator(f"stylegan2:{path}", noise="fixed")
    with pytest.raises(ValueError, match="latent must be 'z'"):
        zoo.generator(f"stylegan2:{path}", latent="s")


def test_layers_are_hookable_and_dissectable(tmp_path):
    path, _, _ = small_checkpoint(tmp_path, rgb_gain=0.05)  # images well inside [-1, 1] for the segmenter
    G = zoo.generator(f"stylegan2:{path}")
    z = torch.randn(2, STYLE_DIM)
    with torch.no_grad(), Trace(G, "layer2") as t:
        x = G(z)
    assert t.output.shape == (2, *G.layer_sizes()["layer2"]) == (2, 12, 8, 8)
    with torch.no_grad(), Trace(G, "layer3", edit_output=lambda r, _: torch.zeros_like(r)):
        assert not torch.allclose(G(z), x)
    d = dissect(G, "layer2", ColourSegmenter(), n=8, batch_size=4, progress=False)
    assert d.layers["layer2"].iou.shape == (12, 3)

"""ProGAN (Karras et al., 2018) in the layout of the GAN-dissection authors' converted checkpoints.

The paper dissects the LSUN ProGANs that the authors converted to PyTorch and published as
`proggan_{bedroom, churchoutdoor, conferenceroom, diningroom, kitchen, livingroom, restaurant, celebhq}-<hash>.pth`.
Their reference module (`netdissect/proggan.py` in CSAILVision/gandissect) is an `nn.Sequential` whose children
are named `layer1 … layerN` and `output_{R}x{R}`, and the published state dicts use those names, so this module
keeps them: `layer4` here is the paper's layer4 (512 units at 8×8), and a checkpoint loads without renaming.

What each block computes (the reference's order, restated):
- every block starts with pixel norm, x / sqrt(mean over channels of x² + 1e-8);
- `layer1` treats z (B, z_dim) as a (B, z_dim, 1, 1) map and applies a 4×4 convolution with padding 3, which
  yields 4×4 (the dense layer of the TensorFlow original, rewritten as a convolution);
- every later block is a 3×3 convolution with padding 1; the odd ones from `layer3` on first double the
  resolution (nearest neighbour), so each resolution 8, 16, … has a pair of blocks;
- convolutions have no bias; the "equalised learning rate" weight scale that follows multiplies by the
  constant gain / sqrt(in_channels) and adds the bias `b`, its only parameter. The gain is √2 / kernel_size,
  so the product is √2 / sqrt(fan_in) with fan_in = in_channels × kernel_size²;
- LeakyReLU(0.2) ends each block;
- `output_{R}x{R}`: pixel norm, a 1×1 convolution to RGB and a weight scale of gain 1, no activation. Images are
  about [-1, 1] but not clamped, as in the original; `tanh=True` clamps them to [-1, 1] the way the reference's
  `output_tanh` flag does, with a hard tanh (a clamp, not the smooth tanh).

A state dict holds `layerK.conv.weight` (out, in, k, k), `layerK.wscale.b` (out,) and the same two for
`output_{R}x{R}`: 30 tensors for a 256×256 generator of 14 blocks. The authors' older checkpoints name the blocks
`features.0 …` (block i is `layer{i+1}`) and the output block `output`, its resolution implied by the number of
blocks; `load` renames them.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
from torch import nn

from lightning_gd.errors import InvalidValue
from lightning_gd.models.weights import read_file, shapes_of, state_dict_of, state_differences

WHAT = (
    "ProGAN checkpoint (a state dict in the GAN-dissection layout, like the authors' proggan_churchoutdoor-*.pth, "
    "or a .safetensors of it)"
)
_LAYER_KEY = re.compile(r"^layer(\d+)\.(conv\.weight|wscale\.b)$")
_OLD_KEY = re.compile(r"^features\.(\d+)\.(.+)$")


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x (B, C, h, w) divided by its root mean square over channels, per pixel."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x)


class Upsample2x(nn.Module):
    """Nearest-neighbour doubling, (B, C, h, w) → (B, C, 2h, 2w): each value copied into a 2×2 block, the values
    F.interpolate(x, scale_factor=2, mode="nearest") gives, by a broadcast view and one copy. At the generator's
    small maps that copy is several times faster on the CPU (a float32 ProGAN forward on 64×64: −24 %)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        return x[:, :, :, None, :, None].expand(B, C, h, 2, w, 2).reshape(B, C, 2 * h, 2 * w)


class WScale(nn.Module):
    """x · gain / sqrt(fan_in) + b: the runtime weight scale of a bias-free convolution. The scale is a
    constant (not in the state dict), the bias `b` (C,) the one parameter."""

    def __init__(self, channels: int, fan_in: int, gain: float) -> None:
        super().__init__()
        self.scale = gain / math.sqrt(fan_in)
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)


class Block(nn.Module):
    """pixel norm → (×2 nearest upsampling) → conv without bias → weight scale (gain √2 / k) → LeakyReLU(0.2).
    The leaky ReLU is not in place, so a hook on `wscale` keeps the pre-activation map."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, upsample: bool) -> None:
        super().__init__()
        self.norm = PixelNorm()
        if upsample:
            self.up = Upsample2x()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        nn.init.normal_(self.conv.weight)  # unit weights: the scale lives in wscale (equalised learning rate)
        self.wscale = WScale(out_channels, in_channels, gain=math.sqrt(2) / kernel_size)
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if hasattr(self, "up"):
            x = self.up(x)
        return self.relu(self.wscale(self.conv(x)))


class ToRGB(nn.Module):
    """pixel norm → 1×1 conv to 3 channels without bias → weight scale (gain 1) → optional clamp to [-1, 1]."""

    def __init__(self, in_channels: int, tanh: bool = False) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.conv = nn.Conv2d(in_channels, 3, 1, bias=False)
        nn.init.normal_(self.conv.weight)
        self.wscale = WScale(3, in_channels, gain=1.0)
        self.tanh = tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.wscale(self.conv(self.norm(x)))  # (B, 3, R, R)
        return x.clamp(-1.0, 1.0) if self.tanh else x

    def fingerprint_settings(self) -> dict:
        return {"tanh": self.tanh}


def preset(resolution: int, width_scale: float = 1.0) -> list[int]:
    """The channel sizes [z_dim, channels at 4×4, at 8×8, …, at resolution²] of a published-style ProGAN.

    Up to 256 px they follow the authors' LSUN generators (512 channels up to 16×16, then halving: 256×256 has
    512, 512, 512, 512, 256, 128, 64, 32); 512 and 1024 px follow the CelebA-HQ generator (512 up to 32×32, then
    halving). `width_scale` multiplies every size (at least 1), for small networks in tests and examples."""
    if resolution < 4 or resolution & (resolution - 1) or resolution > 1024:
        raise InvalidValue(f"ProGAN resolution must be a power of two from 4 to 1024, got {resolution}")
    base = 8192 if resolution <= 256 else 16384
    channels = [min(512, base // r) for r in (2**i for i in range(2, int(math.log2(resolution)) + 1))]
    return [max(1, int(c * width_scale)) for c in [512, *channels]]


class ProGAN(nn.Sequential):
    """The ProGAN generator: z (B, z_dim) standard normal → images (B, 3, R, R), about [-1, 1].

    Args:
        sizes: [z_dim, channels at 4×4, at 8×8, …]; R = 4 · 2^(len(sizes) − 2). `preset(R)` gives the
            published ones.
        tanh: clamp the images to [-1, 1] (off: unclamped, as the original).
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], tanh: bool = False) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise InvalidValue(f"sizes must be [z_dim, channels at 4×4, …] with positive entries, got {sizes}")
        blocks = [Block(sizes[0], sizes[1], 4, padding=3, upsample=False), Block(sizes[1], sizes[1], 3, 1, False)]
        for c_in, c_out in zip(sizes[1:-1], sizes[2:]):
            blocks += [Block(c_in, c_out, 3, 1, upsample=True), Block(c_out, c_out, 3, 1, upsample=False)]
        resolution = 4 * 2 ** (len(sizes) - 2)
        children = [(f"layer{i + 1}", block) for i, block in enumerate(blocks)]
        super().__init__(OrderedDict([*children, (f"output_{resolution}x{resolution}", ToRGB(sizes[-1], tanh))]))
        self.sizes, self.z_dim, self.resolution = tuple(sizes), sizes[0], resolution
        # the paper's layer (8×8); a generator too small to have one offers its last convolution
        self.probe_layers = ("layer4",) if len(blocks) >= 4 else (f"layer{len(blocks)}",)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim not in (2, 4) or z.shape[1] != self.z_dim or z[0].numel() != self.z_dim:
            raise InvalidValue(f"expected z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        return super().forward(z.reshape(z.shape[0], self.z_dim, 1, 1))

    def can_forward_from(self, layer: str) -> bool:
        return layer in self._modules

    def sample_z(self, n: int, seed: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
        """n standard-normal latents (n, z_dim), sample i seeded by (seed, i) (`lightning_gd.latents`)."""
        from lightning_gd.latents import latents

        return latents(range(n), self.z_dim, seed).to(device or self[0].conv.weight.device)

    def forward_from(self, layer: str, r: torch.Tensor) -> torch.Tensor:
        """The image from `layer`'s (possibly edited) output r: the blocks after `layer`."""
        names = list(self._modules)
        if layer not in names:
            raise InvalidValue(f"ProGAN has no top-level layer {layer!r}; its layers: {', '.join(names)}")
        for module in list(self)[names.index(layer) + 1 :]:
            r = module(r)
        return r


def sizes_of(state: dict[str, torch.Tensor]) -> list[int]:
    """[z_dim, channels at 4×4, …] of the ProGAN whose state dict (new names) this is.

    The number of blocks is the highest `layerK` present, so a missing tensor in the middle is reported as
    missing rather than shrinking the network; a resolution's width is read from whichever of its tensors is
    there."""
    found = [int(m.group(1)) for m in map(_LAYER_KEY.match, state) if m]
    first = state.get("layer1.conv.weight")
    if not found or not isinstance(first, torch.Tensor) or first.ndim != 4:
        shown = ", ".join(sorted(state)[:8]) + (", …" if len(state) > 8 else "")
        raise InvalidValue(
            "not a ProGAN state dict in the GAN-dissection layout: it needs layer1.conv.weight (channels, z_dim, 4, "
            f"4), layerK.conv.weight, layerK.wscale.b and output_RxR.*; its keys: {shown or 'none'}"
        )
    return [first.shape[1], *(_width(state, k) for k in range(1, max(found) + 1, 2))]


def _width(state: dict[str, torch.Tensor], k: int) -> int:
    """The output channels of block k, from its conv weight, its bias or the next block's conv weight."""
    for key, axis in ((f"layer{k}.conv.weight", 0), (f"layer{k}.wscale.b", 0), (f"layer{k + 1}.conv.weight", 1)):
        t = state.get(key)
        if isinstance(t, torch.Tensor) and t.ndim > axis:
            return int(t.shape[axis])
    raise InvalidValue(
        f"cannot tell the channels of ProGAN layer{k}: none of its tensors, nor layer{k + 1}'s, is there"
    )


def renamed_old(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' older names in the current ones: `features.i.*` → `layer{i+1}.*`, `output.*` →
    `output_{R}x{R}.*` with R given by the number of blocks; other keys unchanged (so they show as unexpected)."""
    blocks = [int(m.group(1)) for m in map(_OLD_KEY.match, state) if m]
    resolution = 4 * 2 ** (max(blocks) // 2) if blocks else 4
    out = {}
    for key, value in state.items():
        old = _OLD_KEY.match(key)
        if old:
            key = f"layer{int(old.group(1)) + 1}.{old.group(2)}"
        elif key.startswith("output."):
            key = f"output_{resolution}x{resolution}." + key[len("output.") :]
        out[key] = value
    return out


def check_fits(net: ProGAN, state: dict[str, torch.Tensor], source: object) -> None:
    """Nothing, or a ValueError that lists every missing key, unexpected key and differing shape at once."""
    problems = state_differences(shapes_of(net.state_dict()), shapes_of(state))
    if problems:
        raise InvalidValue(
            f"{source} does not fit the ProGAN its layerK tensors describe (sizes {list(net.sizes)}): {problems}"
        )


def load(
    argument: str | None = None,
    weights: str | None = None,
    tanh: bool = False,
    device: torch.device | str | None = None,
) -> ProGAN:
    """`progan:PATH`: the ProGAN stored at PATH, its resolution and widths read from the file, in eval mode.

    The file is a state dict (or `{"state_dict": ...}`) in the authors' current or older naming, as `.pth`
    (read with weights_only) or `.safetensors`. `weights=PATH` names the file instead of the spec's argument.
    `tanh` clamps the images to [-1, 1]."""
    if argument and weights and str(argument) != str(weights):
        raise InvalidValue(f"two ProGAN files given: progan:{argument} and weights={weights}; name one")
    path = argument or weights
    if not path:
        raise InvalidValue(
            "progan needs the path of a ProGAN checkpoint: progan:PATH, e.g. progan:proggan_churchoutdoor-*.pth "
            "(the GAN-dissection authors' files; nothing is downloaded)"
        )
    state = state_dict_of(read_file(path, WHAT), source=path)
    if "features.0.conv.weight" in state:
        state = renamed_old(state)
    net = ProGAN(sizes_of(state), tanh=tanh)
    check_fits(net, state, path)
    net.load_state_dict(state)
    return net.to(device or "cpu").eval()

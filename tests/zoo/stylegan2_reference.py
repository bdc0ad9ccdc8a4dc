"""StyleGAN2 written out slowly for the tests, independent of lightning_gd.zoo.stylegan2: checkpoints in the
published layouts (rosinality's g_ema, NVlabs' G_ema) with random values, and the generator's maths as plain loops
over samples and filter taps, read straight from rosinality's key names."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])
FIR2D = FIR[:, None] * FIR[None, :] / 64  # sums to 1


def rosinality_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """stylegan2-pytorch's Generator.channels."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}


def rosinality_shapes(size: int, style_dim: int, n_mlp: int, channels: dict[int, int]) -> dict[str, tuple]:
    """Every key of rosinality's `Generator(size, style_dim, n_mlp).state_dict()` with its shape."""
    shapes: dict[str, tuple] = {}
    for i in range(1, n_mlp + 1):
        shapes |= {f"style.{i}.weight": (style_dim, style_dim), f"style.{i}.bias": (style_dim,)}
    shapes["input.input"] = (1, channels[4], 4, 4)

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        shapes.update(
            {
                f"{prefix}.conv.weight": (1, cout, cin, 3, 3),
                f"{prefix}.conv.modulation.weight": (cin, style_dim),
                f"{prefix}.conv.modulation.bias": (cin,),
                f"{prefix}.noise.weight": (1,),
                f"{prefix}.activate.bias": (cout,),
            }
        )
        if up:
            shapes[f"{prefix}.conv.blur.kernel"] = (4, 4)

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        shapes.update(
            {
                f"{prefix}.conv.weight": (1, 3, cin, 1, 1),
                f"{prefix}.conv.modulation.weight": (cin, style_dim),
                f"{prefix}.conv.modulation.bias": (cin,),
                f"{prefix}.bias": (1, 3, 1, 1),
            }
        )
        if up:
            shapes[f"{prefix}.upsample.kernel"] = (4, 4)

    styled("conv1", channels[4], channels[4], False)
    to_rgb("to_rgb1", channels[4], False)
    log_size = int(math.log2(size))
    for i in range(3, log_size + 1):
        j = i - 3
        styled(f"convs.{2 * j}", channels[2 ** (i - 1)], channels[2**i], True)
        styled(f"convs.{2 * j + 1}", channels[2**i], channels[2**i], False)
        to_rgb(f"to_rgbs.{j}", channels[2**i], True)
    for layer in range((log_size - 2) * 2 + 1):
        res = 2 ** ((layer + 5) // 2)
        shapes[f"noises.noise_{layer}"] = (1, 1, res, res)
    return shapes


def random_g_ema(size: int, style_dim: int, n_mlp: int, channels: dict[int, int], seed: int = 0, rgb_gain=1.0):
    """A rosinality g_ema state dict with random values (blur kernels as the real ones: FIR ×4)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in rosinality_shapes(size, style_dim, n_mlp, channels).items():
        value = torch.randn(shape, generator=g)
        if key.endswith("kernel"):
            value = FIR2D * 4
        elif key.endswith("modulation.bias"):
            value = 1 + 0.1 * value
        elif key.startswith("style."):  # stored ×100 (lr_mul 0.01), as rosinality initialises them
            value = value * (100 if key.endswith("weight") else 10)
        elif key.endswith(("noise.weight", "activate.bias")):
            value = 0.3 * value
        if key.startswith("to_rgb") and "modulation" not in key and not key.endswith("kernel"):
            value = value * rgb_gain  # the RGB outputs and biases: rgb_gain < 1 keeps images inside [-1, 1]
        state[key] = value
    return state


def to_nvlabs(state: dict[str, torch.Tensor], latent_avg: torch.Tensor) -> dict[str, torch.Tensor]:
    """rosinality's g_ema → NVlabs' G_ema state dict (the names and shapes of stylegan2-ada-pytorch)."""
    out = {"mapping.w_avg": latent_avg.reshape(-1).clone()}
    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = state[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"]
    out["synthesis.b4.const"] = state["input.input"][0]
    n_res = sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
    resolutions = [4 * 2**i for i in range(n_res + 1)]
    for r in resolutions:
        out[f"synthesis.b{r}.resample_filter"] = FIR2D.clone()
    convs = [("b4.conv1", "conv1", 0)]
    for j, r in enumerate(resolutions[1:]):
        convs += [(f"b{r}.conv0", f"convs.{2 * j}", 2 * j + 1), (f"b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)]
    for nv, ros, n in convs:
        out[f"synthesis.{nv}.weight"] = state[f"{ros}.conv.weight"][0]
        out[f"synthesis.{nv}.affine.weight"] = state[f"{ros}.conv.modulation.weight"]
        out[f"synthesis.{nv}.affine.bias"] = state[f"{ros}.conv.modulation.bias"]
        out[f"synthesis.{nv}.noise_strength"] = state[f"{ros}.noise.weight"].reshape(())
        out[f"synthesis.{nv}.noise_const"] = state[f"noises.noise_{n}"][0, 0]
        out[f"synthesis.{nv}.bias"] = state[f"{ros}.activate.bias"]
        out[f"synthesis.{nv}.resample_filter"] = FIR2D.clone()
    rgbs = [("b4.torgb", "to_rgb1")] + [(f"b{r}.torgb", f"to_rgbs.{j}") for j, r in enumerate(resolutions[1:])]
    for nv, ros in rgbs:
        out[f"synthesis.{nv}.weight"] = state[f"{ros}.conv.weight"][0]
        out[f"synthesis.{nv}.affine.weight"] = state[f"{ros}.conv.modulation.weight"]
        out[f"synthesis.{nv}.affine.bias"] = state[f"{ros}.conv.modulation.bias"]
        out[f"synthesis.{nv}.bias"] = state[f"{ros}.bias"].reshape(3)
    return out


def fir(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """upfirdn by hand: explicit zero insertion, padding, a true 2-D convolution summed tap by tap, decimation."""
    B, C, H, W = x.shape
    y = x.new_zeros(B, C, H * up, W * up)
    y[:, :, ::up, ::up] = x
    p0, p1 = pad
    y = F.pad(y, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    y = y[:, :, max(-p0, 0) : y.shape[2] - max(-p1, 0), max(-p0, 0) : y.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    oh, ow = y.shape[2] - kh + 1, y.shape[3] - kw + 1
    out = x.new_zeros(B, C, oh, ow)
    for a in range(kh):
        for b in range(kw):  # out[i, j] = Σ k[a, b] · y[i + kh − 1 − a, j + kw − 1 − b]
            out += kernel[a, b] * y[:, :, kh - 1 - a : kh - 1 - a + oh, kw - 1 - b : kw - 1 - b + ow]
    return out[:, :, ::down, ::down]


def modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: bool = False):
    """One sample at a time, with that sample's own weight; `up`: transposed conv (stride 2) written as scattered
    taps, then the blur (FIR ×4, pad 1 on both sides)."""
    outs = []
    for b in range(x.shape[0]):
        w = weight * styles[b][None, :, None, None]  # (O, I, k, k)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3)) + 1e-8)[:, None, None, None]
        if not up:
            outs.append(F.conv2d(x[b : b + 1], w, padding=w.shape[-1] // 2))
            continue
        _, H, W = x[b].shape
        k = w.shape[-1]
        y = x.new_zeros(1, w.shape[0], 2 * H + k - 2, 2 * W + k - 2)
        for i in range(k):
            for j in range(k):  # every input pixel (h, v) adds w[:, :, i, j] · x[:, h, v] at (2h + i, 2v + j)
                y[0, :, i : i + 2 * H : 2, j : j + 2 * W : 2] += torch.einsum("oc,chw->ohw", w[:, :, i, j], x[b])
        outs.append(fir(y, FIR2D * 4, pad=(1, 1)))
    return torch.cat(outs)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def mapping(state: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    x = z / torch.sqrt(z.square().mean(1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in state:
        weight, bias = state[f"style.{i}.weight"], state[f"style.{i}.bias"]
        x = lrelu(x @ (weight * 0.01 / math.sqrt(weight.shape[1])).T + bias * 0.01)
        i += 1
    return x


def generate(state: dict[str, torch.Tensor], w: torch.Tensor, noise: bool = True) -> torch.Tensor:
    """Images from w (B, w_dim) with the stored noise maps (or none)."""

    def style(prefix: str) -> torch.Tensor:
        mod = state[f"{prefix}.conv.modulation.weight"]
        return w @ (mod / math.sqrt(mod.shape[1])).T + state[f"{prefix}.conv.modulation.bias"]

    def styled(prefix: str, x: torch.Tensor, noise_map: str, up: bool) -> torch.Tensor:
        weight = state[f"{prefix}.conv.weight"][0]
        out = modconv(x, weight / math.sqrt(weight[0].numel()), style(prefix), True, up)
        if noise:
            out = out + state[f"{prefix}.noise.weight"] * state[noise_map]
        return lrelu(out + state[f"{prefix}.activate.bias"][None, :, None, None])

    def to_rgb(prefix: str, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        weight = state[f"{prefix}.conv.weight"][0]
        out = modconv(x, weight / math.sqrt(weight.shape[1]), style(prefix), False) + state[f"{prefix}.bias"]
        return out if skip is None else out + fir(skip, FIR2D * 4, up=2, pad=(2, 1))

    x = state["input.input"].repeat(w.shape[0], 1, 1, 1)
    x = styled("conv1", x, "noises.noise_0", False)
    img = to_rgb("to_rgb1", x, None)
    j = 0
    while f"to_rgbs.{j}.bias" in state:
        x = styled(f"convs.{2 * j}", x, f"noises.noise_{2 * j + 1}", True)
        x = styled(f"convs.{2 * j + 1}", x, f"noises.noise_{2 * j + 2}", False)
        img = to_rgb(f"to_rgbs.{j}", x, img)
        j += 1
    return img

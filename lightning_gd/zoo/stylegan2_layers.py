"""StyleGAN2's building blocks in plain PyTorch (no CUDA extension), so a published generator runs on any device.

The maths are pure functions (`upfirdn2d`, `modulated_conv2d`, `leaky_relu_gain`); the modules hold parameters
under the names of rosinality's stylegan2-pytorch (`conv.weight`, `conv.modulation.*`, `noise.weight`,
`activate.bias`, ...), so its checkpoints load by renaming the top level only. Conventions, shared by rosinality's
code and NVlabs' (see `stylegan2.py` for where the two differ):
- equalised learning rate: a stored weight is multiplied at run time by `lr_mul / sqrt(fan_in)`, a stored bias by
  `lr_mul` (the mapping network uses `lr_mul` 0.01; everything else 1);
- leaky ReLU with slope 0.2 after adding the bias, times sqrt(2) so that it keeps the variance;
- resampling by the FIR filter [1, 3, 3, 1] ⊗ [1, 3, 3, 1] / 64 (times 4 when it follows a ×2 upsampling, which
  keeps the signal's average).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

BLUR_TAPS = (1, 3, 3, 1)
SLOPE, ACT_GAIN = 0.2, math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")


def blur_kernel(taps: tuple[int, ...] = BLUR_TAPS, gain: float = 1.0) -> torch.Tensor:
    """The separable FIR filter (k, k): the outer product of `taps`, normalised to sum to `gain`."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k * (gain / k.sum())


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter by a 2-D FIR convolution, keep every `down`-th sample.

    x (B, C, H, W), kernel (kh, kw); `pad` = (before, after), the same on both axes (negative values crop).
    Returns (B, C, (H·up + before + after − kh) // down + 1, same for W). Each channel is filtered alone."""
    B, C, H, W = x.shape
    if up > 1:  # a sample, then up − 1 zeros, along both axes
        x = F.pad(x.reshape(B, C, H, 1, W, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(B, C, H * up, W * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    kh, kw = kernel.shape
    weight = kernel.flip(0, 1).to(x.dtype).reshape(1, 1, kh, kw)  # conv2d correlates; flipped, it convolves
    out = F.conv2d(x.reshape(B * C, 1, *x.shape[2:]), weight)
    return out.reshape(B, C, *out.shape[2:])[:, :, ::down, ::down]


def leaky_relu_gain(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Bias (one per channel, dim 1), leaky ReLU (slope 0.2), times sqrt(2): rosinality's `fused_leaky_relu`
    and NVlabs' `bias_act(act='lrelu')`."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, SLOPE) * ACT_GAIN


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True, eps: float = 1e-8, up=False
) -> torch.Tensor:
    """StyleGAN2's convolution with a weight per sample, `weight · styles[b]` (scaling input channels), divided by
    its norm per output channel when `demodulate` (`rsqrt(Σ w² + eps)`).

    Computed as one shared convolution of the style-scaled input, then the demodulation as a per-sample scale of
    the output channels: the same numbers as per-sample weights (NVlabs' `fused_modconv=False` path) without
    materialising B·O·I·k² weights (half a gigabyte per layer for 50 samples of a 512-channel network).
    x (B, I, H, W); weight (O, I, k, k), already scaled; styles (B, I). `up`: a transposed convolution with
    stride 2 and no padding, (B, O, 2H + k − 2, 2W + k − 2), to be blurred after; otherwise 'same' padding."""
    k = weight.shape[-1]
    x = x * styles[:, :, None, None]
    if up:  # conv_transpose2d takes weights (in, out, k, k)
        out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    else:
        out = F.conv2d(x, weight, padding=k // 2)
    if demodulate:  # Σ_{i,k} (w[o,i,k] s[b,i])² = Σ_i s[b,i]² Σ_k w[o,i,k]²
        norm = styles.square() @ weight.square().sum(dim=(2, 3)).T  # (B, O)
        out = out * torch.rsqrt(norm + eps)[:, :, None, None]
    return out


class PixelNorm(nn.Module):
    """Each sample scaled to unit mean square over its features (z before the mapping network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """A linear layer with equalised learning rate: weight (out, in) × lr_mul/sqrt(in), bias × lr_mul; with
    `activate`, followed by `leaky_relu_gain`."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, bias_init: float = 0.0, activate=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale, self.lr_mul, self.activate = lr_mul / math.sqrt(in_dim), lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return leaky_relu_gain(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """A fixed FIR filter (a buffer, `kernel`, as the checkpoints store it) with its padding."""

    def __init__(self, kernel: torch.Tensor, pad: tuple[int, int], up: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", kernel)
        self.pad, self.up = pad, up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.up, pad=self.pad)


def upsample_blur(taps: tuple[int, ...] = BLUR_TAPS) -> Blur:
    """×2 upsampling of the RGB skip path: zero insertion, then the filter ×4; (H, W) → (2H, 2W)."""
    p = len(taps) - 2
    return Blur(blur_kernel(taps, gain=4.0), pad=((p + 1) // 2 + 1, p // 2), up=2)


class ModulatedConv2d(nn.Module):
    """Weight (1, O, I, k, k) scaled by 1/sqrt(I·k²), modulated by `modulation(w)` (an affine map to one style
    per input channel, bias initialised to 1), optionally demodulated; `up` doubles the resolution (transposed
    convolution, then the filter ×4 in `blur`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, w_dim: int, demodulate=True, up=False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.demodulate, self.up = demodulate, up
        self.eps = 1e-8  # added to Σ (scaled weight)²; see stylegan2.py for NVlabs' convention
        if up:
            p = len(BLUR_TAPS) - 2 - (kernel_size - 1)  # the transposed conv grew each side by k − 1
            self.blur = Blur(blur_kernel(BLUR_TAPS, gain=4.0), pad=((p + 1) // 2 + 1, p // 2 + 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = modulated_conv2d(x, self.weight[0] * self.scale, self.modulation(w), self.demodulate, self.eps, self.up)
        return self.blur(out) if self.up else out


class NoiseInjection(nn.Module):
    """Adds `weight` × per-pixel noise: fresh N(0, 1) (`random`), the stored map `const` (1, 1, H, W)
    (`const`: the same image for the same z), or nothing (`none`)."""

    def __init__(self, resolution: int, mode: str = "const") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("const", torch.randn(1, 1, resolution, resolution))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        if self.mode == "random":
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        else:
            noise = self.const.to(x.dtype)
        return x + self.weight * noise


class BiasedLeakyReLU(nn.Module):
    """`leaky_relu_gain` with a learnt bias per channel (rosinality's `FusedLeakyReLU`, key `activate.bias`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_relu_gain(x, self.bias)


class StyledConv(nn.Module):
    """One synthesis convolution: modulated 3×3 conv (upsampling ×2 first if `up`), noise, bias, leaky ReLU.

    `forward(x, w)` returns the featuremap (B, out_channels, resolution, resolution), a tensor that hooks read
    and edit directly. `conv_clamp` (NVlabs' option, None: off) clips the activations to ±conv_clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up=False, noise="const") -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=up)
        self.noise = NoiseInjection(resolution, noise)
        self.activate = BiasedLeakyReLU(out_ch)
        self.resolution, self.out_channels = resolution, out_ch
        self.conv_clamp: float | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = self.activate(self.noise(self.conv(x, w)))
        return out if self.conv_clamp is None else out.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB (not demodulated) + bias (1, 3, 1, 1); adds the previous resolution's RGB,
    upsampled ×2 (the skip path), when given."""

    def __init__(self, in_ch: int, w_dim: int, up: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if up:
            self.upsample = upsample_blur()
        self.conv_clamp: float | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if self.conv_clamp is not None:
            out = out.clamp(-self.conv_clamp, self.conv_clamp)
        return out if skip is None else out + self.upsample(skip)

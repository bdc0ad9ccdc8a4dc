"""CSAIL's published checkpoint layouts written out key by key, with random weights, and slow functional
re-implementations of their networks that read those state dicts directly: the tests' oracles for
`lightning_gd.zoo.csail`, written from the reference code's structure (semantic-segmentation-pytorch's
models.py/resnet.py, gandissect's upsegmodel), not from the module under test."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

STAGES = (64, 128, 256, 512)


class Weights(dict):
    """A state dict filled in order, with random weights that keep activations of a deep net finite."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.g = torch.Generator().manual_seed(seed)

    def conv(self, key: str, cout: int, cin: int, k: int, bias: bool = False) -> None:
        self[f"{key}.weight"] = torch.randn(cout, cin, k, k, generator=self.g) / (cin * k * k) ** 0.5
        if bias:
            self[f"{key}.bias"] = torch.randn(cout, generator=self.g) * 0.1

    def bn(self, key: str, c: int) -> None:
        self[f"{key}.weight"] = 0.5 + 0.5 * torch.rand(c, generator=self.g)
        self[f"{key}.bias"] = 0.1 * torch.randn(c, generator=self.g)
        self[f"{key}.running_mean"] = 0.1 * torch.randn(c, generator=self.g)
        self[f"{key}.running_var"] = 0.5 + torch.rand(c, generator=self.g)
        self[f"{key}.num_batches_tracked"] = torch.tensor(1000)

    def conv_bn(self, key: str, cout: int, cin: int, k: int) -> None:
        self.conv(f"{key}.0", cout, cin, k)
        self.bn(f"{key}.1", cout)


def resnet(depths=(3, 4, 6, 3), bottleneck=True, seed=0) -> Weights:
    """The encoder file: deep stem conv1/bn1 (3→64), conv2/bn2 (64→64), conv3/bn3 (64→128), then layer1–4."""
    w = Weights(seed)
    w.conv("conv1", 64, 3, 3), w.bn("bn1", 64)
    w.conv("conv2", 64, 64, 3), w.bn("bn2", 64)
    w.conv("conv3", 128, 64, 3), w.bn("bn3", 128)
    cin = 128
    for layer, (planes, blocks) in enumerate(zip(STAGES, depths), start=1):
        cout = planes * 4 if bottleneck else planes
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            if bottleneck:
                w.conv(f"{p}.conv1", planes, cin, 1), w.bn(f"{p}.bn1", planes)
                w.conv(f"{p}.conv2", planes, planes, 3), w.bn(f"{p}.bn2", planes)
                w.conv(f"{p}.conv3", cout, planes, 1), w.bn(f"{p}.bn3", cout)
            else:
                w.conv(f"{p}.conv1", planes, cin, 3), w.bn(f"{p}.bn1", planes)
                w.conv(f"{p}.conv2", planes, planes, 3), w.bn(f"{p}.bn2", planes)
            if b == 0 and (layer > 1 or cin != cout):
                w.conv(f"{p}.downsample.0", cout, cin, 1), w.bn(f"{p}.downsample.1", cout)
            cin = cout
    return w


def ppm_deepsup(num_class=150, fc=2048, seed=1) -> Weights:
    w = Weights(seed)
    for i in range(4):
        w.conv(f"ppm.{i}.1", 512, fc, 1), w.bn(f"ppm.{i}.2", 512)
    w.conv_bn("cbr_deepsup", fc // 4, fc // 2, 3)
    w.conv("conv_last.0", 512, fc + 4 * 512, 3), w.bn("conv_last.1", 512)
    w.conv("conv_last.4", num_class, 512, 1, bias=True)
    w.conv("conv_last_deepsup", num_class, fc // 4, 1, bias=True)
    return w


def pyramid_fpn(w: Weights, fc=2048, fpn=512, inplanes=(256, 512, 1024)) -> None:
    for i in range(4):
        w.conv_bn(f"ppm_conv.{i}", 512, fc, 1)
    w.conv_bn("ppm_last_conv", fpn, fc + 4 * 512, 3)
    for i, c in enumerate(inplanes):
        w.conv_bn(f"fpn_in.{i}", fpn, c, 1)
        w.conv_bn(f"fpn_out.{i}.0", fpn, fpn, 3)


def upernet(num_class=150, fc=2048, fpn=512, seed=2) -> Weights:
    w = Weights(seed)
    pyramid_fpn(w, fc, fpn)
    w.conv_bn("conv_last.0", fpn, 4 * fpn, 3)
    w.conv("conv_last.1", num_class, fpn, 1, bias=True)
    return w


def upp_decoder(classes: dict[str, int], fc=2048, fpn=512, seed=3) -> Weights:
    w = Weights(seed)
    pyramid_fpn(w, fc, fpn)
    w.conv_bn("conv_fusion", fpn, 4 * fpn, 3)
    w.conv_bn("scene_head.0", fpn, fpn, 3)
    w.conv("scene_head.2", classes["scene"], fpn, 1, bias=True)
    for h in ("object", "part", "material"):
        w.conv_bn(f"{h}_head.0", fpn, fpn, 3)
        w.conv(f"{h}_head.1", classes[h], fpn, 1, bias=True)
    return w


# ------------------------------------------------------------------------------------- functional oracles


def bn(s: dict, key: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x, s[f"{key}.running_mean"], s[f"{key}.running_var"], s[f"{key}.weight"], s[f"{key}.bias"], False, 0.0, 1e-5
    )


def cbr(s: dict, key: str, x: torch.Tensor) -> torch.Tensor:
    """conv (no bias, 'same' padding) → batch norm → ReLU, keys key.0 / key.1."""
    weight = s[f"{key}.0.weight"]
    return F.relu(bn(s, f"{key}.1", F.conv2d(x, weight, padding=weight.shape[-1] // 2)))


def up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def ref_resnet(s: dict, x: torch.Tensor, dilated: bool) -> list[torch.Tensor]:
    """The reference's ResNet (and ResnetDilated with dilate_scale=8: in layer3/layer4 a stride-2 conv becomes
    stride 1 with dilation d/2 if 3×3, and every other 3×3 conv gets dilation d, d = 2 / 4)."""
    for i in (1, 2, 3):
        x = F.relu(bn(s, f"bn{i}", F.conv2d(x, s[f"conv{i}.weight"], stride=2 if i == 1 else 1, padding=1)))
    x = F.max_pool2d(x, 3, 2, 1)
    out = []
    for layer in (1, 2, 3, 4):
        d = {3: 2, 4: 4}.get(layer, 1) if dilated else 1
        b = 0
        while f"layer{layer}.{b}.conv1.weight" in s:
            p, identity = f"layer{layer}.{b}", x
            stride = 2 if (b == 0 and layer > 1) else 1
            convs = [k for k in ("conv1", "conv2", "conv3") if f"{p}.{k}.weight" in s]
            strided = "conv2" if "conv3" in convs else "conv1"  # where the block's stride sits
            for j, k in enumerate(convs):
                w = s[f"{p}.{k}.weight"]
                st = stride if k == strided else 1
                dil = (d // 2 if st == 2 else d) if (d > 1 and w.shape[-1] == 3) else 1
                st = 1 if d > 1 else st
                pad = dil if w.shape[-1] == 3 else 0
                x = bn(s, f"{p}.bn{j + 1}", F.conv2d(x, w, stride=st, padding=pad, dilation=dil))
                x = F.relu(x) if j < len(convs) - 1 else x
            if f"{p}.downsample.0.weight" in s:
                ds = 1 if d > 1 else stride
                identity = bn(s, f"{p}.downsample.1", F.conv2d(identity, s[f"{p}.downsample.0.weight"], stride=ds))
            x = F.relu(x + identity)
            b += 1
        out.append(x)
    return out


def ref_ppm(s: dict, feats: list[torch.Tensor]) -> torch.Tensor:
    top = feats[-1]
    branches = []
    for i in range(4):
        pooled = F.adaptive_avg_pool2d(top, (1, 2, 3, 6)[i])
        y = F.relu(bn(s, f"ppm.{i}.2", F.conv2d(pooled, s[f"ppm.{i}.1.weight"])))
        branches.append(up(y, top.shape[-2:]))
    x = F.relu(bn(s, "conv_last.1", F.conv2d(torch.cat([top, *branches], 1), s["conv_last.0.weight"], padding=1)))
    return F.conv2d(x, s["conv_last.4.weight"], s["conv_last.4.bias"])


def ref_fpn(s: dict, feats: list[torch.Tensor], pool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(FPN levels P2…P5, their fusion at P2's size), the reference's UPerNet.forward up to its heads."""
    top = feats[-1]
    ppm = [top] + [cbr(s, f"ppm_conv.{i}", up(pool(top, sc), top.shape[-2:])) for i, sc in enumerate((1, 2, 3, 6))]
    f = cbr(s, "ppm_last_conv", torch.cat(ppm, 1))
    levels = [f]
    for i in (2, 1, 0):
        lateral = cbr(s, f"fpn_in.{i}", feats[i])
        f = lateral + up(f, lateral.shape[-2:])
        levels.append(cbr(s, f"fpn_out.{i}.0", f))
    levels.reverse()
    fused = torch.cat([levels[0]] + [up(p, levels[0].shape[-2:]) for p in levels[1:]], 1)
    return levels, fused


def ref_prroi(x: torch.Tensor, bins: int, per_step: int = 4) -> torch.Tensor:
    """PrRoI pooling by definition: the bilinear interpolant (feature (i, j) at the point (i, j), zero outside
    the map) averaged over each bin of the RoI [0, W] × [0, H]. A midpoint rule on a grid that has every bin
    edge and every integer among its nodes is exact for the piecewise bilinear interpolant."""

    def samples(n: int) -> torch.Tensor:  # (n · bins · per_step, n): the hat weights of each grid point
        t = (torch.arange(n * bins * per_step, dtype=torch.float64) + 0.5) / (bins * per_step)
        return (1 - (t[:, None] - torch.arange(n, dtype=torch.float64)[None, :]).abs()).clamp_min(0)

    hy, hx = samples(x.shape[-2]), samples(x.shape[-1])
    values = torch.einsum("sh,bchw,tw->bcst", hy, x.double(), hx)  # the interpolant at every sample point
    B, C, Sy, Sx = values.shape
    return values.view(B, C, bins, Sy // bins, bins, Sx // bins).mean((3, 5)).to(x.dtype)


def ref_prroi_kernel(x: torch.Tensor, bins: int) -> torch.Tensor:
    """PrRoI pooling the way the reference CUDA kernel (PrRoIPoolingForward) sums it: per bin, per unit cell the bin
    overlaps, the four corners' bilinear weights integrated over the overlap (corners off the map count 0), the sum
    divided by the bin's area. Slow; for small maps."""
    H, W = x.shape[-2:]
    out = x.new_zeros(*x.shape[:2], bins, bins)

    def integral(a: float, b: float) -> float:  # ∫_a^b (1 − t) dt: a corner's weight along one axis
        return (b - b * b / 2) - (a - a * a / 2)

    def at(h: int, w: int):
        return x[..., h, w] if 0 <= h < H and 0 <= w < W else 0.0

    bh, bw = H / bins, W / bins
    for ph in range(bins):
        for pw in range(bins):
            ya, yb, xa, xb = ph * bh, (ph + 1) * bh, pw * bw, (pw + 1) * bw
            total = 0.0
            for h in range(math.floor(ya), math.ceil(yb)):
                for w in range(math.floor(xa), math.ceil(xb)):
                    y0, y1, x0, x1 = max(ya, h), min(yb, h + 1), max(xa, w), min(xb, w + 1)
                    top, bottom = integral(y0 - h, y1 - h), integral(h + 1 - y1, h + 1 - y0)
                    left, right = integral(x0 - w, x1 - w), integral(w + 1 - x1, w + 1 - x0)
                    total = total + at(h, w) * top * left + at(h, w + 1) * top * right
                    total = total + at(h + 1, w) * bottom * left + at(h + 1, w + 1) * bottom * right
            out[..., ph, pw] = total / (bh * bw)
    return out

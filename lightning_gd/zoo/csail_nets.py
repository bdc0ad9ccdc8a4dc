"""CSAIL's scene parsers, written to the key layout of their published weights.

The encoder is the deep-stem ResNet of CSAILVision/semantic-segmentation-pytorch (three 3×3 convolutions instead of
one 7×7, then `layer1`–`layer4`), optionally dilated as their `ResnetDilated(dilate_scale=8)`: `layer3` and `layer4`
keep stride 1, the convolution that had stride 2 gets dilation d/2 and every other 3×3 convolution of the layer
dilation d (2 in `layer3`, 4 in `layer4`), so features stay at 1/8 of the input. The decoders are their PPM
(PSPNet's pyramid pooling, with or without the deep-supervision branch) and UPerNet (pyramid pooling + FPN), and the
UPerNet of Unified Perceptual Parsing (CSAILVision/unifiedparsing, vendored in gandissect) with its object, part,
material and scene heads. Batch norms are plain `BatchNorm2d` (eps 1e-5): the reference's synchronized batch norm
is the same computation in eval mode.

Unified Perceptual Parsing pools its pyramid with Precise RoI Pooling (a CUDA-only op in the reference) over the
RoI [0, W] × [0, H] of the feature map. `prroi_pool` computes that exactly, on any device: PrRoI pooling
integrates the bilinear interpolant of the features, which places feature (i, j) at the point (i, j) and is zero
beyond the map, over each bin and divides by the bin's area. Per axis that is a fixed (bins × n) matrix, so the
pooling is two matrix products. `pooling="average"` uses adaptive average pooling instead (the pooling the ADE20K
models were trained with); it differs from PrRoI pooling even when the bins align with the feature grid: an
aligned bin [a, b] gets the trapezoid rule (½·f_a + f_{a+1} + … + f_{b-1} + ½·f_b) / (b − a) from PrRoI pooling
and the cell mean (f_a + … + f_{b-1}) / (b − a) from average pooling, and the last bin, whose point f_b = f_n
lies outside the map, keeps only (b − a − ½) / (b − a) of the mass (at scale 1 on an 8 × 8 map, the map of a
256 × 256 input, 15/16 per axis). The bins align when the scale divides the map side (scales 1, 2, 3 and 6 all
do for a side of 6k, e.g. 384 × 384 inputs; for 256 × 256 inputs the 8 × 8 map aligns with 1 and 2 only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

POOL_SCALES = (1, 2, 3, 6)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Keys `0.weight` (no bias), `1.*` (batch norm): the reference's `conv3x3_bn_relu` and 1×1 branches."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class Block(nn.Module):
    """A ResNet block, bottleneck (1×1, 3×3, 1×1; expansion 4) or basic (3×3, 3×3). `strided_dilation` is the
    dilation of the 3×3 convolution in the position that carries the layer's stride, `dilation` that of the other
    3×3 convolutions (the reference's `_nostride_dilate`)."""

    def __init__(self, cin: int, planes: int, bottleneck: bool, stride: int, strided_dilation: int, dilation: int):
        super().__init__()
        cout = planes * (4 if bottleneck else 1)
        d, self.bottleneck = strided_dilation, bottleneck
        if bottleneck:
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=d, dilation=d, bias=False)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, padding=d, dilation=d, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(self.relu(out)))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def resnet_layer(cin: int, planes: int, blocks: int, bottleneck: bool, stride: int, dilate: int) -> nn.Sequential:
    """`dilate` > 1 trades the layer's stride for dilation, as the reference's dilated encoders do."""
    first = dilate // 2 if dilate > 1 else 1
    stride = 1 if dilate > 1 else stride
    cout = planes * (4 if bottleneck else 1)
    layers = [Block(cin, planes, bottleneck, stride, first, dilate)]
    layers += [Block(cout, planes, bottleneck, 1, dilate, dilate) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetEncoder(nn.Module):
    """Images (B, 3, H, W) → the features of `layer1`–`layer4` (strides 4, 8, 16, 32; 4, 8, 8, 8 dilated).

    Args:
        depths: blocks per layer, e.g. (3, 4, 6, 3) for ResNet-50.
        bottleneck: bottleneck blocks (ResNet-50/101) or basic blocks (ResNet-18).
        dilated: the reference's dilate_scale=8 variant (`resnet50dilated`).
    """

    def __init__(self, depths=(3, 4, 6, 3), bottleneck: bool = True, dilated: bool = False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, padding=1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        cin, expansion = 128, 4 if bottleneck else 1
        dilations = (1, 1, 2, 4) if dilated else (1, 1, 1, 1)
        for i, (planes, blocks, dilate) in enumerate(zip((64, 128, 256, 512), depths, dilations), start=1):
            layer = resnet_layer(cin, planes, blocks, bottleneck, 1 if i == 1 else 2, dilate)
            self.add_module(f"layer{i}", layer)
            cin = planes * expansion
        self.channels = tuple(p * expansion for p in (64, 128, 256, 512))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(self.relu(self.bn3(self.conv3(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


class PPM(nn.Module):
    """PSPNet's pyramid pooling head (`ppm` / `ppm_deepsup`): features → class logits at the features' size.

    With `deepsup`, the deep-supervision branch (`cbr_deepsup`, `conv_last_deepsup`) exists so that the published
    file loads strictly; it is a training-time loss on `layer3` and, as in the reference, unused at inference."""

    def __init__(self, num_class: int, fc_dim: int = 2048, deepsup: bool = True):
        super().__init__()
        self.ppm = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(s), nn.Conv2d(fc_dim, 512, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU(True)
            )
            for s in POOL_SCALES
        )
        self.conv_last = nn.Sequential(
            *conv_bn_relu(fc_dim + len(POOL_SCALES) * 512, 512), nn.Dropout2d(0.1), nn.Conv2d(512, num_class, 1)
        )
        if deepsup:
            self.cbr_deepsup = conv_bn_relu(fc_dim // 2, fc_dim // 4)
            self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        top = features[-1]
        pooled = [upsample(branch(top), top.shape[-2:]) for branch in self.ppm]
        return self.conv_last(torch.cat([top, *pooled], 1))


def hat_integral(t: torch.Tensor) -> torch.Tensor:
    """∫_{-∞}^{t} max(0, 1 − |u|) du: the mass of one bilinear 'hat' to the left of t."""
    t = t.clamp(-1, 1)
    return torch.where(t < 0, (1 + t) ** 2 / 2, 1 - (1 - t) ** 2 / 2)


def prroi_weights(n: int, bins: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(bins, n): PrRoI pooling along one axis of length n over the RoI [0, n] (see the module doc)."""
    edges = torch.arange(bins + 1, dtype=torch.float64, device=device) * (n / bins)  # (bins + 1,)
    points = torch.arange(n, dtype=torch.float64, device=device)  # (n,)
    mass = hat_integral(edges[:, None] - points[None, :])  # (bins + 1, n)
    return ((mass[1:] - mass[:-1]) / (n / bins)).to(dtype)


def prroi_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Precise RoI pooling of (B, C, H, W) over the whole map into (B, C, bins, bins), as the reference UPerNet
    calls it (RoI (0, 0, W, H), spatial scale 1)."""
    wy = prroi_weights(x.shape[-2], bins, x.dtype, x.device)  # (bins, H)
    wx = prroi_weights(x.shape[-1], bins, x.dtype, x.device)  # (bins, W)
    return torch.einsum("kh,bchw,lw->bckl", wy, x, wx)


POOLING: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "prroi": prroi_pool,
    "average": F.adaptive_avg_pool2d,
}


class UPerNetBase(nn.Module):
    """The pyramid pooling module and the FPN shared by UPerNet (ADE20K) and Unified Perceptual Parsing.

    Args:
        fc_dim: channels of the top feature map.
        fpn_dim: channels of the FPN (512 for `upernet`, 256 for `upernet_lite`).
        fpn_inplanes: channels of the encoder's four feature maps.
        pool: how the pyramid pools the top map: `pool(x, bins)` (see POOLING).
    """

    def __init__(self, fc_dim: int, fpn_dim: int, fpn_inplanes, pool: Callable[[torch.Tensor, int], torch.Tensor]):
        super().__init__()
        self.pool = pool
        self.ppm_conv = nn.ModuleList(conv_bn_relu(fc_dim, 512, kernel=1) for _ in POOL_SCALES)
        self.ppm_last_conv = conv_bn_relu(fc_dim + len(POOL_SCALES) * 512, fpn_dim)
        self.fpn_in = nn.ModuleList(conv_bn_relu(c, fpn_dim, kernel=1) for c in fpn_inplanes[:-1])
        self.fpn_out = nn.ModuleList(nn.Sequential(conv_bn_relu(fpn_dim, fpn_dim)) for _ in fpn_inplanes[:-1])

    def pyramid(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The FPN outputs, finest first: [P2, P3, P4, P5], P5 the pyramid-pooled top."""
        top = features[-1]
        pooled = [conv(upsample(self.pool(top, s), top.shape[-2:])) for s, conv in zip(POOL_SCALES, self.ppm_conv)]
        f = self.ppm_last_conv(torch.cat([top, *pooled], 1))
        out = [f]
        for i in reversed(range(len(features) - 1)):
            lateral = self.fpn_in[i](features[i])
            f = lateral + upsample(f, lateral.shape[-2:])  # top-down path: the sum, not fpn_out's output, goes on
            out.append(self.fpn_out[i](f))
        return out[::-1]

    @staticmethod
    def fused(pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Every level upsampled to P2 and concatenated: (B, 4 · fpn_dim, h, w)."""
        return torch.cat([pyramid[0], *(upsample(p, pyramid[0].shape[-2:]) for p in pyramid[1:])], 1)


class UPerNet(UPerNetBase):
    """UPerNet of semantic-segmentation-pytorch (`upernet`): features → class logits at 1/4 of the input."""

    def __init__(self, num_class: int, fc_dim: int = 2048, fpn_dim: int = 512, fpn_inplanes=(256, 512, 1024, 2048)):
        super().__init__(fc_dim, fpn_dim, fpn_inplanes, F.adaptive_avg_pool2d)
        self.conv_last = nn.Sequential(
            conv_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim), nn.Conv2d(fpn_dim, num_class, 1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_last(self.fused(self.pyramid(features)))


def head(fpn_dim: int, classes: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(fpn_dim, fpn_dim), nn.Conv2d(fpn_dim, classes, 1))


class UPPDecoder(UPerNetBase):
    """Unified Perceptual Parsing's UPerNet: features → logits of the object, part and material heads at 1/4 of
    the input (objects and parts from the fused pyramid, materials from P2). The scene head (one label per image,
    not per pixel) exists so that the published file loads strictly, and is not computed."""

    def __init__(
        self, classes: dict[str, int], fc_dim=2048, fpn_dim=512, fpn_inplanes=(256, 512, 1024, 2048), pool=None
    ):
        super().__init__(fc_dim, fpn_dim, fpn_inplanes, pool or prroi_pool)
        self.conv_fusion = conv_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim)
        self.scene_head = nn.Sequential(
            conv_bn_relu(fpn_dim, fpn_dim), nn.AdaptiveAvgPool2d(1), nn.Conv2d(fpn_dim, classes["scene"], 1)
        )
        self.object_head = head(fpn_dim, classes["object"])
        self.part_head = head(fpn_dim, classes["part"])
        self.material_head = head(fpn_dim, classes["material"])

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pyramid = self.pyramid(features)
        fused = self.conv_fusion(self.fused(pyramid))
        return {
            "object": self.object_head(fused),
            "part": self.part_head(fused),
            "material": self.material_head(pyramid[0]),
        }


class EncoderDecoder(nn.Module):
    """`encoder` then `decoder`; hook layers by name, e.g. `encoder.layer4` or `decoder.ppm_last_conv`."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))

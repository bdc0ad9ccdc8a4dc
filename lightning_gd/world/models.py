"""Network architectures of the embedded world: generator, discriminator, segmenter, FID feature net.

The generator is a DCGAN-style stack whose blocks are named `layer1 … layer6` (4×4 → 64×64) plus
`output`, the naming the dissection tools expect from ProGAN checkpoints too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)
    )


class Generator(nn.Module):
    """z (B, z_dim) → image (B, 3, 64, 64) in [-1, 1]. Featuremaps: layer1 4², layer2 8², layer3 16²,
    layer4 16², layer5 32², layer6 64²."""

    def __init__(self, z_dim: int = 128, width: int = 256) -> None:
        super().__init__()
        self.z_dim = z_dim
        w = width
        self.layer1 = nn.Sequential(  # (B, z, 1, 1) → (B, w, 4, 4)
            nn.ConvTranspose2d(z_dim, w, 4, 1, 0, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=False)
        )
        self.layer2 = _up(w, w)  # 8×8
        self.layer3 = _up(w, w // 2)  # 16×16
        self.layer4 = nn.Sequential(
            nn.Conv2d(w // 2, w // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(w // 2), nn.ReLU(inplace=False)
        )
        self.layer5 = _up(w // 2, w // 4)  # 32×32
        self.layer6 = _up(w // 4, w // 8)  # 64×64
        self.output = nn.Sequential(nn.Conv2d(w // 8, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"Generator expects z of shape (B, {self.z_dim}), got {tuple(z.shape)}")
        x = z[:, :, None, None]  # (B, z, 1, 1)
        for block in self.blocks().values():
            x = block(x)
        return x

    def blocks(self) -> dict[str, nn.Module]:
        names = ("layer1", "layer2", "layer3", "layer4", "layer5", "layer6", "output")
        return {name: getattr(self, name) for name in names}

    def forward_from(self, layer: str, r: torch.Tensor) -> torch.Tensor:
        """The rest of the generator after block `layer`, applied to its (possibly edited) output r."""
        names = list(self.blocks())
        if layer not in names:
            raise KeyError(f"forward_from: '{layer}' is not a block; blocks: {', '.join(names)}")
        for name in names[names.index(layer) + 1 :]:
            r = self.blocks()[name](r)
        return r

    def sample_z(self, n: int, seed: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(n, self.z_dim, generator=gen).to(device or next(self.parameters()).device)


class Discriminator(nn.Module):
    """image (B, 3, 64, 64) → logit (B,)."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        w = width

        def down(cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(cout))
            return [*layers, nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(
            *down(3, w, norm=False),  # 32×32
            *down(w, 2 * w),  # 16×16
            *down(2 * w, 4 * w),  # 8×8
            *down(4 * w, 8 * w),  # 4×4
            nn.Conv2d(8 * w, 1, 4, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net: image (B, 3, H, W) in [-1, 1] → class logits (B, C, H, W)."""

    def __init__(self, num_classes: int, width: int = 24) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _conv_block(3, w), _conv_block(w, 2 * w), _conv_block(2 * w, 4 * w)
        self.mid = _conv_block(4 * w, 4 * w)
        self.dec3, self.dec2, self.dec1 = _conv_block(8 * w, 2 * w), _conv_block(4 * w, w), _conv_block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)  # (B, w, H, W)
        e2 = self.enc2(F.max_pool2d(e1, 2))  # (B, 2w, H/2, W/2)
        e3 = self.enc3(F.max_pool2d(e2, 2))  # (B, 4w, H/4, W/4)
        m = self.mid(F.max_pool2d(e3, 2))  # (B, 4w, H/8, W/8)
        d3 = self.dec3(torch.cat([F.interpolate(m, scale_factor=2.0), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        return self.head(d1)


class FeatureNet(nn.Module):
    """image (B, 3, 64, 64) in [-1, 1] → features (B, feature_dim), trained to predict how much of each
    concept covers each cell of a grid×grid layout, so its features see both content and layout."""

    def __init__(self, num_classes: int, feature_dim: int = 256, grid: int = 4, width: int = 32) -> None:
        super().__init__()
        w = width
        self.num_classes, self.grid, self.feature_dim = num_classes, grid, feature_dim
        self.conv = nn.Sequential(
            _conv_block(3, w), nn.MaxPool2d(2),  # 32²
            _conv_block(w, 2 * w), nn.MaxPool2d(2),  # 16²
            _conv_block(2 * w, 4 * w), nn.MaxPool2d(2),  # 8²
            _conv_block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(grid),  # (B, 4w, grid, grid)
        )  # fmt: skip
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * grid * grid, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes * grid * grid)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coverage logits (B, num_classes, grid, grid)."""
        return self.head(self.forward_features(x)).view(-1, self.num_classes, self.grid, self.grid)

"""Network architectures of the embedded world's segmenter and FID feature net. The world's generator is a
`lightning_gd.zoo.progan.ProGAN` (the class that loads the published ProGAN checkpoints) and its discriminator
is in `lightning_gd.world.gan`, with the training module."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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
            _conv_block(3, w),
            nn.MaxPool2d(2),  # 32²
            _conv_block(w, 2 * w),
            nn.MaxPool2d(2),  # 16²
            _conv_block(2 * w, 4 * w),
            nn.MaxPool2d(2),  # 8²
            _conv_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(grid),  # (B, 4w, grid, grid)
        )
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * grid * grid, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes * grid * grid)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coverage logits (B, num_classes, grid, grid)."""
        return self.head(self.forward_features(x)).view(-1, self.num_classes, self.grid, self.grid)

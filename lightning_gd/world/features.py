"""The world's FID feature extractor: a small CNN trained on renders to predict how much of each concept
covers each cell of a 4×4 grid, registered with torch-fidelity so FID runs fully offline.

FID computed with it is "world FID": comparable between runs on this world, never with Inception FID.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from lightning_gd.errors import InvalidValue
from lightning_gd.models.images import to_float_images
from lightning_gd.world.models import FeatureNet
from lightning_gd.world.render import CONCEPTS

FEATURE_EXTRACTOR_NAME = "lightning-gd-world-v1"
FEATURE_NAME = "features"


def coverage_targets(labels: torch.Tensor, grid: int) -> torch.Tensor:
    """labels (B, H, W) → fraction of each grid cell covered by each concept (B, C, grid, grid)."""
    onehot = F.one_hot(labels, len(CONCEPTS)).permute(0, 3, 1, 2).float()  # (B, C, H, W)
    return F.adaptive_avg_pool2d(onehot, grid)


class FeatureNetModule(pl.LightningModule):
    """Trains `FeatureNet` on rendered scenes with a soft-target BCE on per-cell concept coverage.

    Args:
        feature_dim: size of the feature vector used for FID.
        grid: cells per side of the coverage layout it predicts.
        width: channels of the first conv block.
        lr: Adam learning rate (one-cycle schedule).
    """

    def __init__(self, feature_dim: int = 256, grid: int = 4, width: int = 16, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = FeatureNet(len(CONCEPTS), feature_dim, grid, width)

    def _loss(self, batch) -> torch.Tensor:
        x, y = batch
        return F.binary_cross_entropy_with_logits(self.net(x), coverage_targets(y, self.hparams.grid))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("loss/train", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        pred = torch.sigmoid(self.net(x))
        self.log("val/coverage_mae", (pred - coverage_targets(y, self.hparams.grid)).abs().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.1
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class WorldFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor: uint8 (B, 3, 64, 64) → (features (B, feature_dim),).

    `feature_extractor_weights_path` names a safetensors file; by default the shipped weights are used."""

    def __init__(self, name: str, features_list, feature_extractor_weights_path: str | None = None, **kwargs) -> None:
        super().__init__(name, features_list)
        from lightning_gd.world import load_feature_net

        self.net = load_feature_net(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return (FEATURE_NAME,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return FEATURE_NAME

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise InvalidValue(f"{self.name} expects uint8 images (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        x = to_float_images(x).to(next(self.net.parameters()).device)
        if x.shape[-2:] != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return (self.net.forward_features(x).double(),)


def register_world_feature_extractor() -> str:
    """Register the extractor with torch-fidelity (idempotent) and return its name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if FEATURE_EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(FEATURE_EXTRACTOR_NAME, WorldFeatureExtractor)
    return FEATURE_EXTRACTOR_NAME

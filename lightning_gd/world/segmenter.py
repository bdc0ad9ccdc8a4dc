"""Training the world's segmenter: a small U-Net on rendered scenes, with blur and noise augmentation so
that it stays sensible on generated images, which are blurrier than renders."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchmetrics
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from lightning_gd.models.segmenters import ModuleSegmenter
from lightning_gd.world.models import UNet
from lightning_gd.world.render import CATEGORIES, CONCEPTS


def world_segmenter(width: int = 16) -> ModuleSegmenter:
    return ModuleSegmenter(UNet(len(CONCEPTS), width), CONCEPTS, CATEGORIES)


def degrade(x: torch.Tensor, max_blur: float, max_noise: float, groups: int = 4) -> torch.Tensor:
    """Blur and add noise with random strengths, one blur per group of images (vectorised; a per-image
    blur loop costs more than the network on a CPU): (B, 3, H, W) → same, in [-1, 1]."""
    chunks = []
    for chunk in x.chunk(groups):
        sigma = float(torch.rand(())) * max_blur
        chunks.append(TF.gaussian_blur(chunk, [5, 5], [sigma, sigma]) if sigma > 0.2 else chunk)
    out = torch.cat(chunks)
    noise = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * max_noise
    return (out + noise * torch.randn_like(out)).clamp(-1, 1)


class SegmenterModule(pl.LightningModule):
    """Cross-entropy training of the world's U-Net segmenter.

    Args:
        width: channels of the first U-Net block.
        lr: AdamW learning rate (cosine-decayed over the run).
        weight_decay: AdamW weight decay.
        max_blur: largest Gaussian blur sigma of the augmentation (pixels).
        max_noise: largest std of the additive noise augmentation (in [-1, 1] units).
    """

    def __init__(
        self,
        width: int = 16,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        max_blur: float = 1.2,
        max_noise: float = 0.08,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.segmenter = world_segmenter(width)
        n = len(CONCEPTS)
        self.val_iou = torchmetrics.JaccardIndex(task="multiclass", num_classes=n, average="none")
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=n, average="micro")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        x = degrade(x, self.hparams.max_blur, self.hparams.max_noise)
        loss = F.cross_entropy(self.segmenter.logits(x), y)
        self.log("loss/train", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        pred = self.segmenter.logits(x).argmax(1)
        self.val_iou.update(pred, y)
        self.val_acc.update(pred, y)

    def on_validation_epoch_end(self) -> None:
        iou = self.val_iou.compute()
        self.log_dict({f"val_iou/{c}": v for c, v in zip(CONCEPTS, iou)})
        self.log_dict({"val/miou": iou.mean(), "val/pixel_acc": self.val_acc.compute()}, prog_bar=True)
        self.val_iou.reset()
        self.val_acc.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.1
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

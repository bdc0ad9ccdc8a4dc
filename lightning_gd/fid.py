"""FID through torch-fidelity, offline: the world's registered feature extractor by default.

Images are uint8 (N, 3, H, W) tensors; `torch_fidelity.calculate_metrics` does the feature extraction and
the Fréchet distance, so our numbers are torch-fidelity's own.
"""

from __future__ import annotations

import torch
import torch_fidelity
from torch.utils.data import Dataset


class UInt8Images(Dataset):
    """A torch-fidelity input: indexable uint8 (3, H, W) images."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def fid(
    images1: torch.Tensor, images2: torch.Tensor, feature_extractor: str | None = None, batch_size: int = 200, **kwargs
) -> float:
    """FID between two uint8 image sets (N, 3, H, W) with a torch-fidelity feature extractor
    (default: the embedded world's, "world FID")."""
    if feature_extractor is None:
        from lightning_gd.world.features import register_world_feature_extractor

        feature_extractor = register_world_feature_extractor()
    metrics = torch_fidelity.calculate_metrics(
        input1=UInt8Images(images1),
        input2=UInt8Images(images2),
        fid=True,
        feature_extractor=feature_extractor,
        cuda=torch.cuda.is_available(),
        batch_size=batch_size,
        verbose=False,
        cache=False,
        samples_shuffle=False,
        # the images are already in memory: loader worker processes would only copy them around
        **{"save_cpu_ram": True, **kwargs},
    )
    return float(metrics["frechet_inception_distance"])

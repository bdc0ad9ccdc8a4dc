"""Rendered scenes as a Dataset and a LightningDataModule, seeded per index.

Scene `i` of stream `seed` is `render_scene(SeedSequence([seed, i]), view)`, so it is the same whatever the
batch size, worker count or rank that asks for it. Train, validation and test use disjoint streams. `view` names
one of the renderer's views (`lightning_gd.world.render.VIEWS`); None is the shipped models' view.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_gd.errors import InvalidValue
from lightning_gd.world.render import VIEWS, render_scene

# Streams: train/val/test are offsets of the user's seed; "fresh" renders for model cards use others.
_STREAM = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def scene_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, index])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


class SceneDataset(Dataset):
    """`(image, label)`: float (3, 64, 64) in [-1, 1] and long (64, 64) concept indices."""

    def __init__(self, size: int, seed: int = 0, view: str | None = None) -> None:
        if size <= 0:
            raise InvalidValue(f"SceneDataset size must be positive, got {size}")
        if view is not None and view not in VIEWS:
            raise InvalidValue(f"unknown world view {view!r}; choose one of {sorted(VIEWS)}")
        self.size, self.seed, self.view = size, seed, view

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(f"scene index {index} out of range [0, {self.size})")
        image, label = render_scene(scene_seed(self.seed, index), self.view)
        return to_tensor(image), torch.from_numpy(label).long()


def render_batch(n: int, seed: int, start: int = 0, view: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render scenes start … start+n-1 of a stream: images (n, 3, 64, 64) in [-1, 1], labels (n, 64, 64)."""
    ds = SceneDataset(start + n, seed, view)
    items = [ds[i] for i in range(start, start + n)]
    return torch.stack([i for i, _ in items]), torch.stack([lab for _, lab in items])


class SceneDataModule(pl.LightningDataModule):
    """Scenes for training the world's models.

    Args:
        batch_size: scenes per batch.
        train_size: scenes per training epoch (rendered on the fly, ~1,000/s per core).
        val_size: validation scenes (a disjoint stream).
        seed: base seed of all streams.
        num_workers: DataLoader worker processes.
        view: the renderer's view (`street` or `close`; None: the shipped models' view).
    """

    def __init__(
        self,
        batch_size: int = 32,
        train_size: int = 50_000,
        val_size: int = 512,
        seed: int = 0,
        num_workers: int = 0,
        view: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set = SceneDataset(train_size, seed + _STREAM["train"], view)
        self.val_set = SceneDataset(val_size, seed + _STREAM["val"], view)
        self.test_set = SceneDataset(val_size, seed + _STREAM["test"], view)

    def _loader(self, ds: Dataset, shuffle: bool, order: torch.Generator | None = None) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=order,
            num_workers=self.num_workers,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        # The order of the training scenes is drawn from the seed and the global step the run starts at. The
        # loader's position is not in a checkpoint, so a resumed run starts a new epoch: with the global RNG
        # reseeded by seed_everything it would draw the same order, and train on the scenes it began with again.
        start = self.trainer.global_step if self.trainer is not None else 0
        seed = int(np.random.SeedSequence([self.hparams.seed, _STREAM["train"], start]).generate_state(1)[0])
        return self._loader(self.train_set, shuffle=True, order=torch.Generator().manual_seed(seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

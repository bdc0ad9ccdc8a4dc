"""Latent z as a Lightning DataModule: per-index seeded, so a sample is the same whatever the batch size, the
number of batches or the DDP rank that draws it; held-out splits are sharded over ranks without padding."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_gd.generators import latents


class LatentDataset(Dataset):
    """Item i → (i, z_i), z_i seeded by (seed, i): the same whatever the batch size or rank."""

    def __init__(self, n: int, z_dim: int, seed: int) -> None:
        self.n, self.z_dim, self.seed = n, z_dim, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, latents([i], self.z_dim, self.seed)[0]


class LatentDataModule(LightningDataModule):
    """Per-index seeded latents for training, validation and test, from three separate seeds.

    Args:
        n_train: training samples (one epoch).
        n_val: validation samples (ablation of the current top-n set).
        n_test: held-out samples of the final evaluation.
        batch_size: samples per batch.
        train_seed: seed of the training z.
        val_seed: seed of the validation z.
        test_seed: seed of the test z.
        z_dim: latent size (default: the model's `z_dim`).
    """

    def __init__(
        self,
        n_train: int = 1000,
        n_val: int = 100,
        n_test: int = 200,
        batch_size: int = 32,
        train_seed: int = 100,
        val_seed: int = 101,
        test_seed: int = 102,
        z_dim: int | None = None,
    ) -> None:
        super().__init__()
        if min(n_train, n_val, n_test, batch_size) < 1:
            raise ValueError("n_train, n_val, n_test and batch_size must be positive")
        if len({train_seed, val_seed, test_seed}) < 3:
            raise ValueError("train_seed, val_seed and test_seed must differ (held-out z must be held out)")
        self.save_hyperparameters()
        self.z_dim = z_dim

    def setup(self, stage: str) -> None:
        if self.z_dim is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or getattr(module, "z_dim", None) is None:
                raise ValueError("LatentDataModule needs z_dim, or a model with a `z_dim` attribute")
            self.z_dim = int(module.z_dim)

    def _loader(self, n: int, seed: int, evaluation: bool = False) -> DataLoader:
        data = LatentDataset(n, self.z_dim, seed)
        sampler = None
        if evaluation and torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = UnpaddedShard(data)  # each held-out z counted once, whatever the number of ranks
        return DataLoader(data, batch_size=self.hparams.batch_size, shuffle=False, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.n_train, self.hparams.train_seed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.n_val, self.hparams.val_seed, evaluation=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.n_test, self.hparams.test_seed, evaluation=True)


class UnpaddedShard(DistributedSampler):
    """Sample i goes to rank i mod world size, with no padding: Lightning's default sampler repeats samples to
    even out the ranks, which would count them twice in the evaluation sums. (A DistributedSampler subclass, so
    Lightning leaves it in place.)"""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)
        self.indices = list(range(self.rank, len(dataset), self.num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

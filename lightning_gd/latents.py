"""Seeded latents: the one place that turns (seed, sample index) into random numbers.

Every random draw of a measurement is fixed by a seed and, where there is one, a sample index, so a sample is
the same whatever the batch size, the number of batches or the DDP rank that draws it. Independent draws from
one user seed use named *streams* (`STREAMS`); their offsets are part of every published number, so they are
never changed, only added to.

- `latents(indices, z_dim, seed)`: z (B, z_dim), standard normal, row i from (seed, indices[i]);
- `latent_batches(n, z_dim, seed, batch_size)`: (indices, z) batches of this rank's share of n samples;
- `rng(seed, index, stream)`: a `torch.Generator` for any other per-sample or per-run draw;
- `LatentDataModule`: the same z as a Lightning DataModule (train / val / test from three seeds);
- `run_in_process`: an analysis module's `validate` or `test` hooks over it, without a Trainer.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pytorch_lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from lightning_gd.errors import InvalidValue

# seed · SAMPLE_STRIDE + index seeds sample `index`: distinct (seed, index) pairs never share a generator seed
# for indices below the stride.
SAMPLE_STRIDE = 1_000_003
MAX_SEED = 2**40  # seed · SAMPLE_STRIDE + index + a stream's offset must fit torch's 64-bit seed
# Offsets of the independent streams drawn from one user seed (kept as published: results depend on them).
STREAMS = {
    "z": 0,  # latents
    "training_locations": 0,  # the causal search's candidate insertion locations (its own location_seed)
    "test_locations": 17,  # the uniform insertion locations of the ACE evaluation
    "random_units": 7,  # random unit rankings of the ACE baseline
    "ablation_draws": 99,  # random unit sets of the artifact ablation baseline
    "transplant_recipients": 31,  # the transplant probe's choice of concept-free recipient squares
}


def rng(seed: int, index: int | None = None, stream: str = "z") -> torch.Generator:
    """A CPU generator for `stream`, seeded by (seed, sample index) or, without an index, by the seed alone."""
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; streams: {', '.join(STREAMS)}")
    if not -MAX_SEED <= int(seed) <= MAX_SEED:  # beyond it, torch's 64-bit seed overflows with an unclear message
        raise InvalidValue(f"seed {seed} is out of range: seeds are integers in [0, {MAX_SEED}]")
    base = int(seed) if index is None else int(seed) * SAMPLE_STRIDE + int(index)
    return torch.Generator().manual_seed(base + STREAMS[stream])


def latents(indices: torch.Tensor | range | list[int], z_dim: int, seed: int = 0) -> torch.Tensor:
    """z (len(indices), z_dim), standard normal, where row i depends only on (seed, indices[i])."""
    rows = [torch.randn(z_dim, generator=rng(seed, int(i))) for i in indices]
    return torch.stack(rows) if rows else torch.zeros(0, z_dim)


def shard(n: int) -> range:
    """This rank's sample indices (all of them without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return range(torch.distributed.get_rank(), n, torch.distributed.get_world_size())
    return range(n)


def is_rank_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def index_batches(
    n: int, batch_size: int, desc: str = "", progress: bool = False, sharded: bool = True
) -> Iterator[torch.Tensor]:
    """Sample indices (B,) in batches: this rank's share of n (`sharded`), or all of them."""
    idx = torch.tensor(list(shard(n) if sharded else range(n)), dtype=torch.long)
    chunks = list(idx.split(batch_size))
    yield from tqdm(chunks, desc=desc, disable=not (progress and is_rank_zero()), leave=False)


def latent_batches(
    n: int,
    z_dim: int,
    seed: int,
    batch_size: int,
    device: torch.device | str | None = None,
    desc: str = "",
    progress: bool = False,
    sharded: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(indices (B,), z (B, z_dim)) for this rank's share of n seeded samples (all of them if not `sharded`)."""
    for idx in index_batches(n, batch_size, desc, progress, sharded):
        yield idx, latents(idx, z_dim, seed).to(device)


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
            raise InvalidValue("n_train, n_val, n_test and batch_size must be positive")
        if len({train_seed, val_seed, test_seed}) < 3:
            raise InvalidValue("train_seed, val_seed and test_seed must differ (held-out z must be held out)")
        self.save_hyperparameters()
        self.z_dim = z_dim

    def setup(self, stage: str) -> None:
        if self.z_dim is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or getattr(module, "z_dim", None) is None:
                raise InvalidValue("LatentDataModule needs z_dim, or a model with a `z_dim` attribute")
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


_HOOKS = {  # stage: (epoch start, step, epoch end, loaders)
    "validate": ("on_validation_epoch_start", "validation_step", "on_validation_epoch_end", "val_dataloader"),
    "test": ("on_test_epoch_start", "test_step", "on_test_epoch_end", "test_dataloader"),
}


def run_in_process(
    module: LightningModule, data: LatentDataModule, stage: str, device: torch.device, desc: str = "", progress=False
) -> None:
    """The hooks that a Trainer's `validate` or `test` calls, in this process and without one: over this rank's
    share of the samples (the loaders shard them under torch.distributed), with z on `device`; several loaders
    are run one after the other, as a Trainer does (`dataloader_idx` given when there are several)."""
    start, step, end, loader = _HOOKS[stage]
    data.setup(stage)
    getattr(module, start)()
    loaders = getattr(data, loader)()
    several = isinstance(loaders, (list, tuple))
    for j, batches in enumerate(loaders if several else [loaders]):
        shown = tqdm(batches, desc=desc, disable=not (progress and is_rank_zero()), leave=False)
        for i, (idx, z) in enumerate(shown):
            getattr(module, step)((idx, z.to(device)), i, *([j] if several else []))
    getattr(module, end)()


def _device(module: torch.nn.Module) -> torch.device:
    return next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))


def run_stages(
    module: LightningModule,
    data: LatentDataModule,
    stages: list[tuple[str, str]],
    nets: tuple[torch.nn.Module, ...],
    device: torch.device,
    trainer=None,
    progress: bool = False,
    verb: str = "ran",
):
    """Run `stages` ((stage, description) pairs, `validate` or `test`, in order) through `trainer`, or without one
    in this process on `device` with no gradients (`run_in_process`). `nets` are back on their own devices
    afterwards (a Trainer leaves its module on the CPU). Returns `module.result`; a strategy that ran the module's
    copies in processes it spawned, whose results never come back, is a user error."""
    devices = [(net, _device(net)) for net in nets]
    try:
        for stage, desc in stages:
            if trainer is not None:
                getattr(trainer, stage)(module, datamodule=data, verbose=False)
            else:
                with torch.no_grad():
                    run_in_process(module, data, stage, device, desc, progress)
    finally:
        for net, dev in devices:
            net.to(dev)
    if module.result is None:
        raise InvalidValue(
            f"the Trainer's strategy {type(trainer.strategy).__name__} {verb} in processes it spawned, whose results "
            "do not come back: use a strategy that runs in this process (ddp, or processes started by torchrun or "
            "SLURM)"
        )
    return module.result


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

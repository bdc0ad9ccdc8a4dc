"""Seeded latents: a sample depends only on (seed, index), streams are independent, and the published seeds stay."""

from __future__ import annotations

import pytest
import torch

from lightning_gd.latents import SAMPLE_STRIDE, STREAMS, LatentDataModule, latent_batches, latents, rng


def test_a_sample_depends_only_on_seed_and_index():
    z = latents(range(10), 5, seed=3)
    assert torch.equal(latents([7, 2], 5, seed=3), z[[7, 2]])
    assert torch.equal(torch.cat([idx_z[1] for idx_z in latent_batches(10, 5, 3, 4)]), z)
    assert not torch.equal(latents([0], 5, seed=4), z[:1])
    assert latents([], 5).shape == (0, 5)


def test_published_seed_arithmetic_is_kept():
    """Every number in the README depends on these: z_i of seed s is randn seeded by s·1,000,003 + i."""
    assert SAMPLE_STRIDE == 1_000_003
    expected = torch.randn(4, generator=torch.Generator().manual_seed(2 * 1_000_003 + 9))
    assert torch.equal(latents([9], 4, seed=2)[0], expected)
    assert rng(5, 3, "test_locations").initial_seed() == 5 * 1_000_003 + 3 + 17
    assert rng(5, stream="random_units").initial_seed() == 5 + 7
    assert rng(5, stream="ablation_draws").initial_seed() == 5 + 99
    assert len(set(STREAMS.values()) - {0}) == len(STREAMS) - 2  # z and training locations share offset 0


def test_unknown_stream_is_an_error():
    with pytest.raises(KeyError, match="unknown random stream 'zz'"):
        rng(0, 0, "zz")


def loader_z(dm: LatentDataModule, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(getattr(dm, f"{which}_dataloader")())
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_latent_data_module():
    one = LatentDataModule(n_train=7, n_val=3, n_test=4, batch_size=1, z_dim=5)
    five = LatentDataModule(n_train=7, n_val=3, n_test=4, batch_size=5, z_dim=5)
    for dm in (one, five):
        dm.setup("fit")
    zs = {}
    for which, seed, n in (("train", 100, 7), ("val", 101, 3), ("test", 102, 4)):
        i1, z1 = loader_z(one, which)
        i5, z5 = loader_z(five, which)
        assert i1.tolist() == i5.tolist() == list(range(n))
        assert torch.equal(z1, z5) and torch.equal(z1, latents(range(n), 5, seed))
        zs[which] = z1
    assert not torch.equal(zs["train"][:3], zs["val"])  # three separate seeds
    assert len(list(five.train_dataloader())) == 2
    with pytest.raises(ValueError, match="must differ"):
        LatentDataModule(train_seed=1, val_seed=1, test_seed=2)
    with pytest.raises(ValueError, match="must differ"):
        LatentDataModule(val_seed=5, test_seed=5)
    with pytest.raises(ValueError, match="positive"):
        LatentDataModule(batch_size=0)
    with pytest.raises(ValueError, match="needs z_dim"):
        LatentDataModule().setup("fit")

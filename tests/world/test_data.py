"""The world's data: a dataset item is the seeded render, `render_batch` matches the dataset, train / val / test
draw separate streams, an item does not depend on the batch size, and a resumed run draws a new training order."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_gd.world.data import SceneDataModule, SceneDataset, render_batch, scene_seed, to_tensor
from lightning_gd.world.render import SIZE, render_scene


def test_dataset_item_is_the_seeded_render():
    ds = SceneDataset(10, seed=3)
    x, y = ds[4]
    img, lab = render_scene(scene_seed(3, 4))
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    assert y.shape == (SIZE, SIZE) and y.dtype == torch.long
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.5 and x.max() > 0.5  # uses the range, not a sliver of it
    np.testing.assert_array_equal(((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy(), img)
    np.testing.assert_array_equal(y.numpy(), lab)
    torch.testing.assert_close(to_tensor(img), x, rtol=0, atol=0)
    assert len(ds) == 10
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(IndexError):
        ds[-1]
    with pytest.raises(ValueError, match="positive"):
        SceneDataset(0)


def test_render_batch_matches_the_dataset():
    images, labels = render_batch(3, seed=3, start=2)
    assert images.shape == (3, 3, SIZE, SIZE) and labels.shape == (3, SIZE, SIZE)
    ds = SceneDataset(5, seed=3)
    for k in range(3):
        torch.testing.assert_close(images[k], ds[2 + k][0], rtol=0, atol=0)
        assert torch.equal(labels[k], ds[2 + k][1])


def test_train_val_test_streams_differ():
    dm = SceneDataModule(batch_size=2, train_size=4, val_size=4, seed=3)
    firsts = [dm.train_set[0][0], dm.val_set[0][0], dm.test_set[0][0]]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(firsts[i], firsts[j])
    other = SceneDataModule(batch_size=2, train_size=4, val_size=4, seed=4)
    assert not torch.equal(dm.val_set[0][0], other.val_set[0][0])
    assert torch.equal(dm.val_set[1][0], SceneDataModule(batch_size=5, val_size=4, seed=3).val_set[1][0])


def test_items_do_not_depend_on_the_batch_size():
    def everything(loader) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys)

    small = SceneDataModule(batch_size=2, train_size=6, val_size=10, seed=5)
    large = SceneDataModule(batch_size=5, train_size=6, val_size=10, seed=5)
    for name in ("val_dataloader", "test_dataloader"):
        x2, y2 = everything(getattr(small, name)())
        x5, y5 = everything(getattr(large, name)())
        assert x2.shape == (10, 3, SIZE, SIZE) and y2.dtype == torch.long
        assert torch.equal(x2, x5) and torch.equal(y2, y5)
    # the shuffled training loader serves the same scenes, in some order
    x_train, _ = everything(small.train_dataloader())
    expected = torch.stack([small.train_set[i][0] for i in range(6)])
    assert x_train.shape == expected.shape
    matches = (x_train[:, None] == expected[None]).flatten(2).all(-1)  # (loaded, expected)
    assert matches.sum(1).eq(1).all() and matches.sum(0).eq(1).all()


def test_the_training_order_is_seeded_by_the_step_a_run_starts_at():
    """A run that starts (or resumes) at the same global step draws the same order of training scenes; a resumed
    run draws another one instead of repeating the scenes its first start began with. Each is a permutation."""
    dm = SceneDataModule(batch_size=4, train_size=64, val_size=4)

    def order(step: int | None) -> list[int]:
        dm.trainer = None if step is None else SimpleNamespace(global_step=step)
        return list(iter(dm.train_dataloader().sampler))

    first, again, resumed = order(0), order(0), order(1000)
    assert first == again == order(None)
    assert resumed != first
    assert sorted(first) == sorted(resumed) == list(range(64))

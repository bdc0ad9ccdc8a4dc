"""The world's FID pieces: its feature net as a project extractor ("world FID") gives what torch-fidelity's own
instance gives, and n world renders are real images whose statistics are cached under the sample."""

from __future__ import annotations

import pytest
import torch

import lightning_gd.world.data as world_data
import lightning_gd.world.fid as world_fid
from lightning_gd import zoo
from lightning_gd.models.images import to_uint8
from lightning_gd.realism import fid as lfid
from lightning_gd.realism.fid import RealStatistics, extract_features, fid_to_real, real_statistics
from lightning_gd.world.features import register_world_feature_extractor
from lightning_gd.world.fid import world_extractor
from tests.helpers import tiny_extractor


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def test_world_extractor_fid_equals_torch_fidelity():
    ex = world_extractor()
    assert ex.identity.startswith("lightning-gd-world-v1-") and len(ex.identity.rsplit("-", 1)[1]) == 12
    real = to_uint8(world_data.render_batch(40, seed=5)[0])
    other = to_uint8(world_data.render_batch(40, seed=6)[0])
    fake = (other.int() * 3 // 4 + 40).to(torch.uint8)  # darker and washed out: clearly not a render
    f_real = extract_features(ex, real, batch_size=16)
    assert f_real.shape == (40, 256) and f_real.dtype == torch.float64
    stats = RealStatistics.from_features(f_real)
    for images in (other, fake):
        ours = fid_to_real(extract_features(ex, images), stats)
        theirs = lfid.fid(images, real, register_world_feature_extractor())  # torch-fidelity's own instance
        assert rel(ours, theirs) < 1e-3, (ours, theirs)
    assert fid_to_real(extract_features(ex, fake), stats) > fid_to_real(extract_features(ex, other), stats)


def world_real_statistics(extractor, n, seed, cache_dir, batch_size=200, progress=False):
    """Real statistics of n world renders, the way the commands and callbacks ask for them."""
    return real_statistics(extractor, zoo.real_images("world", n=n, seed=seed), cache_dir, batch_size, progress)


def test_world_real_statistics_cache(tmp_path, monkeypatch):
    ex = tiny_extractor()
    first = world_real_statistics(ex, n=12, seed=3, cache_dir=tmp_path, batch_size=5, progress=False)
    images, _ = world_data.render_batch(12, seed=3)
    direct = RealStatistics.from_features(ex(to_uint8(images)))
    assert first.n == 12 and first.identity == ex.identity
    torch.testing.assert_close(first.mu, direct.mu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(first.sigma, direct.sigma, rtol=1e-10, atol=1e-10)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and ex.identity in files[0].name and files[0].suffix == ".safetensors"

    def no_render(*args, **kwargs):
        raise AssertionError("the cached statistics should have been loaded")

    monkeypatch.setattr(world_fid, "render_batch", no_render)
    again = world_real_statistics(ex, n=12, seed=3, cache_dir=tmp_path, batch_size=5, progress=False)
    for name in ("mu", "sigma", "sqrt_sigma"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name
    assert again.n == 12 and again.identity == ex.identity
    # another sample is another cache file: it must be computed, not read from the first one
    with pytest.raises(AssertionError, match="cached"):
        world_real_statistics(ex, n=13, seed=3, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="cached"):
        world_real_statistics(ex, n=12, seed=4, cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="cached"):
        world_real_statistics(ex, n=12, seed=3, cache_dir=None, progress=False)

"""FID through torch-fidelity (paper §4.2, §S-6.1): the stored-features path of `lightning_gd.realism.fid` against
torch-fidelity's own `calculate_metrics` and torchmetrics, with a tiny registered feature extractor (see
`tests.helpers.TinyFeatureExtractor`), real statistics of a folder of images (cached), and a random-weight
InceptionV3 that is never downloaded. The world's extractor and renders are tested in tests/world/test_fid.py."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_gd import zoo
from lightning_gd.realism import fid as lfid
from lightning_gd.realism.fid import (
    INCEPTION,
    RealStatistics,
    extract_features,
    feature_sets_to_fid,
    features_to_statistics,
    fid_to_real,
    real_statistics,
    statistics_to_fid,
)
from tests.helpers import TINY_DIM, TINY_EXTRACTOR, register_tiny_extractor, tiny_extractor

pytestmark = pytest.mark.usefixtures("one_thread")


def image_set(n: int, seed: int, low: int, high: int, size: int = 32) -> torch.Tensor:
    """uint8 (n, 3, size, size): random 4×4 colour blocks in [low, high) plus pixel noise — structure the 4×4
    pooled features of the tiny extractor see."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(low, high, (n, 3, 4, 4), generator=gen).float()
    up = blocks.repeat_interleave(size // 4, 2).repeat_interleave(size // 4, 3)
    noise = torch.randint(-20, 21, up.shape, generator=gen).float()
    return (up + noise).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def sets():
    return image_set(64, 1, 0, 256), image_set(80, 2, 60, 230)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# ----------------------------------------------------------------------------------------------- tiny extractor


class FeatureModule(nn.Module):
    """The tiny extractor as torchmetrics wants a custom feature net: uint8 images → (B, D)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_extractor().module
        self.num_features = TINY_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


def test_registered_tiny_extractor():
    assert register_tiny_extractor() == register_tiny_extractor() == TINY_EXTRACTOR  # idempotent
    ex = tiny_extractor()
    x = image_set(5, 0, 0, 256)
    f = ex(x)
    assert f.shape == (5, TINY_DIM) and f.dtype == torch.float64
    assert torch.equal(tiny_extractor()(x), f)  # deterministic weights: torch-fidelity's own instance is the same
    assert f.std(0).min() > 1  # the features vary from image to image


def test_stored_features_fid_equals_torch_fidelity_and_torchmetrics(sets):
    fake, real = sets
    ex = tiny_extractor()
    ours = fid_to_real(
        extract_features(ex, fake, batch_size=25), RealStatistics.from_features(extract_features(ex, real))
    )
    theirs = lfid.fid(fake, real, feature_extractor=TINY_EXTRACTOR, batch_size=30)  # torch_fidelity.calculate_metrics
    swapped = lfid.fid(real, fake, feature_extractor=TINY_EXTRACTOR)
    metric = FrechetInceptionDistance(feature=FeatureModule())
    metric.update(real, real=True)
    for part in fake.split(20):
        metric.update(part, real=False)
    tm = float(metric.compute())
    print(f"\nFID: stored features {ours:.6f}, torch-fidelity {theirs:.6f}, torchmetrics {tm:.6f}")
    assert ours > 10  # the two sets really differ
    assert rel(ours, theirs) < 1e-3 and rel(ours, swapped) < 1e-3 and rel(ours, tm) < 1e-3
    # the same set against itself is 0 (up to the square root's rounding)
    same = extract_features(ex, real)
    assert abs(fid_to_real(same, RealStatistics.from_features(same))) < 1e-6 * ours


def test_statistics_match_numpy_and_torch_fidelity(sets):
    fake, real = sets
    ex = tiny_extractor()
    f1, f2 = extract_features(ex, fake), extract_features(ex, real)
    mu, sigma = features_to_statistics(f1)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), f1.numpy().mean(0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f1.numpy(), rowvar=False), rtol=1e-9, atol=1e-9)
    tf1, tf2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    np.testing.assert_allclose(sigma.numpy(), tf1["sigma"], rtol=1e-9, atol=1e-9)
    real_stats = RealStatistics.from_features(f2, "x")
    assert real_stats.n == 80 and real_stats.identity == "x"
    torch.testing.assert_close(real_stats.sqrt_sigma @ real_stats.sqrt_sigma, real_stats.sigma, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(real_stats.sqrt_sigma, real_stats.sqrt_sigma.T)
    ours = float(statistics_to_fid(mu, sigma, real_stats))
    theirs = fid_statistics_to_metric(tf1, tf2, verbose=False)["frechet_inception_distance"]
    assert rel(ours, theirs) < 1e-6
    # batched: (2, D) and (2, D, D) give one FID each
    mu2, sigma2 = features_to_statistics(f2[:30])
    both = statistics_to_fid(torch.stack([mu, mu2]), torch.stack([sigma, sigma2]), real_stats)
    assert both.shape == (2,) and rel(float(both[0]), ours) < 1e-12
    assert rel(float(both[1]), fid_to_real(f2[:30], real_stats)) < 1e-12
    with pytest.raises(ValueError, match="at least 2"):
        features_to_statistics(f1[:1])


@pytest.mark.parametrize("k", [7, 16, 40])  # K ≤ D: the Gram route; K > D: the covariance route
def test_feature_sets_to_fid_equals_fid_to_real_per_set(sets, k):
    ex = tiny_extractor()
    fake, real = sets
    real_stats = RealStatistics.from_features(extract_features(ex, real))
    feats = extract_features(ex, fake)
    gen = torch.Generator().manual_seed(k)
    idx = torch.stack([torch.randperm(len(feats), generator=gen)[:k] for _ in range(5)])  # (5, K)
    batched = feature_sets_to_fid(feats[idx], real_stats)
    assert batched.shape == (5,) and batched.dtype == torch.float64
    for c in range(5):
        one = fid_to_real(feats[idx[c]], real_stats)
        assert rel(float(batched[c]), one) < 1e-6, (k, c, float(batched[c]), one)
    # float32 features (as `scores_and_features` stores them) are taken as float64
    assert torch.allclose(feature_sets_to_fid(feats[idx].float(), real_stats), batched, rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        feature_sets_to_fid(feats[idx[:, :1]], real_stats)


def write_pngs(folder, images: torch.Tensor, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"img{start + i:03d}.png")


def folder_real_statistics(extractor, folder, cache_dir, batch_size=200, progress=False):
    """Real statistics of a folder of images, the way the commands and callbacks ask for them."""
    return real_statistics(extractor, zoo.real_images(f"folder:{folder}"), cache_dir, batch_size, progress)


def test_folder_real_statistics(tmp_path, monkeypatch):
    ex = tiny_extractor()
    images = image_set(7, 9, 0, 256, size=16)
    folder = tmp_path / "real"
    write_pngs(folder / "a", images[:4])
    write_pngs(folder / "b", images[4:], start=4)  # sub-folders count too
    (folder / "notes.txt").write_text("not an image")
    cache = tmp_path / "cache"
    stats = folder_real_statistics(ex, folder, cache_dir=cache, batch_size=3, progress=False)
    direct = RealStatistics.from_features(ex(images))
    assert stats.n == 7 and stats.identity == ex.identity
    torch.testing.assert_close(stats.mu, direct.mu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(stats.sigma, direct.sigma, rtol=1e-10, atol=1e-10)
    files = list(cache.iterdir())
    assert len(files) == 1 and ex.identity in files[0].name

    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    again = folder_real_statistics(ex, folder, cache_dir=cache, progress=False)
    assert opened == [] and torch.equal(again.sigma, stats.sigma) and again.n == 7  # from the cache
    write_pngs(folder / "a", image_set(1, 10, 0, 256, size=16), start=7)  # a new file: recomputed
    more = folder_real_statistics(ex, folder, cache_dir=cache, progress=False)
    assert more.n == 8 and len(opened) == 8 and len(list(cache.iterdir())) == 2

    few = tmp_path / "few"
    write_pngs(few, images[:1])
    with pytest.raises(ValueError, match="holds 1 PNG/JPEG"):
        folder_real_statistics(ex, few, cache_dir=None, progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="holds 0 PNG/JPEG"):
        folder_real_statistics(ex, tmp_path / "nothing", cache_dir=None, progress=False)
    with pytest.raises(FileNotFoundError, match="no folder of real images at .*nowhere"):
        folder_real_statistics(ex, tmp_path / "nowhere", cache_dir=None, progress=False)
    mixed = tmp_path / "mixed"
    write_pngs(mixed, images[:2])
    write_pngs(mixed, image_set(1, 3, 0, 256, size=32), start=2)
    with pytest.raises(ValueError, match="differ in size"):
        folder_real_statistics(ex, mixed, cache_dir=None, progress=False)


# ----------------------------------------------------------------------------------------------- Inception


class NotATensor:
    """Something a weights-only load must refuse to unpickle."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.fixture(scope="module")
def inception(module_tmp):
    """A random-weight InceptionV3 in torch-fidelity's layout (built without any download) and its state dict
    saved as a torch file and as safetensors."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    from safetensors.torch import save_file

    def no_download(*args, **kwargs):
        return {}

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(tfi, "load_state_dict_from_url", no_download)
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            ref = tfi.FeatureExtractorInceptionV3(INCEPTION, ["2048"])
    finally:
        mp.undo()
    ref.eval()
    folder = module_tmp("inception")
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    torch.save(state, folder / "inception.pt")
    save_file(state, str(folder / "inception.safetensors"))
    return ref, folder / "inception.pt", folder / "inception.safetensors"


def test_inception_extractor_from_local_weights(inception):
    ref, pt, st = inception
    images = image_set(2, 4, 0, 256, size=64)
    ex = lfid.inception_extractor(pt)
    assert ex.feature == "2048" and ex.identity.startswith(f"{INCEPTION}-2048-")
    assert ex.identity == zoo.feature_extractor("inception", weights_path=pt).identity
    assert ex.identity == zoo.feature_extractor(f"inception:{pt}").identity
    f = ex(images)
    assert f.shape == (2, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all()
    with torch.no_grad():
        expected = ref(images)[0].double()
    assert expected.abs().max() > 0
    torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-7)  # the very weights we wrote
    # the safetensors file holds the same tensors; its identity differs with its bytes
    a, b = lfid.load_inception_state_dict(pt), lfid.load_inception_state_dict(st)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a.keys() == ref.state_dict().keys()
    wrapped = pt.with_name("wrapped.pt")  # a checkpoint-style {"state_dict": ...} file is read too
    torch.save({"state_dict": a}, wrapped)
    c = lfid.load_inception_state_dict(wrapped)
    wrapped.unlink()
    assert c.keys() == a.keys() and all(torch.equal(a[k], c[k]) for k in a)
    ex_st = lfid.inception_extractor(st)
    assert ex_st.identity != ex.identity and ex_st.identity.startswith(f"{INCEPTION}-2048-")
    assert torch.equal(ex_st(images), f)


def test_inception_bad_weights(tmp_path, inception):
    missing = tmp_path / "nowhere" / "inception.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        lfid.inception_extractor(missing)
    linear = tmp_path / "linear.pt"
    torch.save(nn.Linear(3, 2).state_dict(), linear)
    with pytest.raises(ValueError, match="InceptionV3") as err:
        lfid.inception_extractor(linear)
    assert str(linear) in str(err.value)
    linear_st = tmp_path / "linear.safetensors"
    from safetensors.torch import save_file

    save_file(nn.Linear(3, 2).state_dict(), str(linear_st))
    with pytest.raises(ValueError, match="InceptionV3"):
        lfid.inception_extractor(linear_st)
    pickled = tmp_path / "pickled.pt"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "evil": NotATensor()}, pickled)
    with pytest.raises(ValueError, match="not readable as weights .*weights_only=True") as err:
        lfid.inception_extractor(pickled)
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)  # refused to unpickle, never ran it
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not safetensors at all")
    with pytest.raises(ValueError, match="not readable as weights .*weights_only=True"):
        lfid.inception_extractor(garbage)
    # the right keys but a wrong first convolution
    wrong = tmp_path / "wrong.pt"
    torch.save(
        {"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 1, 3, 3), "Mixed_7c.branch_pool.conv.weight": torch.zeros(1)}
        | {"fc.weight": torch.zeros(1)},
        wrong,
    )
    with pytest.raises(ValueError, match="Conv2d_1a_3x3"):
        lfid.inception_extractor(wrong)
    # the checked keys right, the rest missing: torch-fidelity's load fails, reported as a ValueError
    _, pt, _ = inception
    partial_state = {k: v for k, v in torch.load(pt, weights_only=True).items() if not k.startswith("Mixed_6")}
    partial = tmp_path / "partial.pt"
    torch.save(partial_state, partial)
    with pytest.raises(ValueError, match="does not fit torch-fidelity's InceptionV3"):
        lfid.inception_extractor(partial)


def test_feature_extractor_choices():
    with pytest.raises(ValueError, match="needs local weights: --feature_extractor_weights_path PATH"):
        zoo.feature_extractor("inception")
    with pytest.raises(ValueError, match="unknown feature_extractor 'foo'; the zoo has inception: .*world: "):
        zoo.feature_extractor("foo")
    from lightning_gd.world.fid import world_extractor

    assert zoo.feature_extractor().identity == zoo.feature_extractor("world").identity == world_extractor().identity


@pytest.mark.parametrize("splits", [[40], [1, 39], [7, 7, 7, 19]])
def test_feature_moments_equal_the_statistics_of_all_features_for_any_batch_split(splits):
    from lightning_gd.realism.fid import FeatureMoments

    features = torch.randn(40, 5, dtype=torch.float64) * 3 + 100  # a large mean: the centre keeps the covariance
    mu, sigma = features_to_statistics(features)
    for centre in (None, features[0]):
        moments = FeatureMoments(5, centre)
        for part in features.split(splits):
            moments.update(part)
        got_mu, got_sigma = moments.compute()
        torch.testing.assert_close(got_mu, mu, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(got_sigma, sigma, rtol=1e-9, atol=1e-9)

"""FID through torch-fidelity, offline, and the pieces per-unit FID needs (paper §4.2, §S-6.1).

Feature extractors are torch-fidelity's, named through the zoo (`zoo.feature_extractor`): the embedded world's
("world FID", never comparable with Inception FID) by default, or InceptionV3 from a local weights file the user
names (checked and loaded without pickle). Real images come from an `ImageSource` (`zoo.real_images`: the world's
renders, or a folder). The steps are named for what they do, as in torch-fidelity:

    images ─ extract_features ─ features_to_statistics ─ statistics_to_fid ◄─ RealStatistics (cached)

`RealStatistics` keeps the square root of the real covariance, so the FID of any subset of stored features
costs one symmetric eigen-decomposition: tr √(Σ₁Σ₂) = tr √(Σ₂^½ Σ₁ Σ₂^½) (`fid_to_real`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_fidelity
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import Metric
from tqdm.auto import tqdm

from lightning_gd.errors import InvalidValue

STATISTICS_VERSION = 1  # bump when the way real statistics are computed changes: old cache files are ignored
INCEPTION = "inception-v3-compat"
INCEPTION_FEATURE = "2048"


class UInt8Images(Dataset):
    """A torch-fidelity input: indexable uint8 (3, H, W) images."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise InvalidValue(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def fid(images1: torch.Tensor, images2: torch.Tensor, feature_extractor: str, batch_size: int = 200, **kwargs) -> float:
    """FID between two uint8 image sets (N, 3, H, W), computed by `torch_fidelity.calculate_metrics` with the
    feature extractor registered with torch-fidelity under the name `feature_extractor`."""
    metrics = fidelity_metrics(images1, images2, feature_extractor, batch_size, **kwargs)
    return float(metrics["frechet_inception_distance"])


def fidelity_metrics(
    images1: torch.Tensor, images2: torch.Tensor, feature_extractor: str, batch_size: int = 200, **kwargs
) -> dict[str, float]:
    """torch-fidelity's metrics dict for two uint8 image sets: FID always, and whatever else `kwargs` turn on
    (`prc=True`: precision and recall, torch-fidelity taking images1 as the generated set)."""
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
    return {k: float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------------------------- extractors


@dataclass
class Extractor:
    """A torch-fidelity feature extractor module, the feature it yields for FID, and a cache identity."""

    module: nn.Module
    feature: str
    identity: str  # name + weights hash: real statistics are cached under it

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → features (B, D) float64, on the extractor's device."""
        device = next(iter(self.module.parameters()), torch.empty(0)).device
        out = self.module(images.to(device))
        out = out[self.module.features_list.index(self.feature)] if isinstance(out, (tuple, list)) else out
        return out.double()

    def to(self, device) -> Extractor:
        self.module.to(device)
        return self


def load_inception_state_dict(weights_path: str | Path) -> dict[str, torch.Tensor]:
    """An InceptionV3 state dict in torch-fidelity's layout, read without unpickling code (safetensors, or a
    torch file with weights_only=True), with a clear error for a missing or wrong file."""
    from lightning_gd.models.weights import read_file, state_dict_of

    path = Path(weights_path)
    state = state_dict_of(read_file(path, "Inception weights"), source=path)
    expected = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Mixed_7c.branch_pool.conv.weight": None, "fc.weight": None}
    if not isinstance(state, dict) or not all(k in state for k in expected):
        keys = ", ".join(list(state)[:5]) if isinstance(state, dict) else type(state).__name__
        raise InvalidValue(
            f"{path} is not an InceptionV3 state dict in torch-fidelity's layout (expected keys such as "
            f"{', '.join(expected)}; found {keys} …)"
        )
    if tuple(state["Conv2d_1a_3x3.conv.weight"].shape) != expected["Conv2d_1a_3x3.conv.weight"]:
        raise InvalidValue(
            f"{path}: Conv2d_1a_3x3.conv.weight has shape {tuple(state['Conv2d_1a_3x3.conv.weight'].shape)}"
        )
    return state


def inception_extractor(weights_path: str | Path, feature: str = INCEPTION_FEATURE) -> Extractor:
    """torch-fidelity's InceptionV3 with weights from a local file (never downloaded)."""
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = load_inception_state_dict(weights_path)
    # torch-fidelity unpickles the file it is given; give it a file we wrote from plain tensors ourselves
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "inception.pt"
        torch.save({k: v.contiguous() for k, v in state.items()}, clean)
        try:
            module = FeatureExtractorInceptionV3(INCEPTION, [feature], feature_extractor_weights_path=str(clean))
        except RuntimeError as err:
            raise InvalidValue(f"{weights_path} does not fit torch-fidelity's InceptionV3: {err}") from err
    return Extractor(module, feature, f"{INCEPTION}-{feature}-{file_hash(Path(weights_path))}")


def file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- statistics


def extract_features(
    extractor: Extractor, images: torch.Tensor, batch_size: int = 200, progress: bool = False
) -> torch.Tensor:
    """uint8 images (N, 3, H, W) → features (N, D) float64."""
    chunks = images.split(batch_size)
    return torch.cat([extractor(b) for b in tqdm(chunks, desc="features", disable=not progress, leave=False)])


def features_to_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) in float64, as torch-fidelity's `fid_features_to_statistics`."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise InvalidValue(f"FID statistics need at least 2 feature vectors (N, D), got {tuple(features.shape)}")
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(sigma)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def moments_to_statistics(
    total: torch.Tensor, outer: torch.Tensor, count: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) from the sum of feature vectors (D,), the sum of their outer
    products (D, D) and their count: `features_to_statistics` of a set seen in pieces (batches, ranks)."""
    count = float(count)
    if count < 2:
        raise InvalidValue(f"FID statistics need at least 2 feature vectors, got {count:g}")
    mu = total.double() / count
    return mu, (outer.double() - count * torch.outer(mu, mu)) / (count - 1)


class FeatureMoments(Metric):
    """The FID statistics of a set of feature vectors streamed by batches: the sum of their differences from a
    fixed `centre` (D,), the sum of those differences' outer products and their count in float64, summed across DDP
    ranks (`moments_to_statistics` reads them). A centre near the features' mean (the real images' mean, the same
    on every rank) keeps the covariance from being the small difference of two large sums."""

    full_state_update = False

    def __init__(self, dim: int, centre: torch.Tensor | None = None) -> None:
        super().__init__()
        centre = torch.zeros(dim, dtype=torch.float64) if centre is None else centre.double()
        self.register_buffer("centre", centre, persistent=False)
        self.add_state("total", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: torch.Tensor) -> None:
        f = features.to(self.total) - self.centre  # (B, D)
        self.total += f.sum(0)
        self.outer += f.T @ f
        self.count += f.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        mu, sigma = moments_to_statistics(self.total, self.outer, self.count)
        return mu + self.centre, sigma


@dataclass
class RealStatistics:
    """Real-image FID statistics with the square root of the covariance precomputed."""

    mu: torch.Tensor  # (D,) float64
    sigma: torch.Tensor  # (D, D)
    sqrt_sigma: torch.Tensor  # (D, D), symmetric, sqrt_sigma @ sqrt_sigma = sigma
    n: int
    identity: str = ""

    @classmethod
    def from_features(cls, features: torch.Tensor, identity: str = "") -> RealStatistics:
        mu, sigma = features_to_statistics(features.cpu())  # kept on the CPU, moved where they are used
        return cls(mu, sigma, _sqrt_psd(sigma), int(features.shape[0]), identity)

    def to(self, device) -> RealStatistics:
        if self.mu.device == torch.device(device):
            return self
        return RealStatistics(
            self.mu.to(device), self.sigma.to(device), self.sqrt_sigma.to(device), self.n, self.identity
        )


def statistics_to_fid(mu1: torch.Tensor, sigma1: torch.Tensor, real: RealStatistics) -> torch.Tensor:
    """FID of (mu1, sigma1) against `real`; batched: mu1 (..., D), sigma1 (..., D, D) → (...)."""
    real = real.to(mu1.device)
    a = real.sqrt_sigma
    inner = a @ sigma1 @ a  # (..., D, D) symmetric PSD, same spectrum as sigma1 @ real.sigma
    tr_covmean = torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum(-1)
    diff = mu1 - real.mu
    return (diff * diff).sum(-1) + sigma1.diagonal(dim1=-2, dim2=-1).sum(-1) + real.sigma.trace() - 2 * tr_covmean


def feature_sets_to_fid(features: torch.Tensor, real: RealStatistics) -> torch.Tensor:
    """FID of each of c sets of K stored feature vectors (c, K, D) against `real` → (c,).

    With K ≤ D the set's covariance has rank < K, and the non-zero eigenvalues of Σ_r^½ Σ_u Σ_r^½ are those
    of the K×K matrix C Σ_r Cᵀ / (K − 1) (C the centred features), which is cheaper to decompose."""
    f = features.to(torch.float64)
    real = real.to(f.device)
    c, k, d = f.shape
    if k < 2:
        raise InvalidValue(f"FID statistics need at least 2 feature vectors per set, got {k}")
    mu = f.mean(1)  # (c, D)
    centred = f - mu[:, None]  # (c, K, D)
    if k > d:
        sigma = centred.transpose(1, 2) @ centred / (k - 1)  # (c, D, D)
        return statistics_to_fid(mu, sigma, real)
    gram = centred @ real.sigma @ centred.transpose(1, 2) / (k - 1)  # (c, K, K)
    tr_covmean = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum(-1)
    tr_sigma = (centred * centred).sum((1, 2)) / (k - 1)
    diff = mu - real.mu
    return (diff * diff).sum(-1) + tr_sigma + real.sigma.trace() - 2 * tr_covmean


def fid_to_real(features: torch.Tensor, real: RealStatistics) -> float:
    """FID of a set of stored feature vectors (N, D) against the real statistics."""
    mu, sigma = features_to_statistics(features)
    return float(statistics_to_fid(mu, sigma, real))


@dataclass
class ImageSource:
    """Real images for FID: `batches(batch_size)` yields uint8 (B, 3, H, W); `identity` names them for the cache
    (it changes when the images do)."""

    batches: Callable[[int], Iterator[torch.Tensor]]
    identity: str


def folder_images(folder: str | Path) -> ImageSource:
    """The PNG/JPEG files under a folder (all one size), identified by their names, sizes and times."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder of real images at {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(files) < 2:
        raise InvalidValue(f"{folder} holds {len(files)} PNG/JPEG images; FID needs real images (thousands, ideally)")

    def batches(batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(files), batch_size):
            batch = [np.asarray(Image.open(p).convert("RGB")) for p in files[start : start + batch_size]]
            if len({b.shape for b in batch}) > 1:
                raise InvalidValue(f"images in {folder} differ in size; resize them to one size first")
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()

    listing = [(str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
    return ImageSource(batches, "files-" + hashlib.sha1(repr(listing).encode()).hexdigest()[:12])


def real_statistics(
    extractor: Extractor,
    source: ImageSource,
    cache_dir: str | Path | None = "out/cache",
    batch_size: int = 200,
    progress: bool = True,
) -> RealStatistics:
    """FID statistics of a source of real images, cached under the extractor, the source and
    `STATISTICS_VERSION`."""
    from lightning_gd.cache import Cache

    def compute() -> dict[str, torch.Tensor]:
        feats = [
            extractor(images)
            for images in tqdm(source.batches(batch_size), desc="real features", disable=not progress, leave=False)
        ]
        real = RealStatistics.from_features(torch.cat(feats))
        return {"mu": real.mu, "sigma": real.sigma, "sqrt_sigma": real.sqrt_sigma, "n": torch.tensor(real.n)}

    key = {"extractor": extractor.identity, "source": source.identity, "v": STATISTICS_VERSION}
    t = Cache(cache_dir).tensors("fid-real", key, compute, label=extractor.identity)
    return RealStatistics(t["mu"], t["sigma"], t["sqrt_sigma"], int(t["n"]), extractor.identity)

"""A tiny generator whose units are known by construction, and a colour segmenter that labels its scenes exactly.

`PlantedGenerator` draws, per sample, a 6×6-cell red "dome" at a z-chosen place of a 16×16 featuremap over a blue
sky (top half) and green grass (bottom half); its layer1 unit 0 *is* the dome mask, unit 1 is sparse noise
independent of the scene, unit 2 is dead. With `two_layers=True` a `layer2` (layer1 nearest-upsampled to 32×32,
the same three units) sits between layer1 and the renderer; the images do not change. A colour segmenter labels
exactly the dome mask upsampled (nearest) to 64×64, so unit 0 must come out as "dome" with IoU ≈ 1, the others
near chance or 0.

Both networks are importable classes with plain constructor arguments, so the command line can build them:
`--generator '{"class_path": "tests.helpers.PlantedGenerator", "init_args": {"two_layers": true}}'`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_gd.models.segmenters import ModuleSegmenter, Segmenter

FM, SCALE, BLOB = 16, 4, 6  # featuremap side, image / featuremap, dome side in featuremap cells
Z_DIM = 2 + FM * FM  # two for the dome's place, one per cell for the noise unit
CONCEPTS = ("sky", "dome", "grass")
CATEGORIES = ("scene", "object", "scene")
DOME_SHARE = BLOB * BLOB / (FM * FM)  # of every image's pixels, and of every sparse sample's


class Planted(nn.Module):
    """z (B, Z_DIM) → featuremap (B, 3, FM, FM): unit 0 the dome mask, unit 1 noise, unit 2 dead (or NaN)."""

    def __init__(self, nan: bool = False) -> None:
        super().__init__()
        self.nan = nan

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cells = torch.arange(FM, device=z.device)
        y0 = (torch.sigmoid(z[:, 0]) * (FM - BLOB + 1)).long().clamp(max=FM - BLOB)
        x0 = (torch.sigmoid(z[:, 1]) * (FM - BLOB + 1)).long().clamp(max=FM - BLOB)
        iy = (cells[None] >= y0[:, None]) & (cells[None] < y0[:, None] + BLOB)  # (B, FM)
        ix = (cells[None] >= x0[:, None]) & (cells[None] < x0[:, None] + BLOB)
        dome = (iy[:, :, None] & ix[:, None, :]).float()
        noise = F.relu(z[:, 2:].view(-1, FM, FM) - 1.0)  # ≈ 16 % of the cells positive
        dead = torch.full_like(dome, float("nan")) if self.nan else torch.zeros_like(dome)
        return torch.stack([dome, noise, dead], 1)


class Render(nn.Module):
    """featuremap → image: the dome (unit 0, nearest-upsampled by `scale`) red, over blue sky and green grass."""

    def __init__(self, scale: int = SCALE) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        dome = F.interpolate(r[:, :1], scale_factor=self.scale, mode="nearest")[:, 0] > 0.5  # (B, H, W)
        H = dome.shape[1]
        grass = (torch.arange(H, device=r.device) >= H // 2)[None, :, None].expand_as(dome)
        sky = ~dome & ~grass
        return torch.stack([dome, ~dome & grass, sky], 1).float() * 2 - 1  # RGB in {-1, 1}


class PlantedGenerator(nn.Module):
    def __init__(self, nan: bool = False, two_layers: bool = False) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.embed = nn.Identity()  # a 2-D output: not a featuremap
        self.layer1 = Planted(nan)
        if two_layers:
            self.layer2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.render = Render(SCALE // 2 if two_layers else SCALE)
        self.calls = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        r = self.layer1(self.embed(z))
        if hasattr(self, "layer2"):
            r = self.layer2(r)
        return self.render(r)


class ColourNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, [2, 0, 1]]  # sky = blue, dome = red, grass = green


def segmenter() -> ModuleSegmenter:
    return ModuleSegmenter(ColourNet(), CONCEPTS, dict(zip(CONCEPTS, CATEGORIES)))


class ColourSegmenter(Segmenter):
    """The same colour segmenter as a class of its own; `names` renames the three concepts (sky, dome, grass)."""

    def __init__(self, names: list[str] | None = None) -> None:
        super().__init__()
        names = tuple(names or CONCEPTS)
        if len(names) != len(CONCEPTS):
            raise ValueError(f"names: one per concept {CONCEPTS}, got {names}")
        self.concepts = names
        self.categories = dict(zip(names, CATEGORIES))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, [2, 0, 1]]


# ----------------------------------------------------------------------------------------------- causal search

CAUSAL_UNITS = 4  # units of CausalPlantedGenerator's layer1


class CausalPlanted(nn.Module):
    """z (B, Z_DIM) → featuremap (B, 4, FM, FM): units 0 and 1 the dome mask (the same z → dome place as
    `Planted`), unit 2 a decoy equal to them, unit 3 sparse noise. Only units 0 and 1 reach the image."""

    def __init__(self) -> None:
        super().__init__()
        self.planted = Planted()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        dome, noise, _ = self.planted(z).unbind(1)
        return torch.stack([dome, dome, dome, noise], 1)


class CausalRender(nn.Module):
    """featuremap (B, 4, FM, FM) → image: d = (r0 + r1) / 2 nearest-upsampled, red 2d − 1, and sky (blue, top half)
    or grass (green, bottom half) scaled by 1 − d. Smooth in r, so the colour segmenter's soft probability of the
    dome depends on units 0 and 1 only (decoy and noise are ignored); the hard label is dome where d > 1/2."""

    def __init__(self, scale: int = SCALE) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        d = F.interpolate((r[:, 0:1] + r[:, 1:2]) / 2, scale_factor=self.scale, mode="nearest")[:, 0]  # (B, H, W)
        H = d.shape[1]
        grass = (torch.arange(H, device=r.device) >= H // 2)[None, :, None].to(d)
        red = 2 * d - 1
        green = 2 * grass * (1 - d) - 1
        blue = 2 * (1 - grass) * (1 - d) - 1
        return torch.stack([red, green, blue], 1)


class CausalPlantedGenerator(nn.Module):
    """A generator with causal units 0, 1 and a decoy unit 2 at `layer1` (see `CausalPlanted`). It has no
    `forward_from` and is not an `nn.Sequential`, so `LayerSplit` replays it with the featuremap replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.layer1 = CausalPlanted()
        self.render = CausalRender()
        self.calls = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.render(self.layer1(z))


class CausalPlantedForwardFrom(CausalPlantedGenerator):
    """The same generator with its own `forward_from(layer, r)`."""

    def forward_from(self, layer: str, r: torch.Tensor) -> torch.Tensor:
        if layer != "layer1":
            raise KeyError(layer)
        return self.render(r)


class CausalPlantedSequential(nn.Sequential):
    """The same generator as an `nn.Sequential` (children `layer1`, `render`)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("layer1", CausalPlanted())
        self.add_module("render", CausalRender())
        self.z_dim = Z_DIM


def dome_cell(r: torch.Tensor, b: int, edge: bool) -> int:
    """A featuremap location of sample b inside its dome (unit 0 of r): the top-left cell, or one in the middle."""
    cells = (r[b, 0].flatten() > 0.5).nonzero()[:, 0]
    return int(cells[0] if edge else cells[len(cells) // 2])


class NoLakeSegmenter(ColourSegmenter):
    """The colour segmenter with a fourth concept, lake, that it knows and never predicts."""

    def __init__(self) -> None:
        super().__init__()
        self.concepts = (*CONCEPTS, "lake")
        self.categories = {**self.categories, "lake": "scene"}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        base = super().logits(x)
        return torch.cat([base, torch.full_like(base[:, :1], -10.0)], 1)


class NoUnits(nn.Module):
    """A layer whose featuremap has 0 channels."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.shape[0], 0, FM, FM)


class EmptyLayerGenerator(nn.Module):
    """`CausalPlantedGenerator` (as `inner`) with a 0-channel layer, `empty`, run before it."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.empty = NoUnits()
        self.inner = CausalPlantedGenerator()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.empty(z)
        return self.inner(z)


# ----------------------------------------------------------------------------------------------- FID

from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402

TINY_EXTRACTOR = "lightning-gd-test-tiny"  # a test-only torch-fidelity feature extractor
TINY_FEATURE = "tiny"
TINY_DIM = 16


class TinyFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor for tests: uint8 (B, 3, H, W) → a fixed random linear map (weights from
    `seed`) of the image average-pooled to 4×4 cells, (B, TINY_DIM) float64. torch-fidelity builds its own
    instance from the registry; the seed makes it the same network as ours."""

    def __init__(self, name: str, features_list, seed: int = 0, **kwargs) -> None:
        super().__init__(name, features_list)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(3 * 4 * 4, TINY_DIM, generator=gen, dtype=torch.float64) / 8)
        self.register_buffer("bias", torch.randn(TINY_DIM, generator=gen, dtype=torch.float64))

    @staticmethod
    def get_provided_features_list():
        return (TINY_FEATURE,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return TINY_FEATURE

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        pooled = F.adaptive_avg_pool2d(x.double(), 4).flatten(1)  # (B, 48) in [0, 255]
        return (pooled @ self.weight + self.bias,)


def register_tiny_extractor() -> str:
    """Register `TinyFeatureExtractor` with torch-fidelity (idempotent) and return its name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if TINY_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(TINY_EXTRACTOR, TinyFeatureExtractor)
    return TINY_EXTRACTOR


def tiny_extractor():
    """The registered tiny extractor as a `lightning_gd.realism.fid.Extractor`."""
    from lightning_gd.realism.fid import Extractor

    name = register_tiny_extractor()
    return Extractor(TinyFeatureExtractor(name, [TINY_FEATURE]).eval(), TINY_FEATURE, f"{name}-seed0")


class TinyConvGenerator(nn.Module):
    """A small random conv generator: z (B, 8) → `embed` (B, 8, 4, 4) → `layer1` (B, 6, 8, 8) ReLU featuremap →
    `render` images (B, 3, 32, 32) in (−1, 1). Weights fixed by `seed`."""

    def __init__(self, seed: int = 0, units: int = 6) -> None:
        super().__init__()
        self.z_dim = 8
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Sequential(nn.Linear(8, 8 * 4 * 4), nn.Unflatten(1, (8, 4, 4)))
            self.layer1 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, units, 3, padding=1), nn.ReLU())
            self.render = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(units, 3, 3, padding=1), nn.Tanh())
        self.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.render(self.layer1(self.embed(z)))


# ----------------------------------------------------------------------------------------------- training runs

import pytorch_lightning as pl  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

PROBE = {"n": 24, "batch_size": 12, "top_k": 2, "num_units": 2}  # the emergence monitor's probe, kept small


def tiny_trainer(root, **overrides) -> pl.Trainer:
    """The one tiny CPU Trainer of the tests: one epoch, no logger, no checkpoints, no progress bar or model
    summary, writing under `root`; keyword arguments override any of it (`max_steps`, `limit_train_batches`,
    `logger`, `callbacks`, …). The `trainer` fixture of conftest.py is this with root = tmp_path."""
    args = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**args, **overrides})


class TinyGenerator(nn.Module):
    """z (B, Z_DIM) → 64×64 images: the planted scene at ±0.9 plus a learned tint of at most ±0.1, from a trainable
    `mix` block with BatchNorm, so training moves weights and running statistics without changing the labels."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = Z_DIM
        self.embed = nn.Identity()  # (B, Z_DIM): not a featuremap
        self.layer1 = Planted()  # (B, 3, 16, 16): dome, noise, dead
        self.mix = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())  # (B, 4, 16, 16), trained
        self.tint = nn.Conv2d(4, 3, 1)
        self.render = Render()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.layer1(self.embed(z))
        tint = torch.tanh(self.tint(F.interpolate(self.mix(r), scale_factor=SCALE)))  # (B, 3, 64, 64)
        return 0.9 * self.render(r) + 0.1 * tint


class ForeignGAN(pl.LightningModule):
    """Someone else's GAN, not the project's: manual optimisation (two optimiser steps per batch), its generator
    (`TinyGenerator`) at `nets.G`."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        disc = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 16 * 16, 1))
        self.nets = nn.ModuleDict({"G": TinyGenerator(), "D": disc})

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.nets["G"].parameters(), lr=1e-2),
            torch.optim.Adam(self.nets["D"].parameters(), lr=1e-2),
        )

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        real = batch[0]
        fake = self.nets["G"](torch.randn(real.shape[0], Z_DIM))
        loss_d = F.softplus(-self.nets["D"](real)).mean() + F.softplus(self.nets["D"](fake.detach())).mean()
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = F.softplus(-self.nets["D"](fake)).mean()
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()

    def train_dataloader(self):
        real = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
        return DataLoader(TensorDataset(real), batch_size=4, shuffle=True)  # shuffling draws from the global RNG


# ----------------------------------------------------------------------------------------------- reports

REPORT_N, REPORT_K, REPORT_LAYERS = 40, 4, ("layer1", "layer2")  # samples, top images, layers of a report
REPORT_Q = 1 - DOME_SHARE
PNG = b"\x89PNG\r\n\x1a\n"
# concept names that are markup: a report must show them as text, never as tags
SCRIPT, BOLD = "<script>alert(1)</script>", "<b>x</b>"


def is_png(data: bytes) -> bool:
    return data[:8] == PNG


def planted_report():
    """(generator, dissection of layer1 + layer2, the browser's top images) of the two-layer planted generator, with sky
    renamed to a script and dome to a <b> tag."""
    from lightning_gd.dissection import dissect
    from lightning_gd.dissection.top_images import shown_images

    g = PlantedGenerator(two_layers=True).eval()
    seg = ColourSegmenter([SCRIPT, BOLD, "grass"])
    d = dissect(
        g, list(REPORT_LAYERS), seg, n=REPORT_N, batch_size=REPORT_N, q=REPORT_Q, top_k=REPORT_K, progress=False
    )
    return g, d, shown_images(g, d, Z_DIM, segmenter=seg)


class NaNSegmenter(ColourSegmenter):
    """The colour segmenter, but its scores are NaN (a broken network)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(super().logits(x), float("nan"))


class WrongChannelsSegmenter(ColourSegmenter):
    """Four concepts in its vocabulary, three score channels."""

    def __init__(self) -> None:
        super().__init__()
        self.concepts = (*CONCEPTS, "lake")
        self.categories = {**self.categories, "lake": "scene"}


# ----------------------------------------------------------------------------------------------- context

DOOR_CONCEPTS = ["sky", "door", "building"]  # ColourSegmenter(names=DOOR_CONCEPTS): blue, red, green


class DoorScene(nn.Module):
    """z (B, 1 + 64) → featuremap (B, 3, 8, 8): unit 0 a building (rows 3-7, columns 0 … width−1, the width from
    z[0], 2 to 6), unit 1 a door unit (0 everywhere: only an insertion turns it on), unit 2 sparse noise."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        width = 2 + (torch.sigmoid(z[:, 0]) * 5).long().clamp(max=4)  # (B,)
        rows, cols = torch.arange(8, device=z.device), torch.arange(8, device=z.device)
        building = (rows[None, :, None] >= 3) & (cols[None, None, :] < width[:, None, None])
        door = torch.zeros_like(building, dtype=torch.float32)
        noise = F.relu(z[:, 1:].view(-1, 8, 8) - 1.0)
        return torch.stack([building.float(), door, noise], 1)


class DoorVeto(nn.Module):
    """(B, 3, 8, 8) → (B, 2, 8, 8): the building, and the door only where the building is (the context veto)."""

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        building = (r[:, 0] > 0.5).float()
        return torch.stack([building, r[:, 1] * building], 1)


class DoorRender(nn.Module):
    """(B, 2, 8, 8) → image (B, 3, 64, 64): the door red, the building green, the sky blue."""

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(r, scale_factor=8, mode="nearest")
        door, building = up[:, 1] > 0.5, up[:, 0] > 0.5
        return torch.stack([door, building & ~door, ~building & ~door], 1).float() * 2 - 1


class DoorGenerator(nn.Sequential):
    """A generator whose door unit (layer1, unit 1) paints a door only where a building is: `layer2` vetoes it
    elsewhere, so an insertion on the sky changes nothing downstream."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = 1 + 64
        self.add_module("layer1", DoorScene())
        self.add_module("layer2", DoorVeto())
        self.add_module("layer3", DoorRender())


def chromium_path() -> str:
    """Debian's chromium, which the browser tests drive through Playwright (nothing is downloaded)."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        import pytest

        pytest.fail("the browser tests drive Debian's chromium: install it (apt-get install -y chromium)")
    return path


def run_ddp_script(script, cwd):
    """Run a script that starts a 2-process DDP Trainer (Lightning launches the second process by running the script
    again) in a clean environment: one thread per process, no inherited rank or port variables. Returns the
    completed process after checking that it succeeded."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for name in ("MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc

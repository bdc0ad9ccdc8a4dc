"""Turn a training checkpoint of one of the world's models into shipped safetensors weights."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from lightning_gd.errors import InvalidValue
from lightning_gd.models.weights import read_checkpoint, state_dict_of
from lightning_gd.world.models import FeatureNet, UNet
from lightning_gd.world.render import CONCEPTS, RENDERER_VERSION
from lightning_gd.world.weights import default_path, save_module
from lightning_gd.zoo.progan import ProGAN

MODELS = ("gan", "segmenter", "features")
EXPORT_DIR = Path("out/world")  # where exports go unless named: never into the installed package


def _run_wall_time(ckpt: Path) -> float | None:
    """Seconds from the run's start (its hparams.yaml) to this checkpoint, if the log layout is Lightning's."""
    hparams = ckpt.parent.parent / "hparams.yaml"
    return ckpt.stat().st_mtime - hparams.stat().st_mtime if hparams.is_file() else None


GAN_WEIGHTS = ("ema", "generator")
NEEDED_HYPER_PARAMETERS = {"gan": ("sizes",), "segmenter": ("width",), "features": ("feature_dim", "grid", "width")}
WORLD_CONFIGS = {"gan": "gan.yaml", "segmenter": "segmenter.yaml", "features": "features.yaml"}


def portable(checkpoint: str | Path) -> str:
    """The checkpoint's path as the card and the shipped metadata record it, never an absolute path of the machine
    that trained it: relative to the working folder when it lies below it; otherwise from its log root
    (`tb_logs/...` or `lightning_logs/...`); otherwise, in Lightning's `<name>/<version>/checkpoints/<file>` layout,
    those four parts; otherwise its name."""
    path, here = Path(checkpoint).resolve(), Path.cwd().resolve()
    if path.is_relative_to(here):
        return path.relative_to(here).as_posix()
    parts = path.parts
    for root in ("tb_logs", "lightning_logs"):
        if root in parts[:-1]:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(root) :])
    return "/".join(parts[-4:]) if path.parent.name == "checkpoints" and len(parts) > 4 else path.name


def export(model: str, checkpoint: str | Path, out: str | Path | None = None, gan_weights: str = "ema") -> Path:
    """Export `model` ∈ {gan, segmenter, features} from a Lightning checkpoint; returns the written path.

    For the GAN, `gan_weights` picks the exponential moving average (`ema`) or the generator under training
    (`generator`); the exported ProGAN clamps its images to [-1, 1]."""
    if model not in MODELS:
        raise InvalidValue(f"unknown world model '{model}'; choose one of {', '.join(MODELS)}")
    if gan_weights not in GAN_WEIGHTS:
        raise InvalidValue(f"unknown gan_weights '{gan_weights}'; choose one of {', '.join(GAN_WEIGHTS)}")
    ckpt = read_checkpoint(checkpoint)
    hp = ckpt.get("hyper_parameters", {})
    missing = [k for k in NEEDED_HYPER_PARAMETERS[model] if k not in hp]
    if missing:  # e.g. a causal search's checkpoint given to `export-world gan`
        raise InvalidValue(
            f"{checkpoint} is not a world {model} training checkpoint: its hyper-parameters lack "
            f"{', '.join(missing)} (it has: {', '.join(hp) or 'none'}); export-world {model} takes a checkpoint of "
            f"`python -m lightning_gd fit --config configs/world/{WORLD_CONFIGS[model]}`"
        )
    provenance = {
        "checkpoint": portable(checkpoint),
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "hyper_parameters": {k: v for k, v in hp.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "wall_time_s": _run_wall_time(Path(checkpoint)),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "renderer_version": RENDERER_VERSION,
        "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if model == "gan":
        kwargs = {"sizes": [int(s) for s in hp["sizes"]], "tanh": True}
        net = ProGAN(**kwargs)
        net.load_state_dict(state_dict_of(ckpt, "generator_ema" if gan_weights == "ema" else "generator", checkpoint))
        provenance["gan_weights"] = gan_weights
        name = "generator"
    elif model == "segmenter":
        kwargs = {"num_classes": len(CONCEPTS), "width": hp["width"]}
        net = UNet(**kwargs)
        net.load_state_dict(state_dict_of(ckpt, "segmenter.net", checkpoint))
        name = "segmenter"
    else:
        kwargs = {
            "num_classes": len(CONCEPTS),
            "feature_dim": hp["feature_dim"],
            "grid": hp["grid"],
            "width": hp["width"],
        }
        net = FeatureNet(**kwargs)
        net.load_state_dict(state_dict_of(ckpt, "net", checkpoint))
        name = "features"
    out = Path(out) if out is not None else EXPORT_DIR / default_path(name).name
    return save_module(net, out, kwargs, {"provenance": provenance})

"""The world's own subcommands: `demo`, `export-world`, `world-card` (registered with the zoo by the world)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import PositiveInt

from lightning_gd.cli.console import command, print_outputs
from lightning_gd.models.images import to_uint8
from lightning_gd.outputs import check_owned
from lightning_gd.reports.grids import colorize
from lightning_gd.reports.images import save_rows
from lightning_gd.world import load_generator, load_segmenter
from lightning_gd.world.cards import write_cards
from lightning_gd.world.data import render_batch
from lightning_gd.world.export import export

RENDER_SEED_OFFSET = 424_242  # the demo's renders: a seed stream apart from the GAN's z of the same seed


def demo(out: Path = Path("demo"), n: PositiveInt = 8, seed: int = 0) -> Path:
    """Sample the world's GAN, segment real and generated scenes, and save a picture of both.

    Args:
        out: output folder.
        n: images per row.
        seed: seed of the renders and of z.

    Examples:
        python -m lightning_gd demo
        python -m lightning_gd demo --out docs/images --n 8 --seed 0
    """
    check_owned(out)  # before the work: `--out /` wrote world_samples.png into /
    G, seg = load_generator(), load_segmenter()
    real, real_labels = render_batch(n, seed=seed + RENDER_SEED_OFFSET)
    with torch.no_grad():
        fake = G(G.sample_z(n, seed=seed))
    rows = [
        to_uint8(real),
        colorize(real_labels, seg.colours),
        colorize(seg.labels(real), seg.colours),
        to_uint8(fake),
        colorize(seg.labels(fake), seg.colours),
    ]
    path = save_rows(rows, Path(out) / "world_samples.png")
    legend = ", ".join(seg.concepts)
    print(f"wrote {path}\nrows: renders | exact labels | segmenter on renders | GAN samples | segmenter on samples")
    print(f"concepts: {legend}")
    print_outputs((), None, [command("dissect") + "   (what the world GAN's layer4 units encode)"])
    return path


def export_world(
    model: Literal["gan", "segmenter", "features"],
    checkpoint: Path,
    out: Path | None = None,
    gan_weights: Literal["ema", "generator"] = "ema",
) -> Path:
    """Export a world model (gan, segmenter or features) from a Lightning checkpoint to safetensors.

    Args:
        model: gan, segmenter or features.
        checkpoint: a checkpoint written by `python -m lightning_gd fit --config configs/world/<model>.yaml`.
        out: output file (default: out/world/<model's file name>). The shipped weights are replaced only when
            named explicitly (`--out lightning_gd/world/weights/generator.safetensors` in a source checkout).
        gan_weights: for the GAN, `ema` (the moving average) or `generator` (the weights under training).

    Examples:
        python -m lightning_gd export-world gan --checkpoint tb_logs/world_close_progan/version_0/checkpoints/last.ckpt
        python -m lightning_gd export-world features --checkpoint tb_logs/world_features/version_0/checkpoints/last.ckpt
    """
    path = export(model, checkpoint, out, gan_weights)
    print(f"wrote {path}")
    flag = {"gan": "--generator", "segmenter": "--segmenter"}.get(model)
    if flag is not None:
        print_outputs((), None, [command("dissect", flag, f"world:{path}") + "   (dissect with the exported weights)"])
    return path


def world_card(
    n: PositiveInt = 2000,
    gan_checkpoints: list[Path] | None = None,
    out: Path | None = None,
    weights: Path | None = None,
    view: Literal["street", "close"] | None = None,
    transplant_n: PositiveInt = 200,
) -> Path:
    """Measure the shipped world models and write their model cards (markdown + JSON): segmenter accuracy, the
    GAN's targets (world FID with precision and recall, concept shares, instance sizes against the layer4 cell,
    the transplant probe).

    Args:
        n: samples per measurement (renders, generated images).
        gan_checkpoints: GAN training checkpoints whose world FID is reported too (EMA generator of each).
        out: output folder (default: out/world-card; `--out lightning_gd/world/weights` in a source checkout
            updates the shipped cards).
        weights: a folder with generator.safetensors, segmenter.safetensors and features.safetensors to measure
            instead of the shipped ones (candidate models from `export-world`).
        view: the renderer's view those models were trained on (default: the shipped models' view).
        transplant_n: donor/recipient pairs per concept and square of the transplant probe.

    Examples:
        python -m lightning_gd world-card
        python -m lightning_gd world-card --weights out/world --view close --n 500
    """
    path = write_cards(n, gan_checkpoints or [], out, weights, view, transplant_n)
    print_outputs((), None, [f"open {path}"])
    return path


COMMANDS = {"demo": demo, "export-world": export_world, "world-card": world_card}

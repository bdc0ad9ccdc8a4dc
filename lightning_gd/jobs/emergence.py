"""The emergence job: dissect one layer in every checkpoint of a finished training run (paper §S-6.6)."""

from __future__ import annotations

from pathlib import Path

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import check_writable, staged
from lightning_gd.dissection.emergence import measure_unit_emergence, top_units
from lightning_gd.errors import InvalidValue
from lightning_gd.jobs import run_name
from lightning_gd.models.generators import resolve_device
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.weights import (
    checkpoint_batches,
    checkpoint_files,
    checkpoint_step,
    read_checkpoint,
    state_dict_of,
    training_order,
)


def load_checkpoint_generator(
    path: Path, prefix: str = "generator", generator: nn.Module | str | dict | None = None
) -> tuple:
    """(generator with the checkpoint's weights under `prefix`, step, batches). A spec or None builds the zoo's
    generator sized from the checkpoint's hyper-parameters (e.g. a world GAN training run)."""
    ckpt = read_checkpoint(path)
    if generator is None or generator == zoo.DEFAULT:  # the default network's own training run: sized from it
        generator = zoo.generator(generator, hyper_parameters=ckpt.get("hyper_parameters", {}))
    elif isinstance(generator, (str, dict)):  # another spec or config: its architecture, then these weights
        generator = zoo.generator(generator)
    try:
        generator.load_state_dict(state_dict_of(ckpt, prefix, path))
    except RuntimeError as err:
        raise InvalidValue(f"{path} ('{prefix}' weights) does not fit {type(generator).__name__}: {err}") from err
    return generator, checkpoint_step(ckpt, path), checkpoint_batches(ckpt)


def dissect_checkpoints(
    checkpoints: list[str] | str,
    layer: str = "layer4",
    generator: nn.Module | str | None = None,
    prefix: str = "generator",
    segmenter: Segmenter | str | None = None,
    z_dim: int | None = None,
    n: PositiveInt = 500,
    seed: int = 0,
    batch_size: PositiveInt = 50,
    iou_threshold: ClosedUnitInterval = 0.05,
    units: list[int] | None = None,
    num_units: NonNegativeInt = 4,
    top_k: PositiveInt = 4,
    out: Path = Path("out/emergence"),
    tb_dir: Path | None = Path("tb_logs"),
    device: str = "cpu",
) -> list[dict]:
    """Dissect a layer in each checkpoint of a training run and plot how its units emerge (paper Fig. 18).

    One measurement per training step (`last.ckpt` duplicates dropped); writes emergence.json, emergence.png,
    emergence_heatmap.png, emergence_units.png (the fixed units over training) and TensorBoard with the
    checkpoints' steps as the x-axis. Returns the records.

    Args:
        checkpoints: Lightning checkpoints: a file, folder (its *.ckpt) or quoted glob pattern, or a list of them.
        layer: the generator layer to dissect.
        generator: the generator to load each checkpoint into: a module (class_path + init_args), or a zoo spec
            whose network is sized from the checkpoint's hyper-parameters (default: the world's).
        prefix: the generator's key prefix in the checkpoint's state_dict (`generator`, `generator_ema`, `nets.G`).
        segmenter: a zoo spec or a `lightning_gd.models.segmenters.Segmenter`; default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: probe samples per checkpoint (the same z for every checkpoint).
        seed: seed of the probe z.
        batch_size: samples per forward pass.
        iou_threshold: a unit is interpretable when its best IoU exceeds this.
        units: units whose top images are shown per checkpoint (default: the top units of the last checkpoint).
        num_units: how many units to show when `units` is not given.
        top_k: top images kept per unit.
        out: output folder (emergence.json, emergence.png, emergence_heatmap.png, emergence_units.png).
        tb_dir: TensorBoard folder (None: no TensorBoard); the run is `emergence-<layer>` (with the output
            folder's name when it is not `emergence`).
        device: torch device for both networks.

    Examples:
        python -m lightning_gd dissect-checkpoints tb_logs/world_progan/version_0/checkpoints --prefix generator_ema
        python -m lightning_gd dissect-checkpoints tb_logs/world_progan/version_0/checkpoints --layer layer6 --n 200
    """
    from lightning_gd.reports.emergence import write_emergence

    check_writable(out)
    device = resolve_device(device)
    seg = zoo.segmenter(segmenter).to(device)
    by_step: dict[int, tuple] = {}
    for path in sorted(checkpoint_files(checkpoints), key=training_order):
        G, step, batches = load_checkpoint_generator(path, prefix, generator)
        if step in by_step:
            print(f"{path.name}: step {step} already dissected from {by_step[step][0].name}; skipped")
            continue
        record, result = measure_unit_emergence(
            G.to(device), layer, seg, n, seed, batch_size, iou_threshold, top_k, z_dim
        )
        by_step[step] = (path, {"step": step, "batches": batches, "checkpoint": str(path), **record}, result)
        r = by_step[step][1]
        print(
            f"{path.name:<18} step {step:>7}: {r['interpretable']:>3}/{r['units']} interpretable, "
            f"{r['distinct_concepts']} concepts, mean IoU {r['mean_iou']:.3f} ({r['seconds']:.1f} s)",
            flush=True,
        )
    history = [by_step[s][1] for s in sorted(by_step)]
    fixed = list(units) if units is not None else top_units(history[-1], num_units)
    for r in history:
        r["fixed_units"] = fixed
    runs = (  # one generator in memory at a time
        (record, result, load_checkpoint_generator(path, prefix, generator)[0].to(device))
        for path, record, result in (by_step[s] for s in sorted(by_step))
    )
    tb = None if tb_dir is None else Path(tb_dir) / run_name("emergence", out, [layer])
    title = f"{layer}: unit emergence over training ({n} samples)"
    with staged(out) as stage:
        write_emergence(runs, history, stage, tb, title, seed, z_dim)
    return history

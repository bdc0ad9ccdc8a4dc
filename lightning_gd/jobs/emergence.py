"""The emergence job: dissect one layer in every checkpoint of a finished training run (paper §S-6.6)."""

from __future__ import annotations

from pathlib import Path

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import check_writable, staged
from lightning_gd.dissection.emergence import measure_unit_emergence
from lightning_gd.errors import InvalidValue
from lightning_gd.jobs import run_name
from lightning_gd.jobs.trainer import ONE_CPU, TrainerOptions
from lightning_gd.models.generators import default_layer
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.models.weights import (
    checkpoint_batches,
    checkpoint_files,
    checkpoint_step,
    read_checkpoint,
    state_dict_of,
    training_order,
)
from lightning_gd.results import EmergenceResult
from lightning_gd.results.emergence import EmergenceImages
from lightning_gd.results.images import UnitImages


def load_checkpoint_generator(
    path: Path, prefix: str = "generator", generator: nn.Module | str | dict | None = None
) -> tuple:
    """(generator with the checkpoint's weights under `prefix`, step, batches). A spec or None builds the zoo's
    generator sized from the checkpoint's hyper-parameters (e.g. a world GAN training run)."""
    ckpt = read_checkpoint(path)
    # the default network's own training run: sized from it
    if generator is None or generator == zoo.default_name("generator"):
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
    layer: str | None = None,
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
    trainer: TrainerOptions = ONE_CPU,
) -> list[dict] | None:
    """Dissect a layer in each checkpoint of a training run and plot how its units emerge (paper Fig. 18).

    One measurement per training step (`last.ckpt` duplicates dropped), each with the followed units' top images;
    writes emergence.json and emergence_images.safetensors (the results), then draws from them emergence.png,
    emergence_heatmap.png, emergence_units.png (the followed units over training), index.html and TensorBoard
    with the checkpoints' steps as the x-axis. Returns the records.

    Args:
        checkpoints: Lightning checkpoints: a file, folder (its *.ckpt) or quoted glob pattern, or a list of them.
        layer: the generator layer to dissect (default: the generator's default layer).
        generator: the generator to load each checkpoint into: a module (class_path + init_args), or a zoo spec
            whose network is sized from the checkpoint's hyper-parameters (default: the world's).
        prefix: the generator's key prefix in the checkpoint's state_dict (`generator`, `generator_ema`, `nets.G`).
        segmenter: a zoo spec or a `lightning_gd.models.segmenters.Segmenter`; default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: probe samples per checkpoint (the same z for every checkpoint).
        seed: seed of the probe z.
        batch_size: samples per forward pass.
        iou_threshold: a unit is interpretable when its best IoU exceeds this.
        units: units whose top images are kept per checkpoint (default: the top units of the last checkpoint,
            which is therefore measured first).
        num_units: how many units to follow when `units` is not given (0: no images).
        top_k: top images kept per unit.
        out: output folder (emergence.json, emergence_images.safetensors, the figures, index.html).
        tb_dir: TensorBoard folder (None: no TensorBoard); the run is `emergence-<layer>` (with the output
            folder's name when it is not `emergence`).
        trainer: where each dissection runs: Lightning's accelerator, devices, num_nodes, strategy and precision,
            as for `dissect` (`--trainer.accelerator gpu`; `--trainer.devices 2 --trainer.strategy ddp`: two
            processes, which measure what one does; only global rank 0 writes the outputs, the others return None).

    Examples:
        python -m lightning_gd dissect-checkpoints tb_logs/world_close_progan/version_0/checkpoints
        python -m lightning_gd dissect-checkpoints tb_logs/my_gan/version_0/checkpoints --prefix generator_ema --n 200
    """
    from lightning_gd.reports.emergence import write_emergence

    check_writable(out)
    engine = trainer.trainer(progress=False)
    found = distinct_steps(checkpoints, say=engine.is_global_zero)
    device = engine.strategy.root_device
    seg = zoo.segmenter(segmenter).to(device)
    measured: dict[int, tuple[dict, UnitImages | None]] = {}
    fixed = None if units is None else list(units)
    for path, step, batches in [found[-1], *found[:-1]]:  # the last first: the followed units are its top units
        G = load_checkpoint_generator(path, prefix, generator)[0].to(device)
        layer = layer if layer is not None else default_layer(G)
        sample = {"n": n, "seed": seed, "batch_size": batch_size, "iou_threshold": iou_threshold, "top_k": top_k}
        m = measure_unit_emergence(
            G, layer, seg, **sample, z_dim=z_dim, units=fixed, num_units=num_units, trainer=engine
        )
        fixed = m.record["fixed_units"]
        r = {"step": step, "batches": batches, "checkpoint": str(path), **m.record}
        measured[step] = (r, m.images)
        if engine.is_global_zero:
            print(
                f"{path.name:<18} step {step:>7}: {r['interpretable']:>3}/{r['units']} interpretable, "
                f"{r['distinct_concepts']} concepts, mean IoU {r['mean_iou']:.3f} ({r['seconds']:.1f} s)",
                flush=True,
            )
    if not engine.is_global_zero:  # every rank measured the same; one writes it
        return None
    steps = sorted(measured)
    history = [measured[s][0] for s in steps]
    tb = None if tb_dir is None else Path(tb_dir) / run_name("emergence", out, [layer])
    with staged(out) as stage:
        EmergenceResult(history).save(stage)
        if fixed:
            EmergenceImages.stack(layer, steps, fixed, [measured[s][1] for s in steps]).save(stage)
        write_emergence(stage, tb)
    return history


def distinct_steps(checkpoints: list[str] | str, say: bool = True) -> list[tuple[Path, int, int | None]]:
    """(file, global step, batches) of each checkpoint in training order, a step that an earlier file holds
    (`last.ckpt`) skipped (and, if `say`, said)."""
    by_step: dict[int, tuple[Path, int, int | None]] = {}
    for path in sorted(checkpoint_files(checkpoints), key=training_order):
        ckpt = read_checkpoint(path)
        step = checkpoint_step(ckpt, path)
        if step in by_step:
            if say:
                print(f"{path.name}: step {step} is {by_step[step][0].name}'s; skipped")
            continue
        by_step[step] = (path, step, checkpoint_batches(ckpt))
    return [by_step[s] for s in sorted(by_step)]

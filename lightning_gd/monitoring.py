"""Unit emergence (paper §S-6.6, Fig. 18): dissect one layer at points of training and watch interpretable units,
distinct concepts and their IoU grow, and the top images of a few fixed units change.

Three entry points share one measurement:
- `log_unit_emergence(G, step, writer)` — plain PyTorch: measure now, log to a `SummaryWriter`;
- `lightning_gd.callbacks.UnitEmergenceMonitor` — the same, every N batches of anyone's Lightning run;
- `dissect_checkpoints(paths)` — the same over the saved checkpoints of a finished run, with figures.

A measurement is `dissect(G, layer, segmenter)` on a fixed probe sample of z (seeded per index), so successive
measurements see the same z. It runs under `torch.no_grad()`, in eval mode (restored afterwards), and forks the
torch RNG, so a training run that measures draws the same random numbers as one that does not. Under
torch.distributed every rank must measure together (the dissection shards the probe sample and reduces its
statistics across ranks); pass `writer=None` on all ranks but one.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from lightning_gd.dissection import Dissection, dissect
from lightning_gd.generators import device_of, eval_mode, z_dim_of
from lightning_gd.segmenters import Segmenter

TAG = "emergence"
_LAID_OUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # writer → custom-scalar layouts it holds


@contextlib.contextmanager
def quiet_measurement(*modules: nn.Module) -> Iterator[None]:
    """No gradients, eval mode (each module's mode restored, even on error), and the torch RNG left untouched."""
    cuda = [d.index for d in {device_of(m) for m in modules} if d.type == "cuda"]
    with eval_mode(*modules), torch.random.fork_rng(devices=cuda), torch.no_grad():
        yield


def measure_unit_emergence(
    generator: nn.Module,
    layer: str,
    segmenter: Segmenter,
    n: int = 200,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    top_k: int = 4,
    z_dim: int | None = None,
) -> tuple[dict, Dissection]:
    """Dissect `layer` on the probe sample; returns a JSON-able record (the paper's three measures, the units per
    concept, each unit's best IoU and concept) and the dissection. Every torch.distributed rank must call it."""
    t0 = time.perf_counter()
    segmenter.to(device_of(generator))
    with quiet_measurement(generator, segmenter):
        result = dissect(
            generator,
            layer,
            segmenter,
            n=n,
            seed=seed,
            batch_size=batch_size,
            iou_threshold=iou_threshold,
            top_k=top_k,
            z_dim=z_dim,
            progress=False,
        )
    best_iou, best = result.layers[layer].iou.max(1)  # (U,), (U,)
    summary = result.summary(layer)
    names = result.vocabulary.names
    record = {
        "layer": layer,
        "units": summary["units"],
        "interpretable": summary["interpretable"],
        "distinct_concepts": summary["distinct_concepts"],
        "mean_iou": summary["mean_iou"],
        "per_concept": {c: summary["per_concept"].get(c, 0) for c in names},
        "best_iou": [round(float(v), 6) for v in best_iou],
        "best_concept": [names[int(i)] for i in best],
        "iou_threshold": iou_threshold,
        "seconds": time.perf_counter() - t0,
    }
    return record, result


def top_units(record: dict, k: int) -> list[int]:
    """k units worth watching: the best interpretable unit of each concept, best first (so the picture shows
    several concepts, not k units of the commonest one), then the remaining units by IoU (ties: the lower unit)."""
    iou, concept = record["best_iou"], record["best_concept"]
    order = sorted(range(len(iou)), key=lambda u: (-iou[u], u))
    first: dict[str, int] = {}
    for u in order:
        if iou[u] > record["iou_threshold"]:
            first.setdefault(concept[u], u)
    picked = list(first.values())[:k]
    return picked + [u for u in order if u not in picked][: k - len(picked)]


def log_unit_emergence(
    generator: nn.Module,
    step: int,
    writer=None,
    layer: str = "layer4",
    segmenter: Segmenter | None = None,
    history: list[dict] | None = None,
    n: int = 200,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    units: list[int] | None = None,
    num_units: int = 4,
    top_k: int = 4,
    z_dim: int | None = None,
    tag: str = TAG,
) -> dict:
    """Measure unit emergence in `layer` of `generator` now and log it to `writer` (a SummaryWriter) at `step`.

    `history` (a list the caller keeps) receives the record, and feeds the units × time heatmap. The fixed units
    whose top images are shown are `units`, else those of the history's first record, else the current top
    `num_units` by IoU. Returns the record."""
    if segmenter is None:
        from lightning_gd.world import load_segmenter

        segmenter = load_segmenter()
    record, result = measure_unit_emergence(
        generator, layer, segmenter, n, seed, batch_size, iou_threshold, top_k, z_dim
    )
    if units is not None:
        fixed = list(units)
    elif history:
        fixed = list(history[0]["fixed_units"])
    else:
        fixed = top_units(record, num_units)
    record = {"step": int(step), **record, "fixed_units": fixed}
    if history is not None:
        history.append(record)
    if writer is not None:
        write_unit_emergence(writer, record, result, generator, history or [record], seed, z_dim, tag)
    return record


# ----------------------------------------------------------------------------------------------- TensorBoard


def custom_scalars_layout(layer: str, tag: str = TAG) -> dict:
    """One TensorBoard "custom scalars" section per layer: the three measures and units per concept together."""
    base = f"{tag}/{layer}"
    return {
        base: {
            "interpretable units": ["Multiline", [f"{base}/interpretable_units"]],
            "distinct concepts": ["Multiline", [f"{base}/distinct_concepts"]],
            "mean IoU of interpretable units": ["Multiline", [f"{base}/mean_iou"]],
            "interpretable units per concept": ["Multiline", [f"{base}/units_per_concept/.*"]],
        }
    }


def scalars(record: dict, tag: str = TAG) -> dict[str, float]:
    base = f"{tag}/{record['layer']}"
    out = {
        f"{base}/interpretable_units": float(record["interpretable"]),
        f"{base}/distinct_concepts": float(record["distinct_concepts"]),
        f"{base}/mean_iou": float(record["mean_iou"]),
    }
    out.update({f"{base}/units_per_concept/{c}": float(k) for c, k in record["per_concept"].items()})
    return out


def write_unit_emergence(
    writer,
    record: dict,
    result: Dissection,
    generator: nn.Module,
    history: list[dict],
    seed: int = 0,
    z_dim: int | None = None,
    tag: str = TAG,
) -> None:
    """Scalars, custom-scalar layout (once per writer), best-IoU histogram, units × time heatmap, fixed units."""
    layer, step = record["layer"], record["step"]
    base = f"{tag}/{layer}"
    laid_out = _LAID_OUT.setdefault(writer, set())
    if base not in laid_out:
        writer.add_custom_scalars(custom_scalars_layout(layer, tag))
        laid_out.add(base)
    for name, value in scalars(record, tag).items():
        writer.add_scalar(name, value, step)
    writer.add_histogram(f"{base}/best_iou", np.asarray(record["best_iou"]), step)
    writer.add_image(f"{base}/best_iou_heatmap", heatmap_image(history), step, dataformats="HWC")
    if record["fixed_units"]:
        strips = fixed_unit_strips(generator, result, record["fixed_units"], seed, z_dim)
        writer.add_image(f"{base}/fixed_units", unit_rows_image(strips, record), step, dataformats="HWC")
    writer.flush()


def fixed_unit_strips(
    generator: nn.Module, result: Dissection, units: list[int], seed: int = 0, z_dim: int | None = None
) -> dict[int, torch.Tensor]:
    """Top images (k, 3, H, W) uint8 of each fixed unit, its region outlined, generated in eval mode."""
    from lightning_gd.reports.images import unit_strips

    layer = result.settings.layers[0]
    with quiet_measurement(generator):
        return unit_strips(generator, result.layers[layer], z_dim_of(generator, z_dim), seed, units=units)


def unit_rows_image(strips: dict[int, torch.Tensor], record: dict, caption_width: int = 96) -> np.ndarray:
    """One row per unit: a caption (unit, concept, IoU; grey when not interpretable) and its top images."""
    from PIL import Image, ImageDraw

    rows = []
    for u, images in strips.items():
        h = images.shape[-2]
        row = torch.cat([torch.nn.functional.pad(im, (1, 1, 1, 1), value=255) for im in images], dim=2)
        caption = Image.new("RGB", (caption_width, row.shape[1]), "white")
        iou, label = record["best_iou"][u], record["best_concept"][u]
        interpretable = iou > record["iou_threshold"]
        colour = (0, 0, 0) if interpretable else (150, 150, 150)
        ImageDraw.Draw(caption).multiline_text((4, max(2, h // 2 - 14)), f"unit {u}\n{label}\nIoU {iou:.2f}", colour)
        rows.append(np.concatenate([np.asarray(caption), row.permute(1, 2, 0).numpy()], axis=1))
    if not rows:
        return np.full((8, caption_width, 3), 255, np.uint8)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)  # (H, W, 3)


# ----------------------------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    """A matplotlib Figure that needs no pyplot (so importing this module never picks a GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)


def heatmap_image(history: list[dict]) -> np.ndarray:
    """Best IoU of every unit (rows, sorted by the latest measurement) at every measurement (columns)."""
    iou = np.array([r["best_iou"] for r in history]).T  # (U, T)
    order = np.argsort(-iou[:, -1], kind="stable")
    fig = _figure(max(4.0, 0.35 * len(history) + 2.5), 4.0)
    ax = fig.subplots()
    im = ax.imshow(iou[order], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    steps = [r["step"] for r in history]
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int)
    ax.set_xticks(ticks, [str(steps[t]) for t in ticks], rotation=45, fontsize=7)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"unit (sorted by best IoU at step {steps[-1]})", fontsize=8)
    ax.set_yticks([])
    ax.set_title(f"{history[-1]['layer']}: best IoU per unit", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return _render(fig)


def emergence_figure(history: list[dict], title: str = "") -> np.ndarray:
    """Interpretable units, distinct concepts, mean IoU and units per concept against training step."""
    steps = [r["step"] for r in history]
    fig = _figure(13.0, 3.0)
    axes = fig.subplots(1, 4)
    for ax, key, label in zip(
        axes,
        ("interpretable", "distinct_concepts", "mean_iou"),
        ("interpretable units", "distinct concepts", "mean IoU (interpretable units)"),
    ):
        ax.plot(steps, [r[key] for r in history], "o-", color="#3b75af", ms=3)
        ax.set_title(label, fontsize=9)
    concepts = [c for c in history[-1]["per_concept"] if any(r["per_concept"].get(c, 0) for r in history)]
    for c in concepts:
        axes[3].plot(steps, [r["per_concept"].get(c, 0) for r in history], "o-", ms=2, label=c)
    axes[3].set_title("interpretable units per concept", fontsize=9)
    if concepts:
        axes[3].legend(fontsize=6, frameon=False, ncol=2)
    for ax in axes:
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _render(fig)


def units_over_time_figure(columns: list[tuple[dict, dict[int, torch.Tensor]]], units: list[int]) -> np.ndarray:
    """Paper Fig. 18: per fixed unit (rows), its top image at each measurement (columns) with concept and IoU."""
    fig = _figure(1.25 * len(columns) + 0.6, 1.5 * len(units) + 0.3)
    axes = np.array(fig.subplots(len(units), len(columns), squeeze=False))
    for j, (record, strips) in enumerate(columns):
        for i, u in enumerate(units):
            ax = axes[i, j]
            if u in strips:
                ax.imshow(strips[u][0].permute(1, 2, 0).numpy(), interpolation="nearest")
            iou = record["best_iou"][u]
            ax.set_title(
                f"{record['best_concept'][u]} {iou:.2f}",
                fontsize=6,
                color="k" if iou > record["iou_threshold"] else "0.6",
            )
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"unit {u}", fontsize=7)
            if i == len(units) - 1:
                ax.set_xlabel(f"step {record['step']}", fontsize=6)
    fig.tight_layout(pad=0.3)
    return _render(fig)


def save_png(image: np.ndarray, path) -> None:
    from pathlib import Path

    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


# ----------------------------------------------------------------------------------------------- checkpoints


def checkpoint_files(paths) -> list:
    """Checkpoint files from a file, folder (its `*.ckpt`) or glob pattern, or a list of them, in the order given."""
    import glob
    from pathlib import Path

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = []
    for p in map(str, paths):
        if any(ch in p for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(p))
            if not matches:
                raise FileNotFoundError(f"no checkpoint matches the pattern {p}")
            files += matches
        elif Path(p).is_dir():
            found = sorted(Path(p).glob("*.ckpt"))
            if not found:
                raise FileNotFoundError(f"no *.ckpt files in {p}")
            files += found
        elif Path(p).is_file():
            files.append(Path(p))
        else:
            raise FileNotFoundError(f"checkpoint not found: {p}")
    return files


def _file_order(path) -> tuple:
    """step=N files by N (so the log reads in training order), others after them, last.ckpt (a repeat) last."""
    import re

    found = re.findall(r"step=(\d+)", path.name)
    return (path.name == "last.ckpt", int(found[-1]) if found else float("inf"), path.name)


def _checkpoint_step(ckpt: dict, path) -> int:
    import re

    if isinstance(ckpt.get("global_step"), int):
        return ckpt["global_step"]
    found = re.findall(r"step=(\d+)", path.name)
    if not found:
        raise ValueError(f"{path} has no global_step and its name has no step=N; cannot place it on the step axis")
    return int(found[-1])


def _checkpoint_batches(ckpt: dict) -> int | None:
    """Training batches done at the checkpoint (Lightning's batch progress), when the file records it."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"])
    except (KeyError, TypeError):
        return None


def generator_state(ckpt: dict, prefix: str, path) -> dict[str, torch.Tensor]:
    """The generator's weights: the checkpoint's state_dict entries under `prefix.`, prefix removed."""
    state = ckpt.get("state_dict", ckpt)
    head = prefix.rstrip(".") + "."
    sub = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
    if not sub:
        prefixes = sorted({k.split(".")[0] for k in state})
        raise KeyError(f"{path} has no weights under '{head}'; its state_dict prefixes: {', '.join(prefixes)}")
    return sub


def load_checkpoint_generator(path, prefix: str = "generator", generator: nn.Module | None = None):
    """(generator with the checkpoint's weights, step, batches). Without `generator`, the world's `Generator`
    is built from the checkpoint's hyper-parameters (z_dim, g_width)."""
    from lightning_gd.world.models import Generator

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if generator is None:
        hp = ckpt.get("hyper_parameters", {})
        generator = Generator(hp.get("z_dim", 128), hp.get("g_width", 256))
    try:
        generator.load_state_dict(generator_state(ckpt, prefix, path))
    except RuntimeError as err:
        raise ValueError(f"{path} ('{prefix}' weights) does not fit {type(generator).__name__}: {err}") from err
    return generator, _checkpoint_step(ckpt, path), _checkpoint_batches(ckpt)


def dissect_checkpoints(
    checkpoints,
    out="out/emergence",
    layer: str = "layer4",
    generator: nn.Module | None = None,
    prefix: str = "generator",
    segmenter: Segmenter | None = None,
    z_dim: int | None = None,
    n: int = 500,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    units: list[int] | None = None,
    num_units: int = 4,
    top_k: int = 4,
    tb_dir="tb_logs",
    device: str = "cpu",
) -> list[dict]:
    """Dissect `layer` in every checkpoint of a run (one per training step; `last.ckpt` duplicates dropped) and
    write emergence.json, emergence.png (measures against step), emergence_heatmap.png, emergence_units.png
    (Fig. 18: the fixed units — by default the top units of the final checkpoint — over training) and
    TensorBoard at `tb_dir/emergence-<out name>` with the checkpoints' steps as the x-axis. Returns the records."""
    import json
    from pathlib import Path

    from lightning_gd.io import atomic_write

    out = Path(out)
    files = checkpoint_files(checkpoints)
    if segmenter is None:
        from lightning_gd.world import load_segmenter

        segmenter = load_segmenter()
    segmenter.to(device)
    # pass 1: dissect each checkpoint (one per step, in step order)
    by_step: dict[int, tuple] = {}
    for path in sorted(files, key=_file_order):
        G, step, batches = load_checkpoint_generator(path, prefix, generator)
        if step in by_step:
            print(f"{path.name}: step {step} already dissected from {by_step[step][0].name}; skipped")
            continue
        record, result = measure_unit_emergence(
            G.to(device), layer, segmenter, n, seed, batch_size, iou_threshold, top_k, z_dim
        )
        record = {"step": step, "batches": batches, "checkpoint": str(path), **record}
        by_step[step] = (path, record, result)
        print(
            f"{path.name:<18} step {step:>7}: {record['interpretable']:>3}/{record['units']} interpretable, "
            f"{record['distinct_concepts']} concepts, mean IoU {record['mean_iou']:.3f} ({record['seconds']:.1f} s)",
            flush=True,
        )
    steps = sorted(by_step)
    history = [by_step[s][1] for s in steps]
    fixed = list(units) if units is not None else top_units(history[-1], num_units)
    for r in history:
        r["fixed_units"] = fixed
    # pass 2: top images of the fixed units at every checkpoint, and TensorBoard in step order
    writer = None
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(tb_dir) / f"emergence-{out.name}"))
    columns = []
    try:
        for i, s in enumerate(steps):
            path, record, result = by_step[s]
            G = load_checkpoint_generator(path, prefix, generator)[0].to(device)
            strips = fixed_unit_strips(G, result, fixed, seed, z_dim)
            columns.append((record, strips))
            if writer is not None:
                write_unit_emergence(writer, record, result, G, history[: i + 1], seed, z_dim)
    finally:
        if writer is not None:
            writer.close()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "emergence.json", json.dumps(history, indent=1).encode())
    save_png(emergence_figure(history, f"{layer}: unit emergence over training ({n} samples)"), out / "emergence.png")
    save_png(heatmap_image(history), out / "emergence_heatmap.png")
    keep = np.unique(np.linspace(0, len(columns) - 1, min(len(columns), 8)).round().astype(int))
    save_png(units_over_time_figure([columns[i] for i in keep], fixed), out / "emergence_units.png")
    return history

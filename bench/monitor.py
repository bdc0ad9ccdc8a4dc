"""Overhead of `UnitEmergenceMonitor` on the world GAN's training, at the monitor's default frequency.

    python bench/monitor.py [--batches 200] [--every N] [--n 200] [--layer layer4] [--threads 0]

Trains `lightning_gd.world.gan.GANModule` (configs/world/gan.yaml's sizes, no validation, batch 32) on rendered
scenes for --batches batches, after a short warm-up, without and then with the monitor (every --every batches,
default: the callback's own default, and once at the end of training). Prints
- the time the monitor's measurements took (timed inside the callback: dissection + TensorBoard) against the
  training time of one interval, every × (s / batch without the monitor): the overhead at that frequency;
- time(with) / time(without) − 1 of the two whole runs, which also holds setup and the machine's noise. With
  --batches a multiple of --every this ratio is itself the overhead at that frequency (target ≤ 10 %).
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gd.callbacks import UnitEmergenceMonitor
from lightning_gd.world.data import SceneDataModule
from lightning_gd.world.gan import GANModule

DEFAULT_EVERY = inspect.signature(UnitEmergenceMonitor).parameters["every_n_batches"].default


class TimedMonitor(UnitEmergenceMonitor):
    """The monitor with a stopwatch around each measurement (all of it: dissection, images, TensorBoard)."""

    def measure(self, trainer, pl_module, batches):
        t0 = time.perf_counter()
        record = super().measure(trainer, pl_module, batches)
        record["callback_seconds"] = time.perf_counter() - t0
        return record


def fit(batches: int, root: Path, monitor: UnitEmergenceMonitor | None, workers: int) -> float:
    pl.seed_everything(0, verbose=False)
    module = GANModule()  # the world ProGAN's sizes (configs/world/gan.yaml)
    data = SceneDataModule(batch_size=32, train_size=50_000, val_size=64, num_workers=workers)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",  # as configs/world/gan.yaml trains
        max_steps=2 * batches,  # global_step counts both optimisers
        limit_val_batches=0,
        logger=TensorBoardLogger(root, name="bench"),
        callbacks=[monitor] if monitor else [],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=DEFAULT_EVERY, help="monitor frequency in batches")
    ap.add_argument("--batches", type=int, default=200, help="training batches per run")
    ap.add_argument("--n", type=int, default=200, help="probe samples")
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (gan.yaml uses 1)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        fit(10, Path(tmp), None, args.workers)  # warm-up: allocator, data workers, first-call costs
        t_without = fit(args.batches, Path(tmp), None, args.workers)
        monitor = TimedMonitor("generator_ema", args.layer, every_n_batches=args.every, n=args.n)
        t_with = fit(args.batches, Path(tmp), monitor, args.workers)
    per_batch = t_without / args.batches
    timed = [r["callback_seconds"] for r in monitor.history]
    dissection = [r["seconds"] for r in monitor.history]
    each = sum(timed) / len(timed)
    print(f"world GAN, batch 32, threads {torch.get_num_threads()}, monitor on {args.layer} with n={args.n}")
    print(f"training without monitor: {args.batches} batches in {t_without:.1f} s ({per_batch:.3f} s/batch)")
    print(
        f"monitor: {len(timed)} measurement(s) at batches {[r['batch'] for r in monitor.history]}, "
        f"{each:.1f} s each (dissection {sum(dissection) / len(dissection):.1f} s)"
    )
    print(
        f"overhead at every {args.every} batches: {each:.1f} s / ({args.every} x {per_batch:.3f} s) = "
        f"{each / (args.every * per_batch):.1%}  (target <= 10%)"
    )
    print(f"whole runs: time(with) / time(without) - 1 = {t_with / t_without - 1:+.1%} over {args.batches} batches")


if __name__ == "__main__":
    main()

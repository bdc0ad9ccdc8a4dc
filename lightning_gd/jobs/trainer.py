"""Where a job's analysis runs: the hardware options of a Lightning Trainer, under the names and with the meanings
they have for `fit` (`--trainer.accelerator`, `--trainer.devices`, `--trainer.num_nodes`, `--trainer.strategy`,
`--trainer.precision`), and the Trainer they build. A job that runs on several processes (`ddp`, or processes
started by torchrun or SLURM, which Lightning recognises by their environment) runs whole in each of them; only
global rank 0 writes its outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pytorch_lightning import Trainer
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from lightning_gd.errors import InvalidValue


@dataclass(frozen=True)
class TrainerOptions:
    """Lightning's hardware options (see `pytorch_lightning.Trainer`); the defaults run on one CPU process.

    Args:
        accelerator: `cpu`, `gpu` (or `cuda`), `mps`, `tpu` or `auto`.
        devices: devices per node: how many (an int), which ones (a list of indices), or `auto`.
        num_nodes: machines taking part (their processes are started by torchrun or SLURM; see docs/dissection.md).
        strategy: `auto` (one process), `ddp` (one process per device, started by Lightning), …
        precision: the networks' precision: `32-true`, `bf16-mixed`, `16-mixed`, `bf16-true`, … (the
            statistics are taken in float32 whatever it is).
    """

    accelerator: str = "cpu"
    devices: list[int] | int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: int | str = "32-true"

    def trainer(self, progress: bool = True) -> Trainer:
        """A Trainer for an analysis's `validate` / `test`: no logger, checkpoints or model summary (the job
        writes its own outputs)."""
        try:
            return Trainer(
                **asdict(self),
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=progress,
            )
        except (ValueError, MisconfigurationException) as err:  # Lightning names the option and the valid values
            given = " ".join(f"--trainer.{k} {v}" for k, v in asdict(self).items() if v != getattr(ONE_CPU, k))
            raise InvalidValue(f"{given or 'the --trainer options'}: {err}") from err


ONE_CPU = TrainerOptions()  # the subcommands' default: one process on the CPU

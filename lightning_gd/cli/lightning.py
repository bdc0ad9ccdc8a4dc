"""Lightning's own subcommands (`fit`, `validate`, `test`, `predict`) through `LightningCLI`: model and data
chosen by `class_path` in a config. Without `--config` or `--model` they run the causal unit search for "tree"
in layer4 of the embedded world (`default_fit.yaml`, a copy of configs/causal/tree.yaml shipped in the package).

Two departures from LightningCLI's defaults, both for safety: a `--ckpt_path` never replaces the model's
arguments on the command line (LightningCLI would silently take the checkpoint's hyper-parameters, so a
checkpoint of another search would run, and overwrite, that search; the model instead refuses a checkpoint
that is not its own), and checkpoints are local files loaded weights-only (a URL is refused)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningCLI

SUBCOMMANDS = {
    "fit": "Train a model; alone, the causal unit search for `tree` on the embedded world (see --help).",
    "validate": "Run one validation epoch.",
    "test": "Run one test epoch.",
    "predict": "Run prediction.",
}
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_fit.yaml"


def _names_a_model(args: list[str]) -> bool:
    """Whether the command line chooses its own config or model (then the default search does not apply)."""
    return any(a in ("--config", "-c", "--model") or a.startswith(("--config=", "--model=")) for a in args)


class ProjectCLI(LightningCLI):
    """LightningCLI that keeps the command line's model arguments and loads checkpoints weights-only."""

    def _parse_ckpt_path(self) -> None:
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if ckpt_path is not None:
            check_ckpt_path(str(ckpt_path))

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        kwargs["weights_only"] = True  # never unpickle code from a checkpoint file
        return kwargs


def check_ckpt_path(ckpt_path: str) -> None:
    """A local checkpoint file, or one of Lightning's names for the run's own (`last`, `best`, `hpc`, `registry`)."""
    if ckpt_path in ("last", "best", "hpc", "registry") or ckpt_path.startswith("registry:"):
        return
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", ckpt_path):
        raise ValueError(f"--ckpt_path {ckpt_path} is a URL; lightning_gd loads local checkpoints only")
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")


def run_lightning(argv: list[str] | None) -> LightningCLI:
    """LightningCLI on `argv` (None: the process's own command line, which it reads itself)."""
    args = list(sys.argv[1:] if argv is None else argv)
    defaults = [] if _names_a_model(args[1:]) else [str(DEFAULT_CONFIG)]
    return ProjectCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={name: {"default_config_files": defaults} for name in SUBCOMMANDS},
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "tb_logs"},
            }
        },
        args=argv,
    )

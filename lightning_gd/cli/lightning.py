"""Lightning's own subcommands (`fit`, `validate`, `test`, `predict`) through `LightningCLI`: model and data
chosen by `class_path` in a config. Without `--config` or `--model` they run the causal unit search for "tree"
in layer4 of the embedded world (`default_fit.yaml`, a copy of configs/causal/tree.yaml shipped in the package)."""

from __future__ import annotations

import sys
from pathlib import Path

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


def run_lightning(argv: list[str] | None) -> LightningCLI:
    """LightningCLI on `argv` (None: the process's own command line, which it reads itself)."""
    args = list(sys.argv[1:] if argv is None else argv)
    defaults = [] if _names_a_model(args[1:]) else [str(DEFAULT_CONFIG)]
    return LightningCLI(
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

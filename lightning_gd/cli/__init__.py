"""The command line: `python -m lightning_gd <subcommand>` (see `lightning_gd.cli.main`)."""

from lightning_gd.cli.main import main

__all__ = ["main"]

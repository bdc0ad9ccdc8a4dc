"""`python -m lightning_gd <subcommand>`: Lightning's own `fit` / `validate` / `test` / `predict`, plus the
project's subcommands.

Lightning subcommands go to `LightningCLI` (model and data chosen by `class_path` in a config). A project
subcommand is a typed function registered with `@subcommand`; jsonargparse builds its parser from the
signature and docstring, so `--help`, `--print_config` and `--config` work the same way, and a mistyped
key is an error that names it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningCLI

LIGHTNING_SUBCOMMANDS = {
    "fit": "Train a model; alone, the causal unit search for `tree` on the embedded world (see --help).",
    "validate": "Run one validation epoch.",
    "test": "Run one test epoch.",
    "predict": "Run prediction.",
}
_PROJECT: dict[str, Callable] = {}
# `fit`, `validate`, `test` and `predict` without --config or --model run the causal unit search for "tree" in
# layer4 of the embedded world: a copy of configs/causal/tree.yaml that ships inside the package.
DEFAULT_LIGHTNING_CONFIG = Path(__file__).resolve().parent / "default_fit.yaml"


def subcommand(fn: Callable) -> Callable:
    """Register `fn` as `python -m lightning_gd <fn-name-with-dashes>`; its signature is its config."""
    _PROJECT[fn.__name__.replace("_", "-")] = fn
    return fn


def _usage() -> str:
    width = max(map(len, [*LIGHTNING_SUBCOMMANDS, *_PROJECT]))
    lines = ["usage: python -m lightning_gd <subcommand> [--config FILE] [--help] [options]", "", "subcommands:"]
    for name, text in LIGHTNING_SUBCOMMANDS.items():
        lines.append(f"  {name:<{width}}  {text}")
    for name, fn in sorted(_PROJECT.items()):
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        lines.append(f"  {name:<{width}}  {summary}")
    lines += ["", "`python -m lightning_gd <subcommand> --help` shows the options of one subcommand."]
    return "\n".join(lines)


def _positionals_to_options(fn: Callable, argv: list[str]) -> list[str]:
    """Leading positional arguments fill the required parameters in order: `export-world gan --checkpoint x`
    is `export-world --model gan --checkpoint x`."""
    import inspect

    required = [p.name for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
    out, i = [], 0
    while i < len(argv) and i < len(required) and not argv[i].startswith("-"):
        out += [f"--{required[i]}", argv[i]]
        i += 1
    return out + argv[i:]


def run_project_subcommand(name: str, argv: list[str]):
    fn = _PROJECT[name]
    argv = _positionals_to_options(fn, argv)
    parser = ArgumentParser(prog=f"python -m lightning_gd {name}", description=fn.__doc__, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the options below.")
    parser.add_function_arguments(fn, as_group=False)
    cfg = parser.parse_args(argv)
    kwargs = {k: v for k, v in parser.instantiate_classes(cfg).items() if k not in ("config", "__path__")}
    return fn(**kwargs)


def _names_a_model(args: list[str]) -> bool:
    """Whether the command line chooses its own config or model (then the default search does not apply)."""
    return any(a in ("--config", "-c", "--model") or a.startswith(("--config=", "--model=")) for a in args)


def run_lightning(argv: list[str] | None) -> LightningCLI:
    """LightningCLI on `argv` (None: the process's own command line, which it reads itself)."""
    args = list(sys.argv[1:] if argv is None else argv)
    defaults = [] if _names_a_model(args[1:]) else [str(DEFAULT_LIGHTNING_CONFIG)]
    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={name: {"default_config_files": defaults} for name in LIGHTNING_SUBCOMMANDS},
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "tb_logs"},
            }
        },
        args=argv,
    )


def main(argv: list[str] | None = None) -> None:
    from lightning_gd import commands  # noqa: F401  (registers the project's subcommands)

    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name = argv[0]
    if name in LIGHTNING_SUBCOMMANDS:
        run_lightning(None if from_sys else argv)
    elif name in _PROJECT:
        run_project_subcommand(name, argv[1:])
    else:
        import difflib

        close = difflib.get_close_matches(name, [*LIGHTNING_SUBCOMMANDS, *_PROJECT], n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        sys.exit(f"error: unknown subcommand '{name}'.{hint}\n\n{_usage()}")

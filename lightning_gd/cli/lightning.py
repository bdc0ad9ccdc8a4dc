"""Lightning's own subcommands (`fit`, `validate`, `test`, `predict`) through `LightningCLI`: model and data
chosen by `class_path` in a config. Without `--config` or `--model` they run the causal unit search for "tree"
in layer4 of the embedded world (`default_fit.yaml`, a copy of configs/causal/tree.yaml shipped in the package).

Two departures from LightningCLI's defaults, both for safety: a `--ckpt_path` never replaces the model's
arguments on the command line (LightningCLI would silently take the checkpoint's hyper-parameters, so a
checkpoint of another search would run, and overwrite, that search; the model instead refuses a checkpoint
that is not its own), and checkpoints are local files loaded weights-only (a URL is refused).

`--concept C --layer L` choose the default search's concept and layer together with the folders that go with
them (`out/causal/C-L/`, its checkpoints, `tb_logs/causal-C-L`), so one search never writes into another's.
`fit` and `test` end by listing the checkpoint, the TensorBoard run and the next command."""

from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningCLI

from lightning_gd.cli.console import command, print_outputs, shown_path
from lightning_gd.cli.help import HelpFormatter, lightning_parser_kwargs
from lightning_gd.errors import InvalidValue

SUBCOMMANDS = {
    "fit": "Train a model; alone, the causal unit search for `tree` on the embedded world (see --help).",
    "validate": "Run one validation epoch.",
    "test": "Run one test epoch.",
    "predict": "Run prediction.",
}
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_fit.yaml"
# TensorBoard opens on its time series, where a search's result is one group among Lightning's; its custom-scalars
# page opens on the search's own layout (`lightning_gd.causal.tensorboard.custom_scalars_layout`)
CUSTOM_SCALARS = "http://localhost:6006/#custom_scalars"


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

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        if subcommand in ("validate", "test"):
            join_latest_run(self.config[subcommand].trainer.get("logger"))

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        from lightning_gd.cli.pages import ResultPages
        from lightning_gd.cli.progress import console_callbacks

        return super()._instantiate_trainer(config, [*callbacks, *console_callbacks(config), ResultPages()])


def join_latest_run(logger) -> None:
    """`test` and `validate` log into the latest TensorBoard run of their logger's name (the `fit` they measure)
    instead of opening a run of their own, unless the command line names a version."""
    loggers = logger if isinstance(logger, list) else [logger]
    for one in loggers:
        args = getattr(one, "init_args", None)
        if not str(getattr(one, "class_path", "")).endswith("TensorBoardLogger") or args is None:
            continue
        if args.get("version") is not None:
            continue
        folder = Path(args.get("save_dir") or ".") / (args.get("name") or "lightning_logs")
        versions = [int(d.name[8:]) for d in folder.glob("version_*") if d.is_dir() and d.name[8:].isdigit()]
        if versions:
            args["version"] = max(versions)


def check_ckpt_path(ckpt_path: str) -> None:
    """A local checkpoint file, or one of Lightning's names for the run's own (`last`, `best`, `hpc`, `registry`)."""
    if ckpt_path in ("last", "best", "hpc", "registry") or ckpt_path.startswith("registry:"):
        return
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", ckpt_path):
        raise InvalidValue(f"--ckpt_path {ckpt_path} is a URL; lightning_gd loads local checkpoints only")
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")


SHORTCUTS = ("concept", "layer")
DEFAULT_SEARCH = {"concept": "tree", "layer": "layer4"}  # as in default_fit.yaml


def expand_shortcuts(args: list[str]) -> list[str]:
    """`--concept C` / `--layer L` (after the subcommand) → the default search's model arguments, its output and
    checkpoint folders and its TensorBoard run name, all named `C-L`."""
    chosen, rest, i = {}, [args[0]], 1
    while i < len(args):
        name, eq, value = args[i][2:].partition("=") if args[i].startswith("--") else ("", "", "")
        if name in SHORTCUTS:
            if not eq:
                if i + 1 >= len(args):
                    raise InvalidValue(f"--{name} needs a value")
                i, value = i + 1, args[i + 1]
            chosen[name] = value
        else:
            rest.append(args[i])
        i += 1
    if not chosen:
        return args
    if _names_a_model(rest[1:]):
        raise InvalidValue(
            "--concept and --layer choose the default search's concept and layer; with --config or --model set "
            "--model.init_args.concept / .layer / .out, the logger's name and the checkpoint dirpath together"
        )
    c = {**DEFAULT_SEARCH, **chosen}
    run = f"{c['concept']}-{c['layer']}"
    return [
        *rest[:1],
        "--model.concept",
        c["concept"],
        "--model.layer",
        c["layer"],
        "--model.out",
        f"out/causal/{run}",
        "--trainer.logger.init_args.name",
        f"causal-{run}",
        "--trainer.callbacks.init_args.dirpath",
        f"out/causal/{run}/checkpoints",
        *rest[1:],
    ]


def run_lightning(argv: list[str] | None) -> LightningCLI:
    """LightningCLI on `argv` (None: the process's own command line), then the closing listing."""
    args = expand_shortcuts(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        sys.argv = [sys.argv[0], *args]  # LightningCLI reads the process's own command line
    started = time.time()
    cli = _project_cli(args, None if argv is None else args)
    if cli.trainer.is_global_zero:
        report_run(cli, args, started)
    return cli


def _project_cli(args: list[str], argv: list[str] | None) -> LightningCLI:
    defaults = [] if _names_a_model(args[1:]) else [str(DEFAULT_CONFIG)]
    return ProjectCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={  # jsonargparse gives every subcommand its parent's formatter
            "formatter_class": HelpFormatter,
            **{name: {"default_config_files": defaults, **lightning_parser_kwargs(name)} for name in SUBCOMMANDS},
        },
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                # no `hp_metric = -1` placeholder: a model logs its real result with its hyper-parameters
                "init_args": {"save_dir": "tb_logs", "default_hp_metric": False},
            }
        },
        args=argv,
    )


def report_run(cli: LightningCLI, args: list[str], started: float) -> None:
    """What `fit` / `test` wrote and what comes next (printed after Lightning's progress bars have closed)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    trainer, model = cli.trainer, cli.model
    tb = next((Path(lg.log_dir) for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    ckpt = trainer.checkpoint_callback
    last = Path(ckpt.last_model_path or ckpt.best_model_path) if ckpt is not None else None
    last = last if last is not None and last.is_file() and last.stat().st_mtime >= started - 1 else None
    steps = []
    out, hp = getattr(model, "out", None), getattr(model, "hparams", {})
    search = out is not None and "concept" in hp  # a causal search
    if args[0] == "fit" and last is not None and search:  # its test is the ACE (a GAN or segmenter has none)
        test = command("test", *_without_ckpt_path(args[1:]), "--ckpt_path", shown_path(last))
        steps.append(test + "   (ACE on held-out z)")
    context = (
        command(
            "context",
            "--causal",
            out,
            "--concept",
            hp.get("concept"),
            "--layer",
            hp.get("layer"),
            "--out",
            f"out/context/{Path(str(out)).name}",
            # the constant the search inserted with (k_c, context's own default, is left implicit)
            *(["--insertion", hp["insertion"]] if hp.get("insertion", "k_c") != "k_c" else []),
        )
        + "   (where the units can insert it)"
    )
    if args[0] in ("fit", "test") and search and tb is not None:
        view = f"tensorboard --logdir {shlex.quote(shown_path(tb))}, then open {CUSTOM_SCALARS}"
        steps.insert(0, view + "   (the search's result, δ and α by epoch)")
    if args[0] == "fit" and search:
        steps.append(context)
    if args[0] == "fit" and not search and last is not None and hasattr(model, "generator"):
        # a GAN's training run: how its units emerged over the checkpoints (paper Fig. 18)
        steps.append(command("dissect-checkpoints", last.parent) + "   (unit emergence over the checkpoints)")
    if args[0] == "test" and search:
        steps += [
            context,
            command("paint", "--results", Path(out).parent, "--layer", hp["layer"]) + "   (paint with the units)",
            command("causal-summary", f"[{out}]") + "   (with other searches: the removal chart)",
        ]
    if trainer.interrupted and args[0] == "fit":  # Ctrl-C: continuing comes first
        steps = [command("fit", *_without_ckpt_path(args[1:]), "--ckpt_path", "last") + "   (continue this run)"]
    written = [*getattr(model, "written", []), *([last] if last is not None else [])]
    print_outputs(written, tb, steps)


def _without_ckpt_path(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--ckpt_path":
            skip = True
        elif not a.startswith("--ckpt_path="):
            out.append(a)
    return out

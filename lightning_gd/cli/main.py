"""`python -m lightning_gd <subcommand>`: Lightning's own `fit` / `validate` / `test` / `predict`, plus the
project's subcommands.

A project subcommand is a library function and a report (`lightning_gd.cli.commands.COMMANDS`, an explicit
list; plugins such as the embedded world add theirs through the zoo); jsonargparse builds its parser from the
function's signature and docstring, so `--help`, `--print_config` and `--config` work the same way, and a
mistyped key is an error that names it.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import sys
import traceback
import types
import typing
from collections.abc import Callable

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_gd import allocator, zoo
from lightning_gd.cli.commands import COMMANDS, Command
from lightning_gd.cli.config_files import check_config_files, install_bounded_yaml
from lightning_gd.cli.console import quiet_third_party
from lightning_gd.cli.help import HelpFormatter, description, parse_docstring, usage
from lightning_gd.cli.lightning import SUBCOMMANDS, run_lightning
from lightning_gd.errors import InvalidValue, UserError
from lightning_gd.latents import MAX_SEED


def project_commands() -> dict[str, Command]:
    """The project's subcommands and those the zoo's plugins add (e.g. the world's `demo`)."""
    # a plugin's `out` is its own business (export-world writes one file, possibly into a source checkout's package)
    plugins = {name: Command(fn, output_folder=False) for name, fn in zoo.commands().items()}
    return {**COMMANDS, **plugins}


def _usage() -> str:
    project = project_commands()
    width = max(map(len, [*SUBCOMMANDS, *project]))
    lines = ["usage: python -m lightning_gd <subcommand> [--config FILE] [--help] [options]", "", "subcommands:"]
    for name, text in SUBCOMMANDS.items():
        lines.append(f"  {name:<{width}}  {text}")
    for name, command in sorted(project.items()):
        summary = parse_docstring(command.run.__doc__)[0]
        lines.append(f"  {name:<{width}}  {summary}")
    lines += ["", "`python -m lightning_gd <subcommand> --help` shows the options of one subcommand."]
    return "\n".join(lines)


def _positionals_to_options(fn: Callable, argv: list[str]) -> list[str]:
    """Leading positional arguments fill the required parameters in order: `export-world gan --checkpoint x`
    is `export-world --model gan --checkpoint x`."""
    required = [p.name for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
    out, i = [], 0
    while i < len(argv) and i < len(required) and not argv[i].startswith("-"):
        out += [f"--{required[i]}", argv[i]]
        i += 1
    return out + argv[i:]


def _list_options(fn: Callable) -> dict[str, bool]:
    """The options of `fn` whose type admits a list (`list[str] | str | None`, `list[Path]`, …), each with
    whether its items are numbers (`list[int]`): only those turn "3,17" into numbers; `--layers 0,2` names
    the children "0" and "2" of an `nn.Sequential`."""
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that does not resolve here: leave its values to jsonargparse
        return {}
    found = {}
    for name, hint in hints.items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [k for k in (typing.get_args(hint) if union else (hint,)) if typing.get_origin(k) is list]
        if kinds:
            found[name] = any(item in (int, float) for k in kinds for item in typing.get_args(k))
    return found


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _bare_lists_to_lists(fn: Callable, argv: list[str]) -> list[str]:
    """A list option also takes one bare value or comma-separated values: `--layers layer4` and `--layers
    layer3,layer4` mean `--layers "[layer4]"` and `--layers "[layer3, layer4]"`. (jsonargparse would take a bare
    value as a plain string, or for `list[Path]` as the name of a file that lists paths.)"""
    lists, out, i = _list_options(fn), [], 0
    while i < len(argv):
        name, eq, value = argv[i][2:].partition("=") if argv[i].startswith("--") else ("", "", "")
        if name in lists and not eq and i + 1 < len(argv):
            i, value = i + 1, argv[i + 1]
        elif name not in lists or not eq:
            out.append(argv[i])
            i += 1
            continue
        bare = not value.lstrip().startswith(("[", "-")) and value not in ("", "null")
        items = [_scalar(v.strip()) if lists[name] else v.strip() for v in value.split(",") if v.strip()]
        out += [f"--{name}", json.dumps(items) if bare else value]
        i += 1
    return out


def _zoo_help(parser: ArgumentParser) -> None:
    """Name the zoo's registered specs in the help of --generator and --segmenter."""
    for action in parser._actions:  # jsonargparse has no public accessor for one option's help
        kind = action.dest if action.dest in ("generator", "segmenter") else None
        if kind is not None and action.help:
            names = ", ".join(zoo.names(kind))
            action.help = f"{action.help.rstrip('.')}. Zoo names (`name` or `name:PATH`, see docs/models.md): {names}."


def run_project_subcommand(name: str, argv: list[str]):
    command = project_commands()[name]
    argv = _bare_lists_to_lists(command.run, _positionals_to_options(command.run, argv))
    text = description(*parse_docstring(command.run.__doc__))
    parser = ArgumentParser(usage=usage(name), description=text, exit_on_error=True, formatter_class=HelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the options below.")
    parser.add_function_arguments(command.run, as_group=False)
    _zoo_help(parser)
    cfg = parser.parse_args(argv)
    kwargs = {k: v for k, v in parser.instantiate_classes(cfg).items() if k not in ("config", "__path__")}
    for key, value in kwargs.items():  # here, where the option's name is known; latents.rng checks them too
        if key.endswith("seed") and isinstance(value, int) and not 0 <= value <= MAX_SEED:
            raise InvalidValue(f"--{key} {value}: a seed is an integer in [0, {MAX_SEED}]")
    return command(**kwargs)


# A user's mistake (`lightning_gd.errors.UserError`: a bad value, an unknown name, a file of the wrong kind), a
# fault of the machine (OSError: a missing file, a full disk, no permission; the message names the path) and a
# file refused because loading it could run code end with one line on stderr and exit status 2; LIGHTNING_GD_DEBUG=1
# or --debug shows the traceback instead. Any other exception is a bug in lightning_gd: its traceback is shown.
USER_ERRORS = (UserError, OSError, pickle.UnpicklingError)
DEBUG_ENV = "LIGHTNING_GD_DEBUG"
BUG_LINE = (
    "this is a bug in lightning_gd, not a mistake in what you typed: please report it with the traceback above and "
    "the command line"
)


def main(argv: list[str] | None = None) -> None:
    quiet_third_party()
    install_bounded_yaml()
    allocator.tune()
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
    if "--debug" in argv:
        argv.remove("--debug")
        if from_sys:
            sys.argv = [sys.argv[0], *argv]  # LightningCLI reads the process's own command line
    try:
        _dispatch(argv, from_sys)
    except Exception as err:
        if debug:
            raise
        mistake = user_error_of(err)
        if mistake is None:
            traceback.print_exc()
            sys.stderr.write(f"{BUG_LINE}\n")
            sys.exit(1)
        sys.stderr.write(f"error: {error_message(mistake)}\n(run with --debug, or {DEBUG_ENV}=1, for the traceback)\n")
        sys.exit(2)


def user_error_of(err: BaseException) -> BaseException | None:
    """`err` if it is one of `USER_ERRORS`, or the one it was raised from: jsonargparse and Lightning re-raise what a
    class's `__init__` raised as their own ValueError `from` it. Only explicit causes count: an exception raised
    while handling a user error (a bug in the handler) is not one."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, USER_ERRORS):
            return err
        err, seen = err.__cause__, seen + 1
    return None


def error_message(err: BaseException) -> str:
    """The message of an exception as a sentence (a KeyError's own str() is its repr'd key)."""
    if isinstance(err, pickle.UnpicklingError):
        first = str(err).strip().splitlines()[-3:] if str(err) else []
        return (
            "refused to load a file that holds Python objects other than weights (loading it could run code from "
            f"it; lightning_gd loads weights only): {' '.join(line.strip() for line in first if line.strip())}"
        )
    union = re.search(r'Union subtypes.*?Errors:\n\s*- "?(.+?)"?\n', str(err), re.S)
    if union:  # jsonargparse reports a class that failed to build as a union of every type it tried: keep ours
        return union.group(1)
    plain_key_error = isinstance(err, KeyError) and type(err).__str__ is KeyError.__str__
    text = err.args[0] if plain_key_error and err.args and isinstance(err.args[0], str) else str(err)
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return text or type(err).__name__


def _dispatch(argv: list[str], from_sys: bool) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name = argv[0]
    check_config_files(argv)
    if name in SUBCOMMANDS:
        run_lightning(None if from_sys else argv)
    elif name in project_commands():
        run_project_subcommand(name, argv[1:])
    else:
        import difflib

        close = difflib.get_close_matches(name, [*SUBCOMMANDS, *project_commands()], n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        sys.stderr.write(f"error: unknown subcommand '{name}'.{hint}\n\n{_usage()}\n")
        sys.exit(2)

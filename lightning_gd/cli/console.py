"""What the command line prints around the work: the closing listing every command ends with (what it wrote,
its TensorBoard run, the command a researcher would run next), and the third-party noise it keeps out."""

from __future__ import annotations

import logging
import shlex
import warnings
from collections.abc import Iterable
from pathlib import Path

PROGRAM = "python -m lightning_gd"


def command(subcommand: str, *args: object) -> str:
    """`python -m lightning_gd <subcommand> <args>`, each argument quoted for a POSIX shell where it needs it.

    >>> command("fit", "--concept", "tree", "--layer", "layer4")
    'python -m lightning_gd fit --concept tree --layer layer4'
    >>> command("causal-summary", "[out/causal/tree-layer4]")
    "python -m lightning_gd causal-summary '[out/causal/tree-layer4]'"
    """
    return " ".join([PROGRAM, subcommand, *(shlex.quote(str(a)) for a in args)])


def print_outputs(
    files: Iterable[str | Path] = (),
    tensorboard: str | Path | None = None,
    next_steps: Iterable[str] = (),
) -> None:
    """The closing listing: the files written (one per line), the TensorBoard run with the command that opens it,
    and the next commands.

    >>> print_outputs(["out/d/dissect.json"], "tb_logs/dissect-layer4", ["python -m lightning_gd fit"])
    wrote:
      out/d/dissect.json
    TensorBoard run: tb_logs/dissect-layer4  (tensorboard --logdir tb_logs/dissect-layer4)
    next: python -m lightning_gd fit
    """
    files = [shown_path(f) for f in files]
    if files:
        print("wrote:")
        for f in files:
            print(f"  {f}")
    if tensorboard is not None:
        tensorboard = shown_path(tensorboard)
        print(f"TensorBoard run: {tensorboard}  (tensorboard --logdir {shlex.quote(tensorboard)})")
    for step in next_steps:
        print(f"next: {step}")


def shown_path(path: str | Path) -> str:
    """A path as the user would type it: relative to the working folder when it lies under it."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return str(path)


# Lightning prints adverts for its cloud products as INFO records of its rank-zero logger, at the start of every
# fit and test; they say nothing about the run.
_ADVERT_PREFIX = "💡 Tip:"
# and, at the start of every run, which accelerators exist ("GPU available: False, used: False", TPU, HPU): the run's
# own device is in its config, and a GPU that is present but unused still gets Lightning's separate warning
_DEVICE_PREFIXES = ("GPU available:", "TPU available:", "HPU available:", "IPU available:")
# torch deprecated `LeafSpec`, which Lightning's own _pytree helper still builds: a FutureWarning per run, printed
# inside the sanity-check progress bar, about code the user neither wrote nor can change.
_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith((_ADVERT_PREFIX, *_DEVICE_PREFIXES))


def quiet_third_party() -> None:
    """Keep the known pieces of third-party noise out of the console, and nothing else: Lightning's "💡 Tip"
    adverts and device lines, and torch's LeafSpec deprecation warning triggered inside Lightning. Called by the
    command line only, so importing lightning_gd changes no logging or warning setting."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=_LEAFSPEC_WARNING, category=FutureWarning)

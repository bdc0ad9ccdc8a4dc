"""Jobs: what each command does, as one library function that a notebook, a callback or a web page can call
too. A job gets its networks from the zoo, runs a recipe, writes its reports and returns what it found; its
signature and docstring are also the command's options and help (`lightning_gd.cli`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def run_name(kind: str, out: str | Path, parts: Sequence[str] = ()) -> str:
    """A TensorBoard run name that says what ran: the kind of job, the output folder's name where it adds to it,
    and the layers (`parts`; more than three shortened to the first and last).

    >>> run_name("dissect", "out/dissect", ["layer4"])
    'dissect-layer4'
    >>> run_name("dissect", "out/dissect-iqr", ["layer4"])
    'dissect-iqr-layer4'
    >>> run_name("emergence", "out/my-gan", ["layer4"])
    'emergence-my-gan-layer4'
    >>> run_name("dissect", "out/dissect-all", [f"layer{i}" for i in range(1, 7)])
    'dissect-all-layer1-to-layer6'
    """
    folder = Path(out).name
    words = [kind] if folder in ("", kind) else [folder] if folder.startswith(f"{kind}-") else [kind, folder]
    parts = list(parts) if len(parts) <= 3 else [f"{parts[0]}-to-{parts[-1]}"]
    taken = set("-".join(words).split("-"))
    return "-".join([*words, *(p for p in parts if p not in taken)])

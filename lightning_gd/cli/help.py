"""How every subcommand's `--help` reads: one sentence, two or more example command lines, then the rest of the
description and the options without jsonargparse's type annotations (the option's own help says what it takes).

A project subcommand's text is its function's docstring: the description before `Args:`, and an `Examples:`
section of indented command lines (Google style, so jsonargparse's docstring parser keeps it out of the last
argument's help). Lightning's own subcommands take theirs from `LIGHTNING_HELP`.
"""

from __future__ import annotations

import inspect
import re

from jsonargparse import DefaultHelpFormatter

PROG = "python -m lightning_gd"
EXAMPLE_TITLES = ("Examples:", "Example:")
# a sentence ends at . ! or ? followed by a capital letter or the end ("Fig. 7" and "e.g. a" do not end one)
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s+[A-Z`]|\s*$)", re.S)

LIGHTNING_HELP = {
    "fit": (
        "Train a model chosen by `class_path` in a config; alone, the causal unit search for `tree` in layer4 of the "
        "embedded world (`configs/causal/tree.yaml`), writing out/causal/tree-layer4/.",
        [
            f"{PROG} fit",
            f"{PROG} fit --concept door --layer layer3",
            f"{PROG} fit --config configs/causal/building.yaml",
            f"{PROG} fit --ckpt_path last   # continue a killed search",
        ],
    ),
    "validate": (
        "Run one validation epoch; for a causal search, the share of its concept removed by the current top-n units.",
        [
            f"{PROG} validate --ckpt_path out/causal/tree-layer4/checkpoints/last.ckpt",
            f"{PROG} validate --concept door --layer layer3 --ckpt_path out/causal/door-layer3/checkpoints/last.ckpt",
        ],
    ),
    "test": (
        "Run one test epoch; for a causal search, the ACE of its units on held-out z, the ablation curve, the image "
        "grids and the folder's results page (index.html).",
        [
            f"{PROG} test --ckpt_path out/causal/tree-layer4/checkpoints/last.ckpt",
            f"{PROG} test --config configs/causal/door.yaml --ckpt_path out/causal/door-layer4/checkpoints/last.ckpt",
        ],
    ),
    "predict": (
        "Run prediction with a model and data chosen by `class_path` in a config of your own.",
        [
            f"{PROG} predict --config my_predict.yaml",
            f"{PROG} predict --config my_predict.yaml --ckpt_path my_run/checkpoints/last.ckpt",
        ],
    ),
}


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help with example lines kept as written, no `type: …` after each option, and no list of
    every known subclass after a class-typed option (for an `nn.Module` option that is every torch.nn class
    imported anywhere, over 200 lines under --generator, none of which is a generator)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if any(line.startswith("  ") for line in paragraph.splitlines()):  # example lines: as written
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_type_str(self, action) -> str | None:
        return None

    def _get_help_string(self, action) -> str:
        return re.sub(r",? ?known subclasses: [^)]*\)$", ")", super()._get_help_string(action), flags=re.S)


def parse_docstring(doc: str | None) -> tuple[str, list[str], str]:
    """(first sentence, example command lines, the rest of the description) of a command's docstring."""
    lines, examples, body, i = inspect.cleandoc(doc or "").splitlines(), [], [], 0
    while i < len(lines):
        if lines[i].strip() in EXAMPLE_TITLES:
            i += 1
            while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
                examples += [lines[i].strip()] if lines[i].strip() else []
                i += 1
            continue
        body.append(lines[i])
        i += 1
    description = " ".join("\n".join(body).split("Args:")[0].split())
    found = _SENTENCE.match(description)
    first = found.group(1) if found else description
    return first, examples, description[len(first) :].strip()


def description(first: str, examples: list[str], rest: str = "") -> str:
    """The text between the usage line and the options: the sentence, the examples (indented, kept as written by
    `HelpFormatter`), the rest."""
    shown = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else ""
    return "\n\n".join(part for part in (first, shown, rest) if part)


def usage(name: str) -> str:
    """One usage line instead of every option in brackets (the options follow, each with its help)."""
    return f"{PROG} {name} [--config FILE] [options]"


def lightning_parser_kwargs(name: str) -> dict:
    """The help text of one of Lightning's subcommands, as LightningCLI's `parser_kwargs` for it."""
    first, examples = LIGHTNING_HELP[name]
    return {"description": description(first, examples), "usage": usage(name)}

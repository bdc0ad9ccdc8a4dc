"""Every subcommand's `--help` opens with one sentence and at least two example command lines, names only options
the subcommand has, and shows no parser type annotations (`lightning_gd.cli.help`)."""

from __future__ import annotations

import re

import pytest

from lightning_gd import cli
from lightning_gd.cli.help import HelpFormatter, description, parse_docstring
from lightning_gd.cli.lightning import SHORTCUTS, SUBCOMMANDS
from lightning_gd.cli.main import project_commands

NAMES = [*SUBCOMMANDS, *sorted(project_commands())]


def _help(capsys, name: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_help_opens_with_a_sentence_and_two_examples(capsys, name):
    text = _help(capsys, name)
    usage, first, examples, *_ = text.split("\n\n")
    assert usage == f"usage: python -m lightning_gd {name} [--config FILE] [options]"
    sentence = " ".join(first.split())
    assert sentence.endswith(".") and sentence[0].isupper()
    assert parse_docstring(sentence)[0] == sentence  # one sentence, not the first of several
    title, *lines = examples.splitlines()
    assert title == "examples:" and len(lines) >= 2
    prefix = f"  python -m lightning_gd {name}"
    assert all(line == prefix or line.startswith(prefix + " ") for line in lines), lines
    options = set(re.findall(r"^  (?:-c CONFIG, )?(--[\w.]+)", text, re.M))
    shortcuts = {f"--{name}" for name in SHORTCUTS}  # the default search's --concept / --layer
    for option in re.findall(r"(?<= )--[\w.]+", "\n".join(lines)):
        assert option in options | shortcuts, f"{name} --help: its example uses {option}, which it does not take"
    assert "(type:" not in text and "known subclasses" not in text


def test_docstring_examples_are_kept_out_of_the_description():
    doc = """Do one thing (paper Fig. 7). Then say more, e.g. how.

    Args:
        n: how many.

    Examples:
        python -m lightning_gd thing
        python -m lightning_gd thing --n 3
    """
    first, examples, rest = parse_docstring(doc)
    assert first == "Do one thing (paper Fig. 7)."
    assert examples == ["python -m lightning_gd thing", "python -m lightning_gd thing --n 3"]
    assert rest == "Then say more, e.g. how."
    text = HelpFormatter("prog", width=40)._fill_text(description(first, examples, rest), 40, "")
    assert "\n  python -m lightning_gd thing --n 3\n" in text  # example lines are never rewrapped
    assert text.endswith("Then say more, e.g. how.")

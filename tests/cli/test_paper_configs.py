"""Every config under configs/paper/ parses through each command its header runs it with, without running: the
published networks and images they need are not here, but a mistyped key or a value of the wrong type shows."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from lightning_gd import cli

ROOT = Path(__file__).resolve().parents[2]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


def header_commands(path: Path) -> list[str]:
    """The subcommands the config's comment header runs it with (`python -m lightning_gd fit --config <it>`,
    `torchrun … -m lightning_gd dissect \\ --config <it>`)."""
    pattern = rf"-m lightning_gd ([\w-]+)[\s\\#]*--config configs/paper/{re.escape(path.name)}"
    return sorted(set(re.findall(pattern, path.read_text())))


def contains(given, printed) -> bool:
    """Whether every value the file gives is in the printed (resolved) config, which adds the defaults."""
    if isinstance(given, dict):
        return isinstance(printed, dict) and all(k in printed and contains(v, printed[k]) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(printed, list) and len(given) == len(printed) and all(map(contains, given, printed))
    return given == printed


CASES = [(path, command) for path in PAPER for command in header_commands(path)]


def test_every_paper_config_names_its_commands():
    assert len(PAPER) >= 7 and {p.name for p, _ in CASES} == {p.name for p in PAPER}


@pytest.mark.parametrize("path, command", CASES, ids=[f"{p.stem}-{c}" for p, c in CASES])
def test_a_paper_config_parses_through_its_command(path, command, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])  # LightningCLI reads the process's own command line
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--config", f"configs/paper/{path.name}", "--print_config"])
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err[-2000:]
    given, printed = yaml.safe_load(path.read_text()), yaml.safe_load(captured.out)
    assert contains(given, printed), captured.out


def test_the_multi_gpu_config_is_the_papers_scale():
    config = yaml.safe_load((ROOT / "configs" / "paper" / "dissect-churchoutdoor-8gpu.yaml").read_text())
    assert config["n"] == 10000 and config["threshold"] == "iqr" and config["parts"] is True
    assert config["trainer"] == {"accelerator": "gpu", "devices": 8, "num_nodes": 1, "strategy": "ddp"}

"""The command line: `python -m lightning_gd` lists and dispatches subcommands (Lightning's, the project's and the
world's), and rejects typos with the bad name.

One subprocess (it pays for importing torch): `python -m lightning_gd --help`. An unknown subcommand and typo
errors run in this process. Lightning's subcommands are tested in test_lightning.py, the project's in test_commands.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_gd import cli

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "world"


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_gd", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_help_lists_every_subcommand():
    proc = run_module("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("usage: python -m lightning_gd <subcommand>")
    listed = {line.split()[0] for line in lines if line.startswith("  ")}
    assert {"fit", "validate", "test", "demo", "export-world", "world-card"} <= listed
    assert "Export a world model" in proc.stdout  # summaries come from the docstrings


def test_unknown_subcommand_fails_and_suggests_the_close_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demoo"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2  # a usage error, like argparse's
    assert "unknown subcommand 'demoo'" in stderr
    assert "Did you mean: demo?" in stderr
    assert "export-world" in stderr  # followed by the list of subcommands


def test_user_errors_end_with_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    args = ["compare", "--dissections", f"[{tmp_path / 'nowhere'}]", "--out", str(tmp_path / "c")]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: no dissection at {tmp_path / 'nowhere'}") and "--debug" in err
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself, with its traceback
        cli.main([*args, "--debug"])
    monkeypatch.setenv("LIGHTNING_GD_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(args)


@pytest.fixture
def in_repo(monkeypatch):
    """Run `cli.main` here as `python -m lightning_gd` would from the repository root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["lightning_gd"])


@pytest.mark.parametrize(
    "argv, bad",
    [
        (["fit", "--config", "configs/world/gan.yaml", "--trainer.max_stepz", "3"], "max_stepz"),
        (["fit", "--config", "configs/world/gan.yaml", "--model.init_args.z_dimm", "3"], "z_dimm"),
        (["export-world", "--model", "gan", "--checkpoint", "x.ckpt", "--outt", "y"], "outt"),
    ],
    ids=["trainer-key", "model-key", "project-subcommand-key"],
)
def test_mistyped_key_exits_nonzero_naming_it(in_repo, capsys, argv, bad):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code not in (0, None)
    assert bad in capsys.readouterr().err

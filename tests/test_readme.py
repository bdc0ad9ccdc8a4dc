"""The README's 'your own generator and segmenter' example runs as written: the Python file and the command."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_own_networks_example_runs(tmp_path):
    (python,) = [b for b in _blocks("python") if b.startswith("# my_models.py")]
    (command,) = [b for b in _blocks("bash") if "my_models.DCGAN" in b]
    (tmp_path / "my_models.py").write_text(python)
    run = subprocess.run([sys.executable, "my_models.py"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "'layer': 'layer2', 'units': 32" in run.stdout
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:3] == ["python", "-m", "lightning_gd"]
    run = subprocess.run([sys.executable, *args[1:], "--tb_dir", "null"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "out/my-dissect/dissect.json").read_text())
    assert doc["vocabulary"]["names"] == ["dark", "bright"] and len(doc["layers"]["layer2"]["units"]) == 32

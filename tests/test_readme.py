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


def test_readme_opens_with_the_quickstart_and_stays_short():
    """The first code block is the two commands a newcomer runs (the CI runs the second); the quickstart after it
    fits on a screen and the reference lives in docs/."""
    text = README.read_text()
    assert len(text.splitlines()) < 400
    first = _blocks("bash")[0].splitlines()
    assert first[0].startswith("# 1. install and run the main job") and first[1].endswith("python -m lightning_gd fit")
    assert first[3].startswith("# 2. install the test extras") and first[4].endswith("python -m pytest")
    quickstart = text.split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    assert len(quickstart.strip().splitlines()) <= 24
    steps = ("lightning_gd test", "tree-layer4/index.html", "lightning_gd dissect", "report.html", "lightning_gd paint")
    for step in steps:
        assert step in quickstart


def test_links_and_images_of_the_readme_and_docs_resolve():
    pages = [README, *sorted((README.parent / "docs").glob("*.md"))]
    assert len(pages) > 5
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)[^)]*\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: {target}"

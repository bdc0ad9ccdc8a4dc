"""The scripts under docs/ that turn finished runs into the tables of the docs: the insertion table (both of its
tables) from context results written by hand, and the λ rule from probes already on disk (no fit is run)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lightning_gd.results import ContextResult
from tests.results.samples import causal, context

DOCS = Path(__file__).resolve().parent.parent / "docs"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def context_run(folder: Path, insertion: str, grass: float, sky: float, rows: bool) -> Path:
    doc = context()
    doc["settings"] |= {"concept": "tree", "region": 2, "insertion": insertion}
    row = {"effect": 0.1, "ci": [0.05, 0.15], "appear_rate": 0.9, "respond_rate": 0.5, "count": 64, "count_free": 40}
    doc["by_background"] = {
        "grass": {**row, "appear_rate_guarded": grass} | ({"appear_by_row": [None, grass, 0.5]} if rows else {}),
        "sky": {**row, "appear_rate_guarded": sky} | ({"appear_by_row": [sky, None, None]} if rows else {}),
    }
    ContextResult.from_document(doc).save(folder)
    return folder


def test_the_insertion_tables(tmp_path):
    table = script("insertion_table")
    runs = [
        context_run(tmp_path / "a", "q0.999", 0.8, 0.2, rows=True),
        context_run(tmp_path / "b", "k_c", 0.5, 0.5, rows=False),
    ]
    lines = table.table(runs, ("grass", "sky")).splitlines()
    assert lines[2] == (
        "| 2×2 | q0.999 | 90.0 % (80.0 %) | 90.0 % (20.0 %) | 0.25 | 0.1000 [0.0500, 0.1500] | "
        "0.1000 [0.0500, 0.1500] |"
    )
    assert lines[3].startswith("| 2×2 | k_c | 90.0 % (50.0 %) | 90.0 % (50.0 %) | 1.00 |")
    rows = table.row_table(runs, ("grass", "sky")).splitlines()
    assert rows[0] == "| square | constant | background | row 0 | row 1 | row 2 |"
    assert rows[2:] == ["| 2×2 | q0.999 | grass | - | 80.0 % | 50.0 % |", "| 2×2 | q0.999 | sky | 20.0 % | - | - |"]
    assert table.row_table(runs[1:], ("grass", "sky")) == ""  # a run from before appear_by_row: no second table


def probe_folder(root: Path, concept: str, lam: float, alphas: list[float]) -> None:
    doc = causal()
    doc["concept"], doc["settings"]["lam"], doc["top_n"] = concept, lam, 2
    doc["units"] = [{"unit": u, "alpha": a, "iou": 0.1} for u, a in enumerate(alphas)]
    out = root / f"{concept}-{lam:g}" / "out" / "causal" / f"{concept}-layer4"
    out.mkdir(parents=True)
    (out / "causal.json").write_text(json.dumps(doc))


def test_the_lambda_rule_reads_cached_probes_and_stops_at_the_first_accepted(tmp_path, monkeypatch, capsys):
    rule = script("choose_lambda")
    probe_folder(tmp_path, "tree", 0.1, [0.003, 0.001, 0.0])  # collapsed
    probe_folder(tmp_path, "tree", 0.03, [1.0, 0.7, 0.2])  # accepted
    monkeypatch.setattr(rule, "config_lam", lambda concept: 0.03)
    monkeypatch.setattr("sys.argv", ["choose_lambda.py", "--concepts", "tree", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        rule.main()
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "| tree | 0.1 | 0.003 | 0 | 0 | α collapsed | - |" in out
    assert "| tree | 0.03 | 1 | 1 | 2 | accepted | - |" in out
    assert "tree: λ = 0.03, as configs/causal/tree.yaml has" in out
    assert not (tmp_path / "tree-0.01").exists()  # the rule stopped at 0.03
    monkeypatch.setattr(rule, "config_lam", lambda concept: 0.1)
    with pytest.raises(SystemExit) as done:
        rule.main()
    assert done.value.code == 1
    assert "the rule picks λ = 0.03; configs/causal/tree.yaml has 0.1" in capsys.readouterr().out


def test_the_lambda_rule_refuses_a_probe_written_with_another_lambda(tmp_path):
    rule = script("choose_lambda")
    probe_folder(tmp_path, "door", 0.1, [1.0, 0.0])
    wrong = tmp_path / "door-0.03"
    (tmp_path / "door-0.1").rename(wrong)
    with pytest.raises(SystemExit, match="written with λ = 0.1, not 0.03: delete"):
        rule.probe("door", 0.03, tmp_path)

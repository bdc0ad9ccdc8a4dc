"""The realism filter (paper §S-6.3) as the `dissect` subcommand applies it: `--realism unit_fid.json` with
`--max_unit_fid` leaves units above the threshold out of the labels; a missing, foreign or mismatched per-unit FID
file is refused (`lightning_gd.realism.filter.load_unit_fid`) before the long passes run."""

from __future__ import annotations

import json

import pytest

from lightning_gd.cli import main as cli_main
from tests.helpers import DOME_SHARE

pytestmark = pytest.mark.usefixtures("one_thread", "cli_debug")  # user errors raise (see conftest)


def scores(layer: str, unit_fid: list[float], **extra) -> dict:
    """A unit_fid.json document as `artifacts` writes it."""
    ranking = sorted(range(len(unit_fid)), key=lambda u: -unit_fid[u])
    ablation = [{"ablation": "original", "units": [], "fid": 50.0}]
    return {
        "version": 1,
        "layer": layer,
        "n": 40,
        "top_k": 4,
        "ranking": ranking,
        "unit_fid": unit_fid,
        "ablation": ablation,
        **extra,
    }


def test_dissect_subcommand_realism(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    realism = tmp_path / "unit_fid.json"
    realism.write_text(json.dumps(scores("layer1", [99.0, 1.0, 2.0])))
    argv = [
        "dissect",
        *("--generator", json.dumps({"class_path": "tests.helpers.PlantedGenerator"})),
        *("--segmenter", json.dumps({"class_path": "tests.helpers.ColourSegmenter"})),
        *("--layers", "[layer1]", "--n", "40", "--batch_size", "40", "--q", str(1 - DOME_SHARE), "--top_k", "4"),
        *("--out", str(out), "--tb_dir", str(tmp_path / "tb")),
    ]
    cli_main([*argv, "--realism", str(realism), "--max_unit_fid", "50"])
    printed = capsys.readouterr().out
    assert "realism filter: 1 units of layer1 with per-unit FID > 50.0 left out" in printed
    doc = json.loads((out / "dissect.json").read_text())["layers"]["layer1"]
    assert doc["summary"]["unrealistic"] == [0] and "dome" not in doc["summary"]["per_concept"]
    assert [u["realistic"] for u in doc["units"]] == [False, True, True]
    assert doc["units"][0]["label"] == "dome" and not doc["units"][0]["interpretable"]

    cli_main([*argv, "--realism", str(realism), "--max_unit_fid", "100"])  # nothing above 100
    doc = json.loads((out / "dissect.json").read_text())["layers"]["layer1"]
    assert doc["summary"]["unrealistic"] == [] and doc["units"][0]["interpretable"]
    assert "realism filter: 0 units" in capsys.readouterr().out

    with pytest.raises(ValueError, match="--max_unit_fid"):
        cli_main([*argv, "--realism", str(realism)])
    with pytest.raises(ValueError, match="--realism"):
        cli_main([*argv, "--max_unit_fid", "50"])
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        cli_main([*argv, "--realism", str(tmp_path / "nowhere.json"), "--max_unit_fid", "50"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps(scores("layer2", [1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="layer2"):
        cli_main([*argv, "--realism", str(other), "--max_unit_fid", "50"])
    short = tmp_path / "short.json"
    short.write_text(json.dumps(scores("layer1", [1.0, 1.0])))
    with pytest.raises(ValueError, match="2 units"):
        cli_main([*argv, "--realism", str(short), "--max_unit_fid", "50"])
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(scores("layer1", [1.0] * 3, generator_fingerprint="0123abcd")))
    with pytest.raises(ValueError, match="scored on another generator"):
        cli_main([*argv, "--realism", str(foreign), "--max_unit_fid", "50"])


def test_a_malformed_per_unit_fid_file_is_named_before_the_dissection(tmp_path, monkeypatch):
    """All-NaN per-unit FIDs never exceed the threshold: they switched the filter off unseen. Now the file is refused,
    naming the field, before any pass runs."""
    import lightning_gd.jobs.dissect as job
    from lightning_gd.results import ResultError

    monkeypatch.setattr(job, "run_dissection", lambda *a, **k: pytest.fail("the dissection ran"))
    argv = [
        "dissect",
        *("--generator", json.dumps({"class_path": "tests.helpers.PlantedGenerator"})),
        *("--segmenter", json.dumps({"class_path": "tests.helpers.ColourSegmenter"})),
        *("--layers", "[layer1]", "--out", str(tmp_path / "run"), "--tb_dir", str(tmp_path / "tb")),
        "--max_unit_fid",
        "50",
    ]
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(scores("layer1", [float("nan")] * 3)))
    with pytest.raises(ResultError, match=rf"{nan}: unit_fid\[0\]: expected a finite number, got NaN"):
        cli_main([*argv, "--realism", str(nan)])
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([scores("layer1", [1.0] * 3)]))
    with pytest.raises(ResultError, match=rf"{listed}: expected an object \(a unit_fid.json document\), got a list"):
        cli_main([*argv, "--realism", str(listed)])
    assert not (tmp_path / "run").exists()

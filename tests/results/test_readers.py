"""Every reader of a results file goes through its loader: a malformed file (the probe of issue 26 found a
causal.json that was a list, NaN in dissect.json and ace.json, all-NaN per-unit FIDs) is refused with an error
naming the file and the field, before any computation where there is one, instead of a TypeError/AttributeError
traceback, a NaN copied into another file or a silent change of behaviour."""

from __future__ import annotations

import json
import math
import re

import pytest

from lightning_gd.results import ResultError
from tests.helpers import ColourSegmenter, PlantedGenerator
from tests.results.samples import DOCUMENTS, write

pytestmark = pytest.mark.usefixtures("one_thread")


def refused(call, *needles: str) -> str:
    with pytest.raises(ResultError) as err:
        call()
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    return str(err.value)


def a_list(folder, name):
    return write(folder, name, [DOCUMENTS[name]()])


def never(*args, **kwargs):
    pytest.fail("the computation ran before the malformed file was refused")


def test_compare_refuses_nan_instead_of_copying_it(tmp_path):
    from lightning_gd.jobs.dissect import compare

    doc = DOCUMENTS["dissect.json"]()
    doc["layers"]["layer4"]["summary"]["mean_iou"] = math.nan
    path = write(tmp_path / "d", "dissect.json", doc)
    refused(
        lambda: compare([tmp_path / "d"], out=tmp_path / "c"),
        f"{path}: layers.layer4.summary.mean_iou: expected a finite number, got NaN",
    )
    assert not (tmp_path / "c" / "compare.json").exists()
    write(tmp_path / "d", "dissect.json", DOCUMENTS["dissect.json"]())
    rows = compare([tmp_path / "d"], out=tmp_path / "c")
    assert rows[0]["mean_iou"] == 0.255 and json.loads((tmp_path / "c" / "compare.json").read_text())["version"] == 1


def test_causal_summary_refuses_nan_instead_of_printing_nan_percent(tmp_path):
    from lightning_gd.jobs.causal import causal_summary

    doc = DOCUMENTS["ace.json"]()
    doc["removed_at_top_n"]["alpha"] = math.nan
    path = write(tmp_path / "run", "ace.json", doc)
    refused(
        lambda: causal_summary([tmp_path / "run"], out=tmp_path / "s"),
        f"{path}: removed_at_top_n.alpha: expected a finite number or null, got NaN",
    )
    doc["removed_at_top_n"]["alpha"] = None  # undefined (the concept never occurred): shown as a dash
    write(tmp_path / "run", "ace.json", doc)
    table = causal_summary([tmp_path / "run"], out=tmp_path / "s")
    assert "| tree | layer4 | 5.0% | 2 | – | 40.0% |" in table and "nan" not in table


def test_causal_summary_command_reads_the_first_run_through_its_loader(tmp_path, monkeypatch, capsys):
    from lightning_gd.cli import commands

    path = a_list(tmp_path / "run", "ace.json")
    options = {"runs": [str(tmp_path / "run")], "out": str(tmp_path / "s")}
    refused(lambda: commands._causal_summary("table", options, 0.0), f"{path}: expected an object")


def test_paint_palette_refuses_a_causal_json_that_is_a_list(tmp_path):
    from lightning_gd.paint.session import find_results

    path = a_list(tmp_path / "causal" / "tree-layer4", "causal.json")
    refused(
        lambda: find_results(tmp_path, "layer4"), f"{path}: expected an object (a causal.json document), got a list"
    )
    write(tmp_path / "causal" / "tree-layer4", "causal.json", DOCUMENTS["causal.json"]())
    doc = DOCUMENTS["dissect.json"]()
    doc["layers"]["layer4"]["units"][0]["interpretable"] = "yes"
    path = write(tmp_path / "dissect", "dissect.json", doc)
    refused(
        lambda: find_results(tmp_path, "layer4"),
        f"{path}: layers.layer4.units[0].interpretable: expected true or false",
    )


def test_dissect_refuses_a_malformed_causal_json_beside_it_before_the_passes(tmp_path, monkeypatch):
    """The browser's causal column reads the searches beside the output folder: a list there crashed every
    `dissect` after the full computation."""
    import lightning_gd.jobs.dissect as job

    monkeypatch.setattr(job, "run_dissection", never)
    path = a_list(tmp_path / "causal", "causal.json")
    refused(
        lambda: job.dissect(
            "layer1",
            generator=PlantedGenerator(),
            segmenter=ColourSegmenter(),
            n=8,
            out=tmp_path / "dissect",
            tb_dir=None,
            cache_dir=None,
        ),
        f"{path}: expected an object (a causal.json document), got a list of 1",
    )
    assert not (tmp_path / "dissect").exists()


def test_context_refuses_a_malformed_causal_search_before_measuring(tmp_path, monkeypatch):
    import lightning_gd.jobs.context as job

    monkeypatch.setattr(job, "measure_context", never)
    doc = DOCUMENTS["causal.json"]()
    doc["units"][0] = [2, 1.0]
    path = write(tmp_path / "search", "causal.json", doc)
    refused(
        lambda: job.context(
            "dome",
            "layer1",
            generator=PlantedGenerator(),
            segmenter=ColourSegmenter(),
            causal=tmp_path / "search",
            out=tmp_path / "ctx",
            tb_dir=None,
            cache_dir=None,
        ),
        f"{path}: units[0]: expected an object, got a list of 2",
    )


def test_results_pages_refuse_their_own_malformed_file_and_skip_a_neighbours(tmp_path):
    from lightning_gd.reports.pages import write_page

    doc = DOCUMENTS["unit_fid.json"]()
    doc["unit_fid"] = [math.nan] * 3
    path = write(tmp_path / "artifacts", "unit_fid.json", doc)
    refused(lambda: write_page(tmp_path / "artifacts"), f"{path}: unit_fid[0]: expected a finite number, got NaN")
    write(tmp_path / "artifacts", "unit_fid.json", DOCUMENTS["unit_fid.json"]())
    emergence = DOCUMENTS["emergence.json"]()["history"]
    emergence[1]["interpretable"] = "2"
    bad = write(tmp_path / "emergence", "emergence.json", emergence)  # the old bare-list layout, one bad field
    with pytest.warns(UserWarning, match=re.escape(f"{bad}: history[1].interpretable: expected an integer")):
        page = write_page(tmp_path / "artifacts")
    assert "emergence" not in page.read_text() and "410.2" in page.read_text()


def test_the_browser_causal_column_reads_searches_through_the_loader(tmp_path):
    from lightning_gd.reports.dissection import find_causal

    write(tmp_path / "causal" / "tree-layer4", "causal.json", DOCUMENTS["causal.json"]())
    (found,) = find_causal(tmp_path, {"generator": "world"})
    assert found["concept"] == "tree" and found["path"] == str(tmp_path / "causal" / "tree-layer4")
    doc = DOCUMENTS["causal.json"]()
    doc["top_n"] = "20"
    path = write(tmp_path / "causal" / "tree-layer4", "causal.json", doc)
    refused(lambda: find_causal(tmp_path), f"{path}: top_n: expected an integer, got the string '20'")


def test_a_test_run_names_a_malformed_causal_json_in_its_warning(tmp_path):
    from lightning_gd.causal.diagnosis import stale_checkpoint

    assert stale_checkpoint(tmp_path, [2, 0]) is None  # no file to compare with
    write(tmp_path, "causal.json", DOCUMENTS["causal.json"]())
    assert stale_checkpoint(tmp_path, [2, 0]) is None
    assert "are not those of" in stale_checkpoint(tmp_path, [1, 0])
    a_list(tmp_path, "causal.json")
    said = stale_checkpoint(tmp_path, [2, 0])
    assert said.startswith(f"{tmp_path / 'causal.json'}: expected an object") and "cannot check" in said

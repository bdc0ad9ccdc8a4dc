"""The result classes: every one round-trips through save and load, reads a file written before schema versions
as version 1, and refuses each family of malformed file (not an object, a missing key, NaN, a string where a
number belongs, an unknown or older schema version, unreadable JSON) with an error naming the file and the field."""

from __future__ import annotations

import json
import math
import re

import pytest

from lightning_gd import results
from lightning_gd.results import CLASSES, AceResult, DissectionResult, ResultError
from tests.results.samples import DOCUMENTS, write

NAMES = sorted(DOCUMENTS)
# per file, a field that must be a finite number, and how the error names it
NUMBERS = {
    "dissect.json": (["layers", "layer4", "units", 1, "iou"], "layers.layer4.units[1].iou"),
    "causal.json": (["units", 0, "alpha"], "units[0].alpha"),
    "ace.json": (["presence"], "presence"),
    "context.json": (["by_background", "building", "effect"], "by_background.building.effect"),
    "unit_fid.json": (["unit_fid", 1], "unit_fid[1]"),
    "emergence.json": (["history", 0, "mean_iou"], "history[0].mean_iou"),
    "compare.json": (["rows", 1, "mean_iou"], "rows[1].mean_iou"),
    "causal_summary.json": (["runs", 1, "presence"], "runs[1].presence"),
}


def edited(name: str, keys: list, value):
    doc = DOCUMENTS[name]()
    target = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return doc


def fails(path, *needles: str) -> str:
    with pytest.raises(ResultError) as err:
        results.load(path)
    text = str(err.value)
    for needle in needles:
        assert needle in text, text
    return text


@pytest.mark.parametrize("name", NAMES)
def test_load_of_save_round_trips(name, tmp_path):
    cls = CLASSES[name]
    original = cls.from_document(DOCUMENTS[name]())
    written = original.save(tmp_path / "a")
    assert written == tmp_path / "a" / name
    again = results.load(tmp_path / "a")  # the folder: the class is picked from the file it holds
    assert type(again) is cls and again == original
    assert json.loads(written.read_text()) == DOCUMENTS[name]()  # the layout is the jobs' layout, version included
    assert again.save(tmp_path / "b").read_bytes() == written.read_bytes()
    assert cls.load(written) == original == results.load(written)


@pytest.mark.parametrize("name", NAMES)
def test_a_file_without_a_schema_version_is_read_as_version_1(name, tmp_path):
    doc = DOCUMENTS[name]()
    del doc["version"]
    cls = CLASSES[name]
    expected = cls.from_document(DOCUMENTS[name]())
    assert results.load(write(tmp_path, name, doc)) == expected
    if cls.LIST_FIELD is not None:  # written as a bare list before the version field
        assert results.load(write(tmp_path, name, doc[cls.LIST_FIELD])) == expected


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_or_older_schema_version_is_refused(name, tmp_path):
    path = write(tmp_path, name, {**DOCUMENTS[name](), "version": 99})
    fails(path, f"{path}: schema version 99 is newer than this lightning_gd reads (1): upgrade lightning_gd")
    write(tmp_path, name, {**DOCUMENTS[name](), "version": 0})
    command = CLASSES[name].WRITTEN_BY
    fails(path, f"{path}: schema version 0 is older than this lightning_gd reads (1): write it again with `{command}`")
    write(tmp_path, name, {**DOCUMENTS[name](), "version": "1"})
    fails(path, f"{path}: version: expected an integer schema version, got the string '1'")


@pytest.mark.parametrize("name", NAMES)
def test_a_list_instead_of_an_object_is_named(name, tmp_path):
    path = write(tmp_path, name, [DOCUMENTS[name]()])
    if CLASSES[name].LIST_FIELD is None:
        fails(path, f"{path}: expected an object (a {name} document), got a list of 1")
    else:  # a bare list is the old layout of these files: its items are checked
        field = CLASSES[name].LIST_FIELD
        fails(path, f"{path}: {field}[0].", ": missing (expected ")
    keys, field = NUMBERS[name]
    path = write(tmp_path, name, edited(name, keys, [1.0]))
    fails(path, f"{path}: {field}: expected a finite number", "got a list of 1")


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_key_is_named(name, tmp_path):
    required = next(iter(CLASSES[name].SCHEMA.required))
    doc = DOCUMENTS[name]()
    del doc[required]
    path = write(tmp_path, name, doc)
    fails(path, f"{path}: {required}: missing (expected ")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_where_a_number_must_be_finite_is_named(name, value, tmp_path):
    keys, field = NUMBERS[name]
    path = write(tmp_path, name, edited(name, keys, value))
    shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    fails(path, f"{path}: {field}: expected a finite number", f"got {shown}")


@pytest.mark.parametrize("name", NAMES)
def test_a_string_where_a_number_belongs_is_named(name, tmp_path):
    keys, field = NUMBERS[name]
    path = write(tmp_path, name, edited(name, keys, "12.5"))
    fails(path, f"{path}: {field}: expected a finite number", "got the string '12.5'")
    path = write(tmp_path, name, edited(name, keys, True))  # JSON's true is no number, though Python's bool is
    fails(path, f"{path}: {field}: expected a finite number", "got true")


@pytest.mark.parametrize("name", NAMES)
def test_unreadable_json_is_named(name, tmp_path):
    path = tmp_path / name
    path.write_text(json.dumps(DOCUMENTS[name]())[:40])
    fails(path, f"{path} is not a readable {name}: ")
    path.write_bytes(b"\xff\xfe{")
    fails(path, f"{path} is not a readable {name}: ")


def test_rules_between_fields_are_named(tmp_path):
    doc = DOCUMENTS["dissect.json"]()
    doc["layers"]["layer4"]["units"][2]["label"] = "dome"
    fails(write(tmp_path, "dissect.json", doc), "layers.layer4.units[2].label: 'dome' is not in vocabulary.names")
    doc = DOCUMENTS["unit_fid.json"]()
    doc["ranking"][0] = 7
    fails(write(tmp_path, "unit_fid.json", doc), "ranking[0]: unit 7 is out of range: unit_fid has units 0 … 2")
    doc = DOCUMENTS["causal.json"]()
    doc["units"][1]["unit"] = 2
    fails(write(tmp_path, "causal.json", doc), "units[1].unit: unit 2 is ranked twice")
    doc = DOCUMENTS["emergence.json"]()
    doc["history"].reverse()
    fails(write(tmp_path, "emergence.json", doc), "history: expected measurements in step order, got steps [200, 100]")
    doc = DOCUMENTS["context.json"]()
    doc["k_c"].append(1.0)
    fails(write(tmp_path, "context.json", doc), "k_c: expected one value per inserted unit (2), got 3")


def test_a_result_that_would_not_load_again_is_not_saved(tmp_path):
    result = DissectionResult.from_document(DOCUMENTS["dissect.json"]())
    result.layers["layer4"]["units"][0]["iou"] = math.nan
    with pytest.raises(ResultError, match=re.escape("cannot save ") + ".*dissect.json: layers.layer4.units\\[0\\].iou"):
        result.save(tmp_path)
    assert not (tmp_path / "dissect.json").exists()


def test_undefined_shares_of_a_test_are_stored_as_null(tmp_path):
    summary = {k: v for k, v in DOCUMENTS["ace.json"]().items() if k != "version"}
    summary["removed_at_top_n"]["alpha"] = math.nan  # the concept never occurred in the held-out sample
    summary["ablation_removed"]["alpha"] = [math.nan] * 3
    result = AceResult.from_summary(summary)
    assert result.removed_at_top_n["alpha"] is None and result.ablation_removed["alpha"] == [None] * 3
    text = result.save(tmp_path).read_text()
    assert "NaN" not in text and results.load(tmp_path) == result


def test_load_picks_the_class_or_says_why_it_cannot(tmp_path):
    write(tmp_path / "run", "causal.json", DOCUMENTS["causal.json"]())
    assert type(results.load(tmp_path / "run")) is results.CausalSearchResult
    write(tmp_path / "run", "ace.json", DOCUMENTS["ace.json"]())
    with pytest.raises(ResultError, match="holds causal.json and ace.json: name the file to load"):
        results.load(tmp_path / "run")
    assert type(results.load(tmp_path / "run" / "ace.json")) is AceResult
    assert set(results.load_folder(tmp_path / "run")) == {"causal.json", "ace.json"}
    renamed = write(tmp_path, "scores.json", DOCUMENTS["unit_fid.json"]())
    with pytest.raises(ResultError, match="not a results file name .*UnitFidResult.load"):
        results.load(renamed)
    assert results.UnitFidResult.load(renamed).layer == "layer4"
    with pytest.raises(FileNotFoundError, match="holds no results file"):
        results.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no dissect.json at .*`python -m lightning_gd dissect` writes it"):
        DissectionResult.load(tmp_path / "run")

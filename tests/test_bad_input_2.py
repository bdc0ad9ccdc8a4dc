"""The second hardening round (issue 26), from the command line as a user meets each case: output folders a run
may not own, two runs into one folder, a full cache disk, empty and degenerate arguments, YAML bombs, unclear
one-liners, and the line between a user's mistake (one line, exit 2) and a bug (traceback, exit 1)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

import lightning_gd
from lightning_gd.cli import main
from lightning_gd.outputs import LOCK_NAME, output_lock
from tests.test_bad_input import COLOUR, PLANTED, SMALL, fails, snapshot


def dissect_args(out: Path | str, cache: Path) -> list[str]:
    return ["dissect", *PLANTED, *COLOUR, *SMALL, "--out", str(out), "--cache_dir", str(cache)]


@pytest.fixture
def dissected(tmp_path, one_thread) -> Path:
    out = tmp_path / "run"
    main(dissect_args(out, out / "cache"))
    return out


@pytest.fixture
def no_work(monkeypatch):
    import lightning_gd.jobs.dissect as job

    monkeypatch.setattr(job, "run_dissection", lambda *a, **k: pytest.fail("computed before checking its inputs"))


# ----------------------------------------------------------------------------------------------- output folders


@pytest.mark.parametrize(
    "out, message",
    [
        ("/", "is a shared folder"),
        ("/etc/lightning_gd", "is a system folder"),
        ("/proc/self", "is a system folder"),
        ("/tmp", "is a shared folder"),
        ("PACKAGE/reports", "is inside the lightning_gd package"),
        (".", "is the working folder or one that holds it"),
        ("..", "is the working folder or one that holds it"),
    ],
)
def test_an_output_folder_the_run_may_not_own(out, message, tmp_path, capsys, no_work):
    out = out.replace("PACKAGE", str(Path(lightning_gd.__file__).parent))
    err = fails(dissect_args(out, tmp_path / "cache"), capsys)
    assert f"output folder {out} {message}" in err, err
    assert not (Path(lightning_gd.__file__).parent / "reports" / "dissect.json").exists()


@pytest.mark.parametrize("key", ["tb_dir", "cache_dir"])
def test_the_tensorboard_and_cache_folders_follow_the_output_rules(key, tmp_path, capsys, no_work):
    args = [*dissect_args(tmp_path / "out", tmp_path / "cache"), f"--{key}", "/"]  # the last value wins
    err = fails(args, capsys)
    assert f"--{key} / is a shared folder" in err, err
    assert not (tmp_path / "out").exists()


def test_the_output_folder_is_not_the_cache(tmp_path, capsys, no_work):
    err = fails(dissect_args(tmp_path / "cache" / "d", tmp_path / "cache"), capsys)
    assert "is inside --cache_dir" in err and not (tmp_path / "cache").exists()


def test_compare_with_no_dissections_keeps_the_folder(tmp_path, capsys):
    out = tmp_path / "c"
    out.mkdir()
    (out / "compare.json").write_text('[{"kept": 1}]')
    (out / "compare.png").write_bytes(b"png")
    before = snapshot(out)
    err = fails(["compare", "--dissections", "[]", "--out", str(out)], capsys)
    assert "dissections is empty" in err and snapshot(out) == before


def test_wrote_lists_only_the_runs_own_files(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("a file of the user's, changed just before the run")
    main(dissect_args(out, tmp_path / "cache"))
    listing = capsys.readouterr().out.split("wrote:")[1]
    assert "dissect.json" in listing and "notes.txt" not in listing and LOCK_NAME not in listing
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--out", "/"], "output folder / is a shared folder"),
        (["world-card", "--n", "4", "--out", "/"], "output folder / is a shared folder"),
        (["world-card", "--n", "4", "--out", "/etc/cards"], "output folder /etc/cards is a system folder"),
        (["world-card", "--n", "2", "--out", "OUT"], "world-card needs n ≥ 4 samples per measurement"),
    ],
)
def test_the_worlds_commands_check_their_output_folder_first(args, message, tmp_path, capsys, monkeypatch):
    """demo wrote world_samples.png into /; world-card created its folder before measuring (a failed measurement
    left it empty) and with n = 2 failed inside torch-fidelity's precision and recall with a traceback."""
    import lightning_gd.world.cards as cards

    monkeypatch.setattr(cards, "measure", lambda *a, **k: pytest.fail("measured before checking --out and n"))
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    err = fails(args, capsys)
    assert message in err, err
    assert not (tmp_path / "o").exists() and not Path("/world_samples.png").exists()


def test_world_card_creates_no_folder_when_its_measurement_fails(tmp_path, capsys):
    err = fails(["world-card", "--n", "4", "--weights", str(tmp_path / "none"), "--out", str(tmp_path / "c")], capsys)
    assert "not found" in err and not (tmp_path / "c").exists()


# ----------------------------------------------------------------------------------------------- two runs


def test_a_second_run_into_the_same_folder_stops_at_once(tmp_path, capsys, no_work):
    out = tmp_path / "shared"
    with output_lock(out):  # the first run, still writing
        err = fails(dissect_args(out, tmp_path / "cache"), capsys)
    assert f"another run is writing into {out} (process " in err and "choose another output folder" in err
    assert not out.exists()  # the first run created it and, with nothing written, removed it


def test_the_lock_is_free_again_after_a_failure(tmp_path, capsys, one_thread):
    out = tmp_path / "o"
    fails([*dissect_args(out, tmp_path / "cache"), "--layers", "layer9"], capsys)  # fails inside the run
    with output_lock(out):
        assert (out / LOCK_NAME).is_file()
    assert not out.exists()


def test_two_threads_cannot_hold_one_folder(tmp_path):
    held, results = threading.Event(), []

    def first():
        with output_lock(tmp_path / "x"):
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    with pytest.raises(lightning_gd.errors.UserError, match="another run is writing"):
        with output_lock(tmp_path / "x"):
            results.append("second")
    thread.join()
    assert results == []


# ----------------------------------------------------------------------------------------------- faults


def test_a_full_cache_disk_keeps_the_work(tmp_path, capsys, monkeypatch, one_thread):
    import lightning_gd.cache as cache

    real = cache.save_atomic

    def full(tensors, path, metadata=None):
        if Path(path).is_relative_to(tmp_path / "cache"):
            raise OSError(28, "No space left on device", str(path))
        return real(tensors, path, metadata)

    monkeypatch.setattr(cache, "save_atomic", full)
    with pytest.warns(UserWarning, match=r"No space left on device.*used without caching it") as caught:
        main(dissect_args(tmp_path / "out", tmp_path / "cache"))
    assert any(str(tmp_path / "cache") in str(w.message) for w in caught)
    assert (tmp_path / "out" / "dissect.json").is_file()


def test_a_tensorboard_folder_that_cannot_be_written_keeps_the_results(tmp_path, capsys, one_thread):
    """A read-only or full --tb_dir failed the run after the work, and the finished dissection was not written."""
    (tmp_path / "file").write_text("x")
    args = [*dissect_args(tmp_path / "out", tmp_path / "cache"), "--tb_dir", str(tmp_path / "file" / "tb")]
    with pytest.warns(UserWarning, match=r"TensorBoard log in .*file/tb not written .*results are written without it"):
        main(args)
    assert (tmp_path / "out" / "dissect.json").is_file() and (tmp_path / "out" / "report.html").is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    from lightning_gd.cache import atomic_write

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'a.json'}: No space left on device"):
        atomic_write(tmp_path / "a.json", b"{}")


# ----------------------------------------------------------------------------------------------- empty arguments


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", ""], r"empty layer name"),
        (["--layers", "[]"], r"--layers is empty: name at least one layer"),
        (["--layers", "layer1,"], None),  # a trailing comma is no empty name: the bare list drops it
        (["--n", "1"], None),  # one sample: its top image list is all its candidates (one storage, saved once)
        (["--seed", "1e23"], r"key \"seed\":\s+Expected a <class 'int'>. Got value: 1e\+23"),
        (["--seed", "10" * 12], r"--seed 101010101010101010101010: a seed is an integer in \[0, 1099511627776\]"),
        (["--iqr_seed", "-5"], r"--iqr_seed -5: a seed is an integer in \[0,"),
    ],
)
def test_empty_and_degenerate_arguments(args, message, tmp_path, capsys, one_thread):
    base = dissect_args(tmp_path / "o", tmp_path / "cache")
    if message is None:
        main([*base, *args])
        assert (tmp_path / "o" / "dissect.json").is_file()
        return
    err = fails([*base, *args], capsys)
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


def test_dissect_checkpoints_with_no_checkpoints(tmp_path, capsys):
    err = fails(["dissect-checkpoints", "--checkpoints", "[]", "--out", str(tmp_path / "e")], capsys)
    assert "--checkpoints is empty" in err and not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--names", "[a, b]"], "--names has 2 label(s) for 1 dissection(s)"),
        (["--names", "[]"], "--names has 0 label(s) for 1 dissection(s)"),
        (["--names", "['']"], "--names has an empty label"),
        (["--layer", ""], "--layer is empty"),
    ],
)
def test_compare_refuses_labels_and_layers_that_do_not_fit(args, message, dissected, tmp_path, capsys):
    err = fails(["compare", "--dissections", f"[{dissected}]", *args, "--out", str(tmp_path / "c")], capsys)
    assert message in err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("option", ["--generator", "--segmenter"])
def test_an_empty_zoo_spec_is_refused(option, tmp_path, capsys):
    """`--segmenter ''` dissected with the default segmenter (its next line suggested `--model.segmenter ''`);
    `--generator ''` asked for --layers, naming ProGAN's."""
    err = fails(["dissect", option, "", "--out", str(tmp_path / "o")], capsys)
    assert f"empty {option[2:]} spec: name one of the zoo's (" in err and "world" in err
    assert not (tmp_path / "o").exists()


def test_context_with_no_units(tmp_path, capsys):
    err = fails(["context", "--concept", "tree", "--units", "[]", "--out", str(tmp_path / "c")], capsys)
    assert "--units is empty" in err and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("progan:g.pth?tanh=maybe", "spec option tanh='maybe' in 'progan:g.pth?tanh=maybe': expected true or false"),
        ("progan:g.pth?tanh=1", "expected true or false"),
        ("progan:g.pth?tanh=true&tanh=false", "spec option 'tanh' is given twice"),
        ("progan:g.pth?tahn=true", "unknown option 'tahn' in the spec 'progan:g.pth?tahn=true'; its options: weights"),
    ],
)
def test_spec_options_are_parsed_strictly(spec, message, tmp_path, capsys):
    err = fails(["dissect", "--generator", spec, "--layers", "layer4", "--out", str(tmp_path / "o")], capsys)
    assert message in err, err


def test_a_specs_weights_are_not_replaced_by_an_unset_option(tmp_path, capsys):
    (tmp_path / "mine.pt").write_bytes(b"not weights")
    spec = f"world?weights={tmp_path / 'mine.pt'}"
    err = fails(["dissect", "--generator", spec, *SMALL, "--out", str(tmp_path / "o")], capsys)
    assert f"{tmp_path / 'mine.pt'}" in err  # the spec's file was read, not the shipped weights
    other = ["--generator_weights", str(tmp_path / "other.pt")]
    err = fails(["dissect", "--generator", spec, *other, *SMALL, "--out", str(tmp_path / "o")], capsys)
    assert "weights is given twice" in err


# ----------------------------------------------------------------------------------------------- configs


def test_a_yaml_bomb_is_refused_quickly(tmp_path, capsys):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nn: *i\n")
    started = time.perf_counter()
    err = fails(["dissect", "--config", str(tmp_path / "bomb.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert time.perf_counter() - started < 30
    assert "expands to more than 100,000 values through its aliases" in err


def test_a_deeply_nested_yaml_is_refused(tmp_path, capsys):
    (tmp_path / "deep.yaml").write_text("layers: " + "[" * 5000 + "]" * 5000 + "\n")
    err = fails(["dissect", "--config", str(tmp_path / "deep.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert "nested more than 64 levels deep" in err or "exceeded maximum nesting depth" in err  # PyYAML's own limit


@pytest.mark.parametrize(
    "text, message",
    [
        (b"\x00\xff\x13\x37" * 100, "is not a YAML text file (not UTF-8"),
        (b"", "is empty: it sets no option"),
        (b"# only a comment\n", "is empty: it sets no option"),
        (b"\tn: 16\n", "line 1: indented with a tab; YAML indents with spaces"),
        (b"n: 16\nn: 32\n", "line 2: the key 'n' is given twice (YAML keeps the last)"),
    ],
)
def test_a_config_file_is_named_with_what_is_wrong(text, message, tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(text)
    err = fails(["dissect", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert f"--config {tmp_path / 'c.yaml'}" in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_the_shipped_configs_pass_the_config_checks():
    from lightning_gd.cli.config_files import check_config_files

    root = Path(lightning_gd.__file__).parents[1]
    files = [*root.glob("configs/**/*.yaml"), *Path(lightning_gd.__file__).parent.glob("**/*.yaml")]
    assert files
    for path in files:
        check_config_files(["--config", str(path)])  # raises on a tab, a repeated key, an empty file


# ----------------------------------------------------------------------------------------------- results files


def _set(doc: dict, keys: list, value) -> dict:
    target = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return doc


L4 = ["layers", "layer4"]


@pytest.mark.parametrize(
    "name, keys, value, message",
    [
        ("dissect.json", [*L4, "summary", "interpretable"], -5, "summary.interpretable: expected a count in [0, 3]"),
        ("dissect.json", [*L4, "summary", "interpretable"], 10**30, "interpretable: expected a count in [0, 3]"),
        ("dissect.json", [*L4, "summary", "per_concept", "tree"], 9, "per_concept.tree: expected a count in [0, 3]"),
        ("dissect.json", [*L4, "units"], [], "summary.units: expected the number of entries in units (0), got 3"),
        ("dissect.json", ["layers"], {}, "settings.layers names layer4, which layers does not hold"),
        ("dissect.json", [*L4, "featuremap_size"], [0, 0], "featuremap_size: expected two sizes ≥ 1, got [0, 0]"),
        ("causal.json", ["top_units"], [99, 98], "top_units: units [99, 98] are not among the ranked units"),
        ("causal.json", ["top_n"], 1000, "top_n: expected at most the number of ranked units"),
        ("causal.json", ["concept"], "", "concept: expected a name, got an empty string"),
        ("ace.json", ["removed_at_top_n", "alpha"], 5.0, "removed_at_top_n.alpha: expected a share of the concept's"),
        ("ace.json", ["ablation_removed", "alpha"], [], "ablation_removed.alpha: expected one share per size in sizes"),
        ("ace.json", ["concept"], "", "concept: expected a name, got an empty string"),
        ("unit_fid.json", ["ranking"], [], "ranking: expected every unit 0 … 2 once"),
        ("context.json", ["by_background", "building", "ci"], [1, 0], "by_background.building.ci: expected [low"),
    ],
)
def test_a_results_file_that_contradicts_itself_is_named(name, keys, value, message, tmp_path, capsys):
    """Values each of the right type, but impossible together: a negative or too large count, a list that does
    not match its summary, a share above 1, an empty name. Read through `report` (compare for dissect.json, which
    reads only the JSON), they end in one line naming file and field, and nothing is drawn."""
    from tests.results.samples import DOCUMENTS, write

    folder = tmp_path / "r"
    write(folder, name, _set(DOCUMENTS[name](), keys, value))
    args = ["compare", "--dissections", f"[{folder}]", "--out", str(tmp_path / "c")]
    err = fails(args if name == "dissect.json" else ["report", "--folder", str(folder)], capsys)
    assert f"{folder / name}: " in err and message in err, err
    assert sorted(p.name for p in folder.iterdir()) == [name] and not (tmp_path / "c").exists()


def test_a_context_json_with_no_units_is_refused(tmp_path, capsys):
    from tests.results.samples import DOCUMENTS, write

    write(tmp_path / "r", "context.json", {**DOCUMENTS["context.json"](), "units": [], "k_c": []})
    err = fails(["report", "--folder", str(tmp_path / "r")], capsys)
    assert "context.json: units: expected at least one inserted unit" in err


def test_a_deeply_nested_results_file_is_one_line(dissected, tmp_path, capsys):
    (dissected / "dissect.json").write_text("[" * 100_000 + "]" * 100_000)
    err = fails(["compare", "--dissections", f"[{dissected}]", "--out", str(tmp_path / "c")], capsys)
    assert f"{dissected / 'dissect.json'} is not a readable dissect.json: nested too deeply" in err


# ----------------------------------------------------------------------------------------------- unclear one-liners


def test_a_dissect_json_without_settings_is_named(dissected, tmp_path, capsys):
    doc = json.loads((dissected / "dissect.json").read_text())
    del doc["settings"]
    (dissected / "dissect.json").write_text(json.dumps(doc))
    err = fails(["compare", "--dissections", f"[{dissected}]", "--out", str(tmp_path / "c")], capsys)
    assert str(dissected / "dissect.json") in err and "settings" in err and err.strip() != "error: settings"


def test_a_string_mean_iou_is_named(dissected, tmp_path, capsys):
    doc = json.loads((dissected / "dissect.json").read_text())
    doc["layers"]["layer1"]["summary"]["mean_iou"] = "high"
    (dissected / "dissect.json").write_text(json.dumps(doc))
    err = fails(["compare", "--dissections", f"[{dissected}]", "--out", str(tmp_path / "c")], capsys)
    assert str(dissected / "dissect.json") in err and "mean_iou" in err and "ufunc" not in err


def test_a_causal_checkpoint_given_to_export_world_gan(tmp_path, capsys):
    torch.save({"state_dict": {}, "hyper_parameters": {"concept": "tree", "layer": "layer4"}}, tmp_path / "c.ckpt")
    err = fails(["export-world", "gan", "--checkpoint", str(tmp_path / "c.ckpt")], capsys)
    assert f"{tmp_path / 'c.ckpt'} is not a world gan training checkpoint: its hyper-parameters lack sizes" in err
    assert "(it has: concept, layer)" in err


# ----------------------------------------------------------------------------------------------- mistakes and bugs


def test_a_bug_shows_its_traceback_and_says_so(tmp_path, capsys, monkeypatch):
    import lightning_gd.jobs.dissect as job

    def bug(*args, **kwargs):
        return {}["a key the code forgot"]

    monkeypatch.setattr(job, "run_dissection", bug)
    with pytest.raises(SystemExit) as exit_info:
        main(dissect_args(tmp_path / "o", tmp_path / "cache"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "Traceback" in err and "KeyError: 'a key the code forgot'" in err
    assert "this is a bug in lightning_gd" in err


def test_a_user_error_raised_inside_a_class_is_still_one_line(tmp_path, capsys):
    err = fails(["fit", "--model.init_args.concept", "tre", "--model.init_args.out", str(tmp_path / "o")], capsys)
    assert err.startswith("error: unknown concept 'tre' (did you mean tree?)")

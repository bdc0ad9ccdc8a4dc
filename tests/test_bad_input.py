"""Every bad input and fault of the robustness issue, from the command line as a user meets them: one clear line
on stderr and exit status 2 (no traceback), nothing lost or overwritten, nothing downloaded or unpickled."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from lightning_gd import zoo
from lightning_gd.cli import main

PLANTED = ["--generator", '{"class_path": "tests.helpers.PlantedGenerator"}', "--layers", "layer1"]
COLOUR = ["--segmenter", '{"class_path": "tests.helpers.ColourSegmenter"}']
SMALL = ["--n", "32", "--batch_size", "16", "--tb_dir", "null"]


def fails(args: list[str], capsys) -> str:
    """Run the command line; it must exit with status 2 and one error line (no traceback). Returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and "error" in err.lower(), err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dissected(tmp_path, one_thread) -> Path:
    out = tmp_path / "run"
    main(["dissect", *PLANTED, *COLOUR, *SMALL, "--out", str(out), "--cache_dir", str(out / "cache")])
    return out


# ----------------------------------------------------------------------------------------------- values and names


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iou_threshold", "-1"], r"iou_threshold.*-1 does not conform to restriction v>=0 and v<=1"),
        (["--n", "0"], r"n.*0 does not conform to restriction v>0"),
        (["--q", "1.5"], r"q.*1.5 does not conform"),
        (["--threshold", "otsu"], r"threshold.*otsu"),
        (["--stride", "999"], r"stride 999 is larger than the 64×64 segmentation"),
        (["--trainer.accelerator", "gpu", "--trainer.devices", "[99]"], r"--trainer.accelerator gpu.*(gpu|only has)"),
        (["--trainer.accelerator", "gpuu"], r"invalid accelerator name: `accelerator='gpuu'`. Available names"),
        (["--trainer.strategy", "dpp"], r"invalid strategy name: `strategy='dpp'`"),
        (["--layers", "layer9"], r"no layer 'layer9' in PlantedGenerator; closest matches: layer1"),
        (["--generator", "wrld"], r"unknown generator 'wrld' \(did you mean world\?\)"),
        (["--generator_weights", "missing.pt"], r"weights file not found: missing.pt"),
        (["--realism", "nowhere.json"], r"needs both --realism"),
    ],
)
def test_bad_values_are_one_clear_line(args, message, tmp_path, capsys, one_thread):
    base = [*PLANTED, *COLOUR] if "--generator" not in args else ["--layers", "layer4"]
    out = ["--out", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")]
    err = fails(["dissect", *base, *SMALL, *out, *args], capsys)
    assert re.search(message, err, re.S), err
    assert not (tmp_path / "out").exists()  # checked before anything was written


def test_unknown_concept_and_layer_in_a_causal_search(tmp_path, capsys):
    err = fails(["fit", "--model.init_args.concept", "tre", "--model.init_args.out", str(tmp_path / "o")], capsys)
    assert "unknown concept 'tre' (did you mean tree?)" in err


def test_a_broken_segmenter_is_named(tmp_path, capsys, one_thread):
    nan = ["--segmenter", '{"class_path": "tests.helpers.NaNSegmenter"}']
    err = fails(
        ["dissect", *PLANTED, *nan, *SMALL, "--out", str(tmp_path / "a"), "--cache_dir", str(tmp_path / "cache")],
        capsys,
    )
    assert "NaNSegmenter returned NaN or Inf scores" in err
    wrong = ["--segmenter", '{"class_path": "tests.helpers.WrongChannelsSegmenter"}']
    err = fails(
        ["dissect", *PLANTED, *wrong, *SMALL, "--out", str(tmp_path / "b"), "--cache_dir", str(tmp_path / "cache")],
        capsys,
    )
    assert "WrongChannelsSegmenter returned scores of shape (1, 3, 64, 64); expected (B, 4, H, W)" in err


def test_world_card_needs_samples(capsys):
    assert "0 does not conform to restriction v>0" in fails(["world-card", "--n", "0"], capsys)


# ----------------------------------------------------------------------------------------------- files


def test_weights_files(tmp_path, capsys, one_thread):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    err = fails(
        [
            "dissect",
            *SMALL,
            "--generator_weights",
            str(tmp_path / "junk.pt"),
            "--out",
            str(tmp_path / "o"),
            "--cache_dir",
            str(tmp_path / "cache"),
        ],
        capsys,
    )
    assert f"{tmp_path / 'junk.pt'} is not readable as weights" in err
    torch.save(zoo.generator().state_dict(), tmp_path / "plain.pt")  # a plain torch state dict works
    main(
        [
            "dissect",
            *SMALL,
            "--generator_weights",
            str(tmp_path / "plain.pt"),
            "--out",
            str(tmp_path / "ok"),
            "--cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    assert (tmp_path / "ok" / "dissect.json").is_file()


def test_code_in_a_weights_file_never_runs(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"layer1.weight": Payload()}, tmp_path / "evil.pt")
    err = fails(
        [
            "dissect",
            *SMALL,
            "--generator_weights",
            str(tmp_path / "evil.pt"),
            "--out",
            str(tmp_path / "o"),
            "--cache_dir",
            str(tmp_path / "cache"),
        ],
        capsys,
    )
    assert "not readable as weights" in err and not (tmp_path / "ran").exists()


def test_truncated_dissect_json_is_named(dissected, tmp_path, capsys):
    text = (dissected / "dissect.json").read_text()
    (dissected / "dissect.json").write_text(text[: len(text) // 2])
    err = fails(["compare", "--dissections", f"[{dissected}]", "--out", str(tmp_path / "c")], capsys)
    assert f"{dissected / 'dissect.json'} is not a readable dissect.json" in err


def test_output_folder_that_is_a_file_fails_before_the_work(tmp_path, capsys, monkeypatch):
    import lightning_gd.jobs.dissect as job

    monkeypatch.setattr(job, "run_dissection", lambda *a, **k: pytest.fail("computed before checking --out"))
    (tmp_path / "file").write_text("x")
    err = fails(
        ["dissect", *PLANTED, *COLOUR, *SMALL, "--out", str(tmp_path / "file"), "--cache_dir", str(tmp_path / "cache")],
        capsys,
    )
    assert f"output folder {tmp_path / 'file'}" in err and "is a file" in err


def test_a_failed_write_keeps_the_previous_outputs(dissected, capsys, monkeypatch, one_thread):
    """Disk full halfway through writing the reports: the previous run's files stay, whole, and no temporary
    file or staging folder is left behind."""
    import lightning_gd.reports.dissection as report

    before = snapshot(dissected)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_html", disk_full)  # dissect.json and iou-*.npy are written before it
    err = fails(
        [
            "dissect",
            *PLANTED,
            *COLOUR,
            *SMALL,
            "--out",
            str(dissected),
            "--cache_dir",
            str(dissected / "cache"),
            "--iou_threshold",
            "0.5",
        ],
        capsys,
    )
    assert "No space left on device" in err
    assert snapshot(dissected) == before
    assert not [p for p in dissected.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def test_export_never_writes_into_the_package(tmp_path, monkeypatch):
    from lightning_gd.world.export import export
    from lightning_gd.world.weights import WEIGHTS_DIR

    shipped = snapshot(WEIGHTS_DIR)
    from lightning_gd.zoo.progan import ProGAN

    G = ProGAN([8, 8, 8, 4, 4, 4])
    ckpt = {"state_dict": {f"generator.{k}": v for k, v in G.state_dict().items()}, "global_step": 2,
            "hyper_parameters": {"sizes": list(G.sizes)}}  # fmt: skip
    torch.save(ckpt, tmp_path / "gan.ckpt")
    monkeypatch.chdir(tmp_path)
    path = export("gan", tmp_path / "gan.ckpt", gan_weights="generator")
    assert path.resolve() == (tmp_path / "out/world/generator.safetensors").resolve()
    assert snapshot(WEIGHTS_DIR) == shipped


# ----------------------------------------------------------------------------------------------- caches


def test_a_cache_file_changed_on_disk_is_recomputed(dissected, tmp_path, capsys, one_thread):
    from safetensors.torch import load_file, save_file

    iou = json.loads((dissected / "dissect.json").read_text())["layers"]["layer1"]["units"][0]["iou"]
    from safetensors import safe_open

    paths = list((dissected / "cache").glob("dissect_quantile-*.safetensors"))
    assert paths
    for path in paths:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()  # its checksum kept: the file looks intact, but its values are wrong
        tensors = load_file(path)
        save_file({**tensors, "thresholds": torch.zeros_like(tensors["thresholds"])}, path, metadata=meta)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        main(["dissect", *PLANTED, *COLOUR, *SMALL, "--out", str(dissected), "--cache_dir", str(dissected / "cache")])
    assert json.loads((dissected / "dissect.json").read_text())["layers"]["layer1"]["units"][0]["iou"] == iou


# ----------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def planted_search(tmp_path_factory) -> tuple[list[str], Path]:
    out = tmp_path_factory.mktemp("search") / "dome"
    config = [
        "--model", "lightning_gd.causal.search.CausalSearch",
        "--model.init_args.generator", '{"class_path": "tests.helpers.CausalPlantedGenerator"}',
        "--model.init_args.segmenter", '{"class_path": "tests.helpers.ColourSegmenter"}',
        "--model.init_args.layer", "layer1", "--model.init_args.top_n", "2", "--model.init_args.kc_samples", "16",
        "--model.init_args.dissect_samples", "16", "--model.init_args.random_draws", "1",
        "--model.init_args.cache_dir", "null", "--model.init_args.progress", "false",
        "--data", "lightning_gd.latents.LatentDataModule", "--data.init_args.n_train", "16",
        "--data.init_args.n_val", "4", "--data.init_args.n_test", "4", "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    own = ["--model.init_args.out", str(out), "--trainer.default_root_dir", str(out)]
    main(["fit", *config, "--model.init_args.concept", "dome", *own])
    (ckpt,) = out.rglob("*.ckpt")
    return config, ckpt


@pytest.mark.parametrize("command", ["fit", "test"])
def test_a_checkpoint_of_another_search_is_refused(planted_search, tmp_path, capsys, command):
    config, ckpt = planted_search
    run = ckpt.parents[1]  # the search's own folder
    before = snapshot(run)
    other = tmp_path / "grass"
    args = [command, *config, "--model.init_args.concept", "grass", "--model.init_args.out", str(other)]
    args += ["--trainer.default_root_dir", str(tmp_path / "logs")]  # each run logs in its own folder
    err = fails([*args, "--ckpt_path", str(ckpt)], capsys)
    assert "this checkpoint is from another causal search (concept: checkpoint 'dome', this run 'grass')" in err
    assert snapshot(run) == before and not other.exists()


def test_a_checkpoint_url_is_refused(planted_search, capsys):
    config, _ = planted_search
    args = ["fit", *config, "--model.init_args.concept", "dome", "--ckpt_path", "http://127.0.0.1:9/evil.ckpt"]
    assert "is a URL; lightning_gd loads local checkpoints only" in fails(args, capsys)


def test_a_checkpoint_that_runs_code_is_refused(planted_search, tmp_path, capsys):
    config, ckpt = planted_search

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["payload"] = Payload()
    torch.save(state, tmp_path / "evil.ckpt")
    args = ["test", *config, "--model.init_args.concept", "dome", "--ckpt_path", str(tmp_path / "evil.ckpt")]
    args += ["--trainer.default_root_dir", str(tmp_path / "logs")]
    err = fails(args, capsys)
    assert "refused to load a file that holds Python objects other than weights" in err
    assert "posix.system" in err and not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------------------------- long work


def test_a_huge_artifact_run_uses_the_disk_or_is_refused(tmp_path, capsys, monkeypatch):
    import lightning_gd.jobs.artifacts as job

    monkeypatch.setattr(job, "available_memory", lambda: 2**30)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 2**40 - 2**33, 2**33))
    args = ["artifacts", "--n", "100000000", "--top_k", "1000", "--out", str(tmp_path / "a"), "--cache_dir", "null"]
    err = fails(args, capsys)
    # 4 bytes × (256 units + 256 features) per sample
    assert "n = 100000000 samples need 204.8 GB" in err and "free memory (1.1 GB)" in err and "(8.6 GB)" in err


def test_the_memory_mapped_pass_equals_the_one_in_memory(tmp_path):
    from lightning_gd.realism.artifacts import scores_and_features
    from tests.helpers import TinyConvGenerator, tiny_extractor

    G, ex = TinyConvGenerator(), tiny_extractor()
    in_ram = scores_and_features(G, "layer1", ex, n=10, batch_size=4, progress=False)
    on_disk = scores_and_features(G, "layer1", ex, n=10, batch_size=4, progress=False, storage=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(in_ram, on_disk))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.f32", "scores.f32"]


def test_a_huge_dissection_says_how_long_it_will_take(tmp_path, capsys, monkeypatch):
    import lightning_gd.jobs.dissect as job

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the user, having read the estimate

    monkeypatch.setattr(job, "run_dissection", stop)
    with pytest.raises(KeyboardInterrupt):
        main(
            [
                "dissect",
                *PLANTED,
                *COLOUR,
                "--n",
                "100000000",
                "--tb_dir",
                "null",
                "--out",
                str(tmp_path / "o"),
                "--cache_dir",
                str(tmp_path / "cache"),
            ]
        )
    out = capsys.readouterr().out
    assert re.search(r"dissecting 100,000,000 samples: about [\d.]+ h \(100,000,000 generator passes", out), out

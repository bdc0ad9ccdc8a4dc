"""The project's subcommands end to end through `lightning_gd.cli.main` (`python -m lightning_gd <name>`): `dissect`
and `compare` on the planted generator of `tests.helpers`, `artifacts` on the world's GAN and on a custom generator
with a folder of real images, `dissect-checkpoints` on a foreign training run, and `causal-summary`.

Every command writes only where it is told (`--out`, `--tb_dir`, `--cache_dir`) and says what it found."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gd import cli, zoo
from lightning_gd.dissection import dissect
from lightning_gd.jobs.dissect import write_dissection
from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from lightning_gd.realism.artifacts import generate_ablated, per_unit_fid, scores_and_features
from lightning_gd.realism.fid import extract_features, fid_to_real, real_statistics
from tests.helpers import (
    REPORT_K,
    REPORT_LAYERS,
    REPORT_N,
    REPORT_Q,
    ColourSegmenter,
    PlantedGenerator,
    TinyConvGenerator,
    tiny_extractor,
)
from tests.helpers import is_png as is_png_bytes

pytestmark = pytest.mark.usefixtures("one_thread", "cli_debug")  # user errors raise (see conftest)

N, K, LAYERS, Q = REPORT_N, REPORT_K, REPORT_LAYERS, REPORT_Q
UNITS = 6  # units of TinyConvGenerator's layer1
ROOT = Path(__file__).resolve().parents[2]


def is_png(path) -> bool:
    return is_png_bytes(path.read_bytes())


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# ----------------------------------------------------------------------------------------------- dissect, compare

GENERATOR = json.dumps({"class_path": "tests.helpers.PlantedGenerator", "init_args": {"two_layers": True}})
SEGMENTER = json.dumps({"class_path": "tests.helpers.ColourSegmenter"})


def run_dissect(out, *extra: str) -> None:
    argv = ["dissect", "--generator", GENERATOR, "--segmenter", SEGMENTER, "--n", str(N), "--batch_size", str(N)]
    cli.main([*argv, "--q", str(Q), "--top_k", str(K), "--out", str(out), "--tb_dir", str(out / "tb"),
              "--cache_dir", str(out / "cache"), *extra])  # fmt: skip


def stamps(folder) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("*"))}


def test_dissect_subcommand(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (tb_logs, out/)
    out = tmp_path / "run"
    run_dissect(out, "--layers", "[layer1, layer2]")
    doc = json.loads((out / "dissect.json").read_text())
    assert doc["settings"]["layers"] == list(LAYERS) and doc["settings"]["n"] == N
    assert doc["settings"]["generator"] == "PlantedGenerator" and doc["settings"]["segmenter"] == "ColourSegmenter"
    for layer in LAYERS:
        assert doc["layers"][layer]["units"][0]["label"] == "dome"
        assert doc["layers"][layer]["summary"]["per_concept"]["dome"] == 1
    assert (out / "report.html").is_file() and (out / "layers.png").is_file()
    tb = out / "tb" / "dissect-run-layer1-layer2"  # the kind, the output folder and the layers, said once each
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    printed = capsys.readouterr().out
    interpretable = doc["layers"]["layer1"]["summary"]["interpretable"]
    assert f"layer1: {interpretable}/3 interpretable units" in printed
    # the closing listing: every file written, the TensorBoard run, the next command
    listed = printed[printed.index("wrote:\n") :].splitlines()
    files = sorted(str(p.relative_to(tmp_path)) for p in out.iterdir() if p.is_file())  # as typed in tmp_path
    assert listed[1 : 1 + len(files)] == [f"  {f}" for f in files] and "  run/report.html" in listed
    tb = tb.relative_to(tmp_path)
    assert f"TensorBoard run: {tb}  (tensorboard --logdir {tb})" in listed
    assert "next: python -m lightning_gd fit --concept dome --layer layer1 --model.generator " in printed
    cache = stamps(out / "cache")
    assert len(cache) == len(LAYERS)  # thresholds and tallies of the one pass, per layer

    run_dissect(out, "--layers", "[layer1, layer2]")  # the same run again: both stages come from the cache
    assert stamps(out / "cache") == cache
    assert json.loads((out / "dissect.json").read_text()) == doc
    assert len(list((tmp_path / tb).glob("events.out.tfevents.*"))) == 2
    assert "wrote:" in capsys.readouterr().out  # the same files again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    with pytest.raises(ValueError, match="--layers") as err:
        run_dissect(tmp_path / "nolayers")  # a custom generator has no default layer
    assert "PlantedGenerator declares no probe layers" in str(err.value)
    assert "its layers: embed, layer1, layer2, render" in str(err.value)
    # `threshold` is typed: an unknown mode is refused while parsing, naming it and the modes
    # (`DissectSettings` says the same to library callers: tests/dissection/test_results.py)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_dissect(tmp_path / "bogus", "--layers", "[layer1]", "--threshold", "bogus")
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "bogus" in err and "'quantile', 'iqr'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the failures wrote nothing


@pytest.fixture(scope="module")
def two_modes(tmp_path_factory):
    """dissect.json of layer1 in quantile and iqr mode."""
    g = PlantedGenerator(two_layers=True).eval()
    paths = {}
    for mode in ("quantile", "iqr"):
        d = dissect(g, "layer1", ColourSegmenter(), n=N, batch_size=N, q=Q, iqr_n=N, threshold=mode, progress=False)
        folder = tmp_path_factory.mktemp(mode)
        write_dissection(d, folder)
        paths[mode] = folder / "dissect.json"
    return paths


def test_compare_subcommand(two_modes, tmp_path, monkeypatch, capsys):
    files = [str(two_modes["quantile"]), str(two_modes["iqr"].parent)]  # a file, or the folder holding it
    cli.main(["compare", "--dissections", json.dumps(files), "--names", "[q, iqr]", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["q", "iqr"] and [r["threshold"] for r in rows] == ["quantile", "iqr"]
    for row, mode in zip(rows, ("quantile", "iqr")):
        src = json.loads(two_modes[mode].read_text())["layers"]["layer1"]
        summ = src["summary"]
        assert row["layer"] == "layer1"
        for key in ("interpretable", "distinct_concepts", "mean_iou", "per_concept"):
            assert row[key] == summ[key], (mode, key)
        assert row["object_units"] == sum(u["interpretable"] and u["category"] == "object" for u in src["units"])
        assert row["object_units"] == 1  # the dome
    assert is_png(tmp_path / "compare.png")
    assert "wrote" in capsys.readouterr().out

    # default names: the folders holding the files, also for paths relative to the working directory
    monkeypatch.chdir(two_modes["quantile"].parent)
    cli.main(["compare", "--dissections", json.dumps([".", "dissect.json"]), "--out", str(tmp_path / "default")])
    default = json.loads((tmp_path / "default" / "compare.json").read_text())["rows"]
    assert [r["name"] for r in default] == [two_modes["quantile"].parent.name] * 2

    missing = tmp_path / "nowhere" / "dissect.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        cli.main(["compare", "--dissections", json.dumps([files[0], str(missing)]), "--out", str(tmp_path / "x")])
    with pytest.raises(KeyError, match="has no layer 'layer9'; it has layer1"):
        cli.main(["compare", "--dissections", json.dumps(files), "--layer", "layer9", "--out", str(tmp_path / "y")])


# ----------------------------------------------------------------------------------------------- artifacts


ARTIFACTS = [
    "--n",
    "60",
    "--top_k",
    "20",
    "--n_eval",
    "20",
    "--random_draws",
    "2",
    "--real_n",
    "40",
    "--batch_size",
    "20",
]


def test_artifacts_subcommand_on_the_world(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    out, cache = tmp_path / "run", tmp_path / "cache"
    cli.main(["artifacts", *ARTIFACTS, "--out", str(out), "--cache_dir", str(cache)])
    doc = json.loads((out / "unit_fid.json").read_text())
    assert doc["layer"] == "layer4" and doc["n"] == 60 and doc["top_k"] == 20 and doc["real_n"] == 40
    assert doc["n_eval"] == 20 and doc["generator"] == "world"
    assert sorted(doc["ranking"]) == list(range(256)) and len(doc["unit_fid"]) == 256  # layer4: 256 units
    fids = doc["unit_fid"]
    assert all(fids[a] >= fids[b] for a, b in zip(doc["ranking"], doc["ranking"][1:]))  # worst first
    ex = zoo.feature_extractor("world")
    assert doc["feature_extractor"] == ex.identity

    # the same numbers by hand from the library: per-unit FID, and the original row of the table
    real = real_statistics(ex, zoo.real_images("world", n=40), cache_dir=cache, batch_size=20, progress=False)
    G = zoo.generator("world")
    scores, feats = scores_and_features(G, "layer4", ex, n=60, seed=0, batch_size=20, progress=False)
    torch.testing.assert_close(
        torch.tensor(fids, dtype=torch.float64),
        per_unit_fid(scores, feats, real, 20, progress=False),
        rtol=1e-6,
        atol=0,
    )
    rows = doc["ablation"]
    assert [r["ablation"] for r in rows] == ["original", "top-20 FID units", "20 random units (2 draws)"]
    assert rows[1]["units"] == doc["ranking"][:20] and len(rows[2]["fid_draws"]) == 2
    original = fid_to_real(extract_features(ex, generate_ablated(G, "layer4", [], 20, seed=1)), real)
    assert rel(rows[0]["fid"], original) < 1e-6

    cached = list(cache.iterdir())
    assert len(cached) == 1 and ex.identity in cached[0].name
    md = (out / "ablation.md").read_text()
    assert "| original |" in md and "± " in md
    for name in ("unit_fid.png", "top_units.png", "before_after.png"):
        assert is_png(out / name), name
    printed = capsys.readouterr().out
    assert "layer4: highest per-unit FID:" in printed and "unit_fid.json" in printed
    # the realism filter with the cut that leaves out the 20 highest-FID units (and no other)
    cut = float(re.search(r"--max_unit_fid (\S+)", printed).group(1))
    assert sum(f > cut for f in fids) == 20
    assert f"next: python -m lightning_gd dissect --layers layer4 --realism {out / 'unit_fid.json'}" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]

    # bad input
    with pytest.raises(ValueError, match="top_k ≤ n"):
        cli.main(["artifacts", "--top_k", "100", "--n", "50", "--out", str(tmp_path / "x")])
    small = ["--n", "20", "--top_k", "5", "--real_n", "40", "--batch_size", "20", "--cache_dir", str(cache)]
    with pytest.raises(IndexError, match=re.escape("units out of range: [999]; the layer has units 0 … 255")):
        cli.main(["artifacts", *small, "--units", "[3, 999]", "--out", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="Inception extractor needs local weights"):
        cli.main(["artifacts", *small, "--feature_extractor", "inception", "--out", str(tmp_path / "z")])
    with pytest.raises(FileNotFoundError, match="/nonexistent"):
        cli.main(
            [
                "artifacts",
                *small,
                "--feature_extractor",
                "inception",
                "--feature_extractor_weights_path",
                "/nonexistent",
            ]
        )
    with pytest.raises(ValueError, match="n_eval"):
        cli.main(["artifacts", *small, "--n_eval", "1", "--out", str(tmp_path / "w")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]  # the failures wrote nothing


def test_artifacts_subcommand_custom_generator_and_real_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = tmp_path / "real"
    real.mkdir()
    with torch.no_grad():
        images = to_uint8(TinyConvGenerator(seed=1)(latents(range(12), 8, seed=5)))
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(real / f"{i:02d}.png")
    gen = json.dumps({"class_path": "tests.helpers.TinyConvGenerator"})
    argv = ["artifacts", "--generator", gen, "--layer", "layer1", "--n", "30", "--top_k", "10", "--n_ablate", "2"]
    argv += ["--random_draws", "2", "--n_eval", "10", "--batch_size", "10", "--cache_dir", str(tmp_path / "cache")]
    cli.main([*argv, "--real_images", str(real), "--units", "[4]", "--out", str(tmp_path / "run")])
    doc = json.loads((tmp_path / "run" / "unit_fid.json").read_text())
    assert doc["generator"] == "TinyConvGenerator" and doc["real"] == str(real) and doc["real_n"] == 12
    assert sorted(doc["ranking"]) == list(range(UNITS))
    assert [r["ablation"] for r in doc["ablation"]][2] == "user units (1)" and doc["ablation"][2]["units"] == [4]
    assert np.isfinite(doc["unit_fid"]).all() and is_png(tmp_path / "run" / "before_after.png")
    # a custom generator with another extractor has no default real images
    monkeypatch.setattr(zoo, "feature_extractor", lambda *a, **k: tiny_extractor())
    with pytest.raises(ValueError, match="--real_images"):
        cli.main([*argv, "--feature_extractor", "inception", "--out", str(tmp_path / "x")])


# ----------------------------------------------------------------------------------------------- dissect-checkpoints


def test_dissect_checkpoints_command_and_bad_prefix(foreign_resumed, tmp_path, monkeypatch, capsys):
    ckdir, _, _ = foreign_resumed
    monkeypatch.chdir(ROOT)
    common = ["--layer", "layer1", "--n", "12", "--out", str(tmp_path / "o"), "--tb_dir", "null"]
    gen = ["--generator", '{"class_path": "tests.helpers.TinyGenerator"}']
    seg = ["--segmenter", '{"class_path": "tests.helpers.ColourSegmenter"}']
    cli.main(["dissect-checkpoints", str(ckdir / "step=8.ckpt"), *gen, *seg, "--prefix", "nets.G", *common])
    assert "interpretable" in capsys.readouterr().out  # the printed table
    (doc,) = json.loads((tmp_path / "o" / "emergence.json").read_text())["history"]
    assert doc["step"] == 8 and doc["interpretable"] == 1 and doc["per_concept"]["dome"] == 1
    with pytest.raises(KeyError, match="no weights under 'generator.'; its state_dict prefixes: nets"):
        cli.main(["dissect-checkpoints", str(ckdir / "step=8.ckpt"), *gen, *seg, *common])
    # without --layer: the generator's declared default layer, which also names the TensorBoard run
    declared = ["--generator", '{"class_path": "tests.helpers.TinyGenerator", "init_args": {}}']
    monkeypatch.setattr("tests.helpers.TinyGenerator.probe_layers", ["layer1"], raising=False)
    rest = ["--n", "12", "--out", str(tmp_path / "d"), "--tb_dir", str(tmp_path / "tb")]
    cli.main(["dissect-checkpoints", str(ckdir / "step=8.ckpt"), *declared, *seg, "--prefix", "nets.G", *rest])
    assert "tensorboard --logdir" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "tb").iterdir()] == ["emergence-d-layer1"]


# ----------------------------------------------------------------------------------------------- causal-summary


def ace_summary(concept: str, removed: float) -> dict:
    """An ace.json as `python -m lightning_gd test` writes it, with made-up numbers."""
    return {
        "concept": concept, "layer": "layer4", "presence": 0.25, "sizes": [1, 20, 128], "top_n": 20, "n_test": 200,
        "ablation_removed": {"alpha": [0.1, removed, 1.0], "iou": [0.05, 0.3, 1.0],
                             "random_mean": [0.0, 0.1, 1.0], "random_std": [0.0, 0.02, 0.0]},
        "removed_at_top_n": {"alpha": removed, "iou": 0.3, "random_mean": 0.1, "random_std": 0.02},
        "insertion_at_top_n": {"alpha": {"ace": 0.5, "appeared": 0.4}, "iou": {"ace": 0.2, "appeared": 0.1}},
    }  # fmt: skip


def test_causal_summary_subcommand(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = []
    for concept, removed in (("tree", 0.9), ("door", 0.7)):
        run = tmp_path / f"{concept}-layer4"
        run.mkdir()
        (run / "ace.json").write_text(json.dumps(ace_summary(concept, removed)))
        runs.append(str(run))
    out = tmp_path / "summary"
    cli.main(["causal-summary", "--runs", json.dumps([runs[0], str(tmp_path / "door-layer4" / "ace.json")]),
              "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "| tree | layer4 | 25.0% | 20 | 90.0% | 30.0% | 10.0% ± 2.0% | 0.500 | 200 |" in printed
    assert "| door | layer4 |" in printed and "causal_removal.png" in printed
    context = f"next: python -m lightning_gd context --causal {runs[0]} --concept tree --layer layer4"
    assert context in printed and f"next: python -m lightning_gd paint --results {tmp_path}" in printed
    assert [s["concept"] for s in json.loads((out / "causal_summary.json").read_text())["runs"]] == ["tree", "door"]
    assert (out / "causal_summary.md").read_text().startswith("| concept | layer |")
    assert is_png(out / "causal_removal.png")
    with pytest.raises(FileNotFoundError, match="no ace.json at .*nowhere.*test the run first"):
        cli.main(["causal-summary", "--runs", json.dumps([str(tmp_path / "nowhere")]), "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door-layer4", "summary", "tree-layer4"]

"""Artifact units (paper §4.2, Tables 1–2, §S-6.1) and the realism filter (§S-6.3): per-unit FID from one
generation pass against a brute-force recomputation, ablation FIDs against hand-made edits, the `artifacts`
subcommand end to end on the world's GAN, and the filter through `Dissection` and the `dissect` subcommand."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from lightning_gd import cli
from lightning_gd.artifacts import (
    ablation_fid,
    ablation_table,
    check_units,
    generate_ablated,
    per_unit_fid,
    scores_and_features,
    top_images,
)
from lightning_gd.dissection import dissect
from lightning_gd.fid import RealStatistics, extract_features, fid_to_real, world_extractor, world_real_statistics
from lightning_gd.generators import latents
from lightning_gd.images import to_uint8
from lightning_gd.world import load_generator
from tests.helpers import DOME_SHARE, Z_DIM, PlantedGenerator, TinyConvGenerator, segmenter, tiny_extractor

pytestmark = pytest.mark.usefixtures("one_thread")

N = 60  # samples of the tiny generator
UNITS = 6  # its layer1 units


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@functools.cache
def scored(batch_size: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    return scores_and_features(
        TinyConvGenerator(), "layer1", tiny_extractor(), n=N, seed=0, batch_size=batch_size, progress=False
    )


@functools.cache
def real_stats() -> RealStatistics:
    """'Real' images: another random generator's, on other z."""
    with torch.no_grad():
        images = to_uint8(TinyConvGenerator(seed=1)(latents(range(50), 8, seed=5)))
    return RealStatistics.from_features(extract_features(tiny_extractor(), images), "tiny")


def brute_force_scores_and_features() -> tuple[torch.Tensor, torch.Tensor]:
    g, ex = TinyConvGenerator(), tiny_extractor()
    scores, feats = [], []
    with torch.no_grad():
        for i in range(N):
            z = latents([i], 8, 0)
            r = g.layer1(g.embed(z))  # (1, U, 8, 8)
            scores.append(torch.tensor([r[0, u].max().item() for u in range(r.shape[1])]))
            feats.append(ex(to_uint8(g(z)))[0])
    return torch.stack(scores), torch.stack(feats)


def brute_force_unit_fid(scores: torch.Tensor, features: torch.Tensor, real: RealStatistics, k: int) -> list[float]:
    out = []
    for u in range(scores.shape[1]):
        top = sorted(range(scores.shape[0]), key=lambda i: (-float(scores[i, u]), i))[:k]
        out.append(fid_to_real(features[top].double(), real))
    return out


# ----------------------------------------------------------------------------------------------- per-unit FID


def test_scores_and_features_equal_a_loop_and_ignore_batch_size():
    scores, feats = scored()
    assert scores.shape == (N, UNITS) and feats.shape == (N, 16) and feats.dtype == torch.float32
    bf_scores, bf_feats = brute_force_scores_and_features()
    torch.testing.assert_close(scores, bf_scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats, bf_feats.float(), rtol=1e-5, atol=1e-4)
    s7, f7 = scored(7)
    torch.testing.assert_close(s7, scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f7, feats, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="featuremap"):
        scores_and_features(TinyConvGenerator(), "embed.0", tiny_extractor(), n=4, progress=False)
    with pytest.raises(KeyError, match="layer1"):
        scores_and_features(TinyConvGenerator(), "layr1", tiny_extractor(), n=4, progress=False)


@pytest.mark.parametrize("k", [10, 20])  # K ≤ D = 16 (Gram route) and K > D (covariance route)
def test_per_unit_fid_equals_brute_force(k):
    scores, feats = scored()
    real = real_stats()
    unit_fid = per_unit_fid(scores, feats, real, k, progress=False)
    assert unit_fid.shape == (UNITS,) and unit_fid.dtype == torch.float64
    expected = brute_force_unit_fid(scores, feats, real, k)
    print(f"\nK = {k}: per-unit FID {[round(v, 2) for v in unit_fid.tolist()]}")
    for u in range(UNITS):
        assert rel(float(unit_fid[u]), expected[u]) < 1e-6, (u, float(unit_fid[u]), expected[u])
    assert len({round(v, 3) for v in expected}) > 1  # the units differ: the test can tell them apart
    # torch-fidelity's own statistics and FID of one unit's top images agree too
    top = top_images(scores, k)[:, 0]
    theirs = fid_statistics_to_metric(
        fid_features_to_statistics(feats[top].double()),
        {"mu": real.mu.numpy(), "sigma": real.sigma.numpy()},
        verbose=False,
    )["frechet_inception_distance"]
    assert rel(float(unit_fid[0]), theirs) < 1e-4
    for chunk in (1, 4, 100):  # units per batched eigen-decomposition
        again = per_unit_fid(scores, feats, real, k, chunk=chunk, progress=False)
        torch.testing.assert_close(again, unit_fid, rtol=1e-9, atol=0)
    seven = per_unit_fid(*scored(7), real, k, progress=False)
    torch.testing.assert_close(seven, unit_fid, rtol=1e-4, atol=0)


def test_top_images_ties_and_errors():
    scores = torch.tensor([[1.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    assert top_images(scores, 2).tolist() == [[1, 0], [2, 1]]  # ties: the smaller index first
    assert top_images(scores, 4)[:, 0].tolist() == [1, 2, 0, 3]
    with pytest.raises(ValueError, match="K = 5.*N = 4"):
        top_images(scores, 5)
    with pytest.raises(ValueError, match="at least 2"):
        top_images(scores, 1)
    # the planted generator: the dome unit peaks at 1 and the dead unit at 0 in every image — all ties
    g = PlantedGenerator()
    s, f = scores_and_features(g, "layer1", tiny_extractor(), n=20, batch_size=20, z_dim=Z_DIM, progress=False)
    assert s[:, 0].eq(1).all() and s[:, 2].eq(0).all()
    top = top_images(s, 5)
    assert top[:, 0].tolist() == top[:, 2].tolist() == [0, 1, 2, 3, 4]
    real = RealStatistics.from_features(f.double())
    unit_fid = per_unit_fid(s, f, real, 5, progress=False)
    assert float(unit_fid[0]) == float(unit_fid[2])  # the same five images
    assert rel(float(unit_fid[0]), fid_to_real(f[:5].double(), real)) < 1e-6


def test_check_units():
    assert check_units([0, 5, torch.tensor(3)], UNITS) == [0, 5, 3]
    with pytest.raises(IndexError, match=re.escape("units out of range: [6, -1]; the layer has units 0 … 5")):
        check_units([0, 6, -1], UNITS)


# ----------------------------------------------------------------------------------------------- ablation


def ablated_by_hand(units: list[int], n: int, seed: int) -> torch.Tensor:
    g = TinyConvGenerator()
    keep = torch.ones(UNITS)
    keep[units] = 0

    def zero(module, inputs, output):
        return output * keep[None, :, None, None]

    handle = g.layer1.register_forward_hook(zero)
    try:
        with torch.no_grad():
            return to_uint8(g(latents(range(n), 8, seed)))
    finally:
        handle.remove()


def test_generate_ablated_equals_a_hand_made_edit():
    g = TinyConvGenerator()
    plain = generate_ablated(g, "layer1", [], 12, seed=3, batch_size=12)
    with torch.no_grad():
        assert torch.equal(plain, to_uint8(g(latents(range(12), 8, 3))))
    for units in ([1], [0, 4, 5], torch.tensor([2, 3])):
        ours = generate_ablated(g, "layer1", units, 12, seed=3, batch_size=12)
        assert ours.dtype == torch.uint8 and ours.shape == (12, 3, 32, 32)
        hand = ablated_by_hand(torch.as_tensor(units).tolist(), 12, 3)
        assert torch.equal(ours, hand), units
        assert not torch.equal(ours, plain)  # the ablation changes the images
    # smaller batches: the same images (up to one grey level of float rounding)
    small = generate_ablated(g, "layer1", [0, 4, 5], 12, seed=3, batch_size=5)
    assert (small.int() - ablated_by_hand([0, 4, 5], 12, 3).int()).abs().max() <= 1
    # the generator is left as it was: no hook stays behind
    with torch.no_grad():
        assert torch.equal(to_uint8(g(latents(range(12), 8, 3))), plain)
    with pytest.raises(IndexError):
        generate_ablated(g, "layer1", [UNITS], 4, seed=3)


def test_ablation_table():
    g, ex, real = TinyConvGenerator(), tiny_extractor(), real_stats()
    scores, feats = scored()
    unit_fid = per_unit_fid(scores, feats, real, 20, progress=False)
    ranking = torch.sort(unit_fid, descending=True, stable=True).indices.tolist()
    kw = dict(n=30, seed=1, batch_size=10, progress=False)
    rows = ablation_table(g, "layer1", ranking, ex, real, n_ablate=2, user_units=[5, 0], random_draws=3, **kw)
    names = [r["ablation"] for r in rows]
    union = sorted(set(ranking[:2]) | {5, 0})
    assert names == [
        "original",
        "top-2 FID units",
        "user units (2)",
        f"union ({len(union)})",
        "2 random units (3 draws)",
    ]
    assert [r["units"] for r in rows[:4]] == [[], ranking[:2], [5, 0], union]

    with torch.no_grad():
        plain = to_uint8(g(latents(range(30), 8, 1)))
    assert rel(rows[0]["fid"], fid_to_real(extract_features(ex, plain), real)) < 1e-9
    for row in rows[1:4]:
        hand = fid_to_real(extract_features(ex, ablated_by_hand(row["units"], 30, 1)), real)
        assert rel(row["fid"], hand) < 1e-6, row["ablation"]
        assert row["fid"] != rows[0]["fid"]

    rand = rows[-1]
    assert len(rand["units"]) == 3 and len(rand["fid_draws"]) == 3
    for draw, value in zip(rand["units"], rand["fid_draws"]):
        assert len(draw) == len(set(draw)) == 2 and all(0 <= u < UNITS for u in draw)
        assert rel(value, ablation_fid(g, "layer1", draw, ex, real, 30, 1, 10)) < 1e-9
    t = torch.tensor(rand["fid_draws"], dtype=torch.float64)
    assert rel(rand["fid"], float(t.mean())) < 1e-12 and rel(rand["fid_std"], float(t.std())) < 1e-12

    # the draws are seeded: the same table again; no user units: no user or union rows
    again = ablation_table(g, "layer1", ranking, ex, real, n_ablate=2, random_draws=3, **kw)
    assert [r["ablation"] for r in again] == ["original", "top-2 FID units", "2 random units (3 draws)"]
    assert again[-1]["units"] == rand["units"] and again[-1]["fid_draws"] == rand["fid_draws"]
    one = ablation_table(g, "layer1", ranking, ex, real, n_ablate=2, random_draws=1, **kw)
    assert one[-1]["fid_std"] == 0.0 and len(one[-1]["fid_draws"]) == 1

    with pytest.raises(IndexError, match=re.escape("user units out of range: [6]; the layer has units 0 … 5")):
        ablation_table(g, "layer1", ranking, ex, real, n_ablate=2, user_units=[1, 6], **kw)


# ----------------------------------------------------------------------------------------------- command line


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ARTIFACTS = ["--n", "60", "--k", "20", "--n_eval", "20", "--random_draws", "2", "--real_n", "40", "--batch_size", "20"]


def test_artifacts_subcommand_on_the_world(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    out, cache = tmp_path / "run", tmp_path / "cache"
    cli.main(["artifacts", *ARTIFACTS, "--out", str(out), "--cache_dir", str(cache)])
    doc = json.loads((out / "unit_fid.json").read_text())
    assert doc["layer"] == "layer4" and doc["n"] == 60 and doc["k"] == 20 and doc["real_n"] == 40
    assert doc["n_eval"] == 20 and doc["generator"] == "world"
    assert sorted(doc["ranking"]) == list(range(128)) and len(doc["unit_fid"]) == 128
    fids = doc["unit_fid"]
    assert all(fids[a] >= fids[b] for a, b in zip(doc["ranking"], doc["ranking"][1:]))  # worst first
    ex = world_extractor()
    assert doc["feature_extractor"] == ex.identity

    # the same numbers by hand from the library: per-unit FID, and the original row of the table
    real = world_real_statistics(ex, 40, cache_dir=cache, batch_size=20, progress=False)
    G = load_generator()
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]

    # bad input
    with pytest.raises(ValueError, match="k ≤ n"):
        cli.main(["artifacts", "--k", "100", "--n", "50", "--out", str(tmp_path / "x")])
    small = ["--n", "20", "--k", "5", "--real_n", "40", "--batch_size", "20", "--cache_dir", str(cache)]
    with pytest.raises(IndexError, match=re.escape("units out of range: [999]; the layer has units 0 … 127")):
        cli.main(["artifacts", *small, "--units", "[3, 999]", "--out", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="feature_extractor_weights_path"):
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
    argv = ["artifacts", "--generator", gen, "--layer", "layer1", "--n", "30", "--k", "10", "--n_ablate", "2"]
    argv += ["--random_draws", "2", "--n_eval", "10", "--batch_size", "10", "--cache_dir", str(tmp_path / "cache")]
    cli.main([*argv, "--real_images", str(real), "--units", "[4]", "--out", str(tmp_path / "run")])
    doc = json.loads((tmp_path / "run" / "unit_fid.json").read_text())
    assert doc["generator"] == "TinyConvGenerator" and doc["real"] == str(real) and doc["real_n"] == 12
    assert sorted(doc["ranking"]) == list(range(UNITS))
    assert [r["ablation"] for r in doc["ablation"]][2] == "user units (1)" and doc["ablation"][2]["units"] == [4]
    assert np.isfinite(doc["unit_fid"]).all() and is_png(tmp_path / "run" / "before_after.png")
    # a custom generator with another extractor has no default real images
    monkeypatch.setattr("lightning_gd.fid.make_extractor", lambda *a, **k: tiny_extractor())
    with pytest.raises(ValueError, match="--real_images"):
        cli.main([*argv, "--feature_extractor", "inception", "--out", str(tmp_path / "x")])


# ----------------------------------------------------------------------------------------------- realism filter


def planted_dissection():
    return dissect(PlantedGenerator(), "layer1", segmenter(), n=40, batch_size=40, q=1 - DOME_SHARE, progress=False)


def test_realism_filter():
    d = planted_dissection()
    assert d.units("layer1")[0]["label"] == "dome" and d.units("layer1")[0]["interpretable"]
    before, dome_iou = d.summary("layer1"), d.units("layer1")[0]["iou"]
    assert dome_iou > 0.9 and before["unrealistic"] == [] and all(u["realistic"] for u in d.units("layer1"))

    # a low FID: the dome unit stays; a unit at exactly the threshold is not above it
    assert d.filter_unrealistic("layer1", [3.0, 10.0, 40.0], max_fid=10.0) == [2]
    units = d.units("layer1")
    assert units[0]["interpretable"] and units[0]["realistic"] and units[1]["realistic"]
    assert not units[2]["realistic"] and not units[2]["interpretable"]
    assert d.summary("layer1")["unrealistic"] == [2] and d.summary("layer1")["per_concept"].get("dome") == 1

    # a high FID: the dome unit is left out, its IoU kept; the filter replaces the previous one
    assert d.filter_unrealistic("layer1", torch.tensor([80.0, 1.0, 1.0]), max_fid=10.0) == [0]
    units = d.units("layer1")
    assert units[0]["label"] == "dome" and not units[0]["interpretable"] and not units[0]["realistic"]
    assert units[0]["iou"] == dome_iou
    assert all(u["realistic"] for u in units[1:])
    summ = d.summary("layer1")
    assert summ["unrealistic"] == [0] and "dome" not in summ["per_concept"]
    assert summ["interpretable"] == before["interpretable"] - 1

    with pytest.raises(ValueError, match="2 units but layer 'layer1' has 3"):
        d.filter_unrealistic("layer1", [1.0, 2.0], 10.0)
    with pytest.raises(KeyError, match="layer9"):
        d.filter_unrealistic("layer9", [1.0, 2.0, 3.0], 10.0)
    assert d.summary("layer1")["unrealistic"] == [0]  # failures leave the filter as it was


def test_dissect_subcommand_realism(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    realism = tmp_path / "unit_fid.json"
    realism.write_text(json.dumps({"layer": "layer1", "unit_fid": [99.0, 1.0, 2.0]}))
    argv = [
        "dissect",
        *("--generator", json.dumps({"class_path": "tests.helpers.PlantedGenerator"})),
        *("--segmenter", json.dumps({"class_path": "tests.helpers.ColourSegmenter"})),
        *("--layers", "[layer1]", "--n", "40", "--batch_size", "40", "--q", str(1 - DOME_SHARE), "--top_k", "4"),
        *("--out", str(out), "--tb_dir", str(tmp_path / "tb")),
    ]
    cli.main([*argv, "--realism", str(realism), "--max_unit_fid", "50"])
    printed = capsys.readouterr().out
    assert "realism filter: 1 units of layer1 with per-unit FID > 50.0 left out" in printed
    doc = json.loads((out / "dissect.json").read_text())["layers"]["layer1"]
    assert doc["summary"]["unrealistic"] == [0] and "dome" not in doc["summary"]["per_concept"]
    assert [u["realistic"] for u in doc["units"]] == [False, True, True]
    assert doc["units"][0]["label"] == "dome" and not doc["units"][0]["interpretable"]

    cli.main([*argv, "--realism", str(realism), "--max_unit_fid", "100"])  # nothing above 100
    doc = json.loads((out / "dissect.json").read_text())["layers"]["layer1"]
    assert doc["summary"]["unrealistic"] == [] and doc["units"][0]["interpretable"]
    assert "realism filter: 0 units" in capsys.readouterr().out

    with pytest.raises(ValueError, match="--max_unit_fid"):
        cli.main([*argv, "--realism", str(realism)])
    with pytest.raises(ValueError, match="--realism"):
        cli.main([*argv, "--max_unit_fid", "50"])
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        cli.main([*argv, "--realism", str(tmp_path / "nowhere.json"), "--max_unit_fid", "50"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"layer": "layer2", "unit_fid": [1.0, 1.0, 1.0]}))
    with pytest.raises(ValueError, match="layer2"):
        cli.main([*argv, "--realism", str(other), "--max_unit_fid", "50"])
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"layer": "layer1", "unit_fid": [1.0, 1.0]}))
    with pytest.raises(ValueError, match="2 units"):
        cli.main([*argv, "--realism", str(short), "--max_unit_fid", "50"])
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"layer": "layer1", "unit_fid": [1.0] * 3, "generator_fingerprint": "0123abcd"}))
    with pytest.raises(ValueError, match="scored on another generator"):
        cli.main([*argv, "--realism", str(foreign), "--max_unit_fid", "50"])

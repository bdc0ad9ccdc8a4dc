"""Artifact units (paper §4.2, Tables 1–2, §S-6.1): per-unit FID from one generation pass against a brute-force
recomputation, and ablation FIDs against hand-made edits. The `artifacts` subcommand runs end to end in
tests/cli/test_commands.py."""

from __future__ import annotations

import functools
import re

import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from lightning_gd.latents import latents
from lightning_gd.models.images import to_uint8
from lightning_gd.realism.artifacts import (
    ablation_fid,
    ablation_table,
    check_units,
    generate_ablated,
    per_unit_fid,
    scores_and_features,
    top_images,
)
from lightning_gd.realism.fid import RealStatistics, extract_features, fid_to_real
from tests.helpers import Z_DIM, PlantedGenerator, TinyConvGenerator, tiny_extractor

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
    with pytest.raises(ValueError, match="top_k = 5.*n = 4"):
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

"""Insertion context and tracing (`causal.context`, the `context` command) on a toy generator whose door unit
paints a door only where a building is (`tests.helpers.DoorGenerator`): the batched all-locations insertion
against one-by-one insertions, the table by background, the veto seen downstream, the region insertion, and
the command's outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lightning_gd.causal.context import bootstrap_by_group, insert_at_locations, majority_labels, region_masks
from lightning_gd.causal.interventions import insert, location_mask
from lightning_gd.cli.main import main
from lightning_gd.jobs.context import measure_context
from lightning_gd.latents import latents
from lightning_gd.models.split import LayerSplit
from tests.helpers import DOOR_CONCEPTS, ColourSegmenter, DoorGenerator

K_C = torch.tensor([0.0, 1.0, 0.0])
pytestmark = pytest.mark.usefixtures("one_thread")


def seg() -> ColourSegmenter:
    return ColourSegmenter(DOOR_CONCEPTS)


@pytest.mark.parametrize("chunk", [1, 7, 256])
@pytest.mark.parametrize("region", [1, 2])
def test_batched_insertion_equals_one_location_at_a_time(chunk, region):
    G, s = DoorGenerator(), seg()
    split = LayerSplit(G, "layer1")
    z = latents(range(5), G.z_dim, 0)
    where = torch.tensor([0, 9, 27, 30, 44, 63])
    got = insert_at_locations(split, s, z, [1], K_C, 1, where, region, chunk, ["layer2"])
    r = split.h(z)
    masks = region_masks(where, (8, 8), region)
    for b in range(5):
        x0 = G(z[b : b + 1])
        for i, loc in enumerate(where.tolist()):
            mask = masks[i : i + 1] if region > 1 else location_mask(torch.tensor([loc]), (8, 8))
            x = split.f(insert(r[b : b + 1], [1], K_C, mask))
            grown = torch.nn.functional.max_pool2d(mask, 3, 1, 1)
            window = torch.nn.functional.interpolate(grown, size=(64, 64), mode="nearest")[0, 0] > 0.5
            door = s.labels(x)[0] == 1
            assert got.after[b, i] == (door & window).sum()
            assert got.before[b, i] == ((s.labels(x0)[0] == 1) & window).sum()
            found = door & window
            conf = s.probs(x)[0, 1][found].double().mean() if found.any() else torch.tensor(0.0, dtype=torch.float64)
            torch.testing.assert_close(got.confidence_after[b, i], conf)
            v2 = G.layer2(insert(r[b : b + 1], [1], K_C, mask)) - G.layer2(r[b : b + 1])
            torch.testing.assert_close(got.change["layer2"][b, i].float(), v2.abs().mean((2, 3))[0])


def test_the_table_shows_doors_on_buildings_and_never_on_the_sky():
    G, s = DoorGenerator(), seg()
    found = measure_context(G, s, "door", "layer1", [1], K_C, 12, 0, None, 1, True, 4, 64, progress=False)
    from lightning_gd.causal.context_summary import summarize, trace_summary

    doc = summarize(found, tuple(DOOR_CONCEPTS), 0.05, 200, 0)
    rows = doc["by_background"]
    assert set(rows) == {"sky", "building"}
    assert rows["building"]["effect"] > 0.05 and rows["building"]["appear_rate"] > 0.9
    assert rows["sky"]["effect"] <= 0.02 and rows["building"]["ci"][0] > rows["sky"]["ci"][1]
    assert rows["building"]["count"] + rows["sky"]["count"] == 12 * 64
    trace = trace_summary(found, 0.05)
    assert trace["layers"] == ["layer2", "layer3"]
    # the vetoed insertions die out: no change downstream; the visible ones change both later layers
    assert trace["visible"][0] > 0 and trace["visible"][1] > 0
    # by location: an insertion off the building is vetoed at layer2 (no change downstream), one on it is not
    on_building = DoorGenerator().layer1(latents(range(12), 65, 0))[:, 0].flatten(1) > 0.5  # (B, 64)
    for name in ("layer2", "layer3"):
        change = found["change"][name].sum(-1)  # (B, L)
        assert (change[~on_building] == 0).all() and (change[on_building] > 0).all()
    heat = torch.tensor(trace["heatmap"])
    assert heat[0].max() == 0 and heat[7, 0] > 0  # top row: sky in every image; bottom-left: always building


def test_majority_labels_and_bootstrap_by_brute_force():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 2]]])  # (1, 2, 4)
    windows = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0]], [[0, 0, 1, 1], [0, 0, 1, 1]]]).bool()
    assert majority_labels(labels, windows, 3).tolist() == [[0, 1]]  # ties: the lower index (1 vs 2)
    values = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
    groups = torch.tensor([[0, 1], [0, 1], [0, 1]])
    out = bootstrap_by_group(values, groups, 3, reps=500, seed=1)
    assert out["mean"][0] == 3.0 and out["mean"][1] == 0.0 and torch.isnan(out["mean"][2])
    assert 1.0 <= out["lo"][0] <= 3.0 <= out["hi"][0] <= 5.0 and out["count"].tolist() == [3, 3, 0]


def test_region_masks():
    m = region_masks(torch.tensor([0, 63, 6]), (8, 8), 2)[:, 0]
    assert m[0, :2, :2].all() and m[0].sum() == 4
    assert m[1, 7, 7] == 1 and m[1].sum() == 1  # clipped at the corner
    assert m[2, 0, 6:].all() and m[2].sum() == 4
    with pytest.raises(ValueError, match="region must be between 1 and 8"):
        region_masks(torch.tensor([0]), (8, 8), 9)


def test_context_command_writes_its_outputs(tmp_path, capsys):
    run = tmp_path / "search"
    run.mkdir()
    ranking = [{"unit": 1, "alpha": 1.0, "iou": 0.5}, {"unit": 2, "alpha": 0.0, "iou": 0.1}]
    search = {"concept": "door", "layer": "layer1", "settings": {}, "presence": 0.1, "top_n": 1, "top_units": [1],
              "units": ranking, "epochs": 1, "global_step": 4}  # fmt: skip
    (run / "causal.json").write_text(json.dumps(search))
    save_file({"k_c": K_C}, str(run / "alpha.safetensors"))
    out = tmp_path / "context"
    args = ["context", "--generator", '{"class_path": "tests.helpers.DoorGenerator"}', "--segmenter",
            '{"class_path": "tests.helpers.ColourSegmenter", "init_args": {"names": ["sky", "door", "building"]}}',
            "--layer", "layer1", "--concept", "door", "--causal", str(run), "--top_n", "1", "--n", "8",
            "--trace", "true", "--out", str(out), "--tb_dir", str(tmp_path / "tb"), "--progress", "false"]  # fmt: skip
    main(args)
    doc = json.loads((out / "context.json").read_text())
    assert doc["units"] == [1] and doc["k_c"] == [1.0] and "α ranking" in doc["settings"]["units_from"]
    assert set(doc["by_background"]) == {"sky", "building"} and doc["trace"]["layers"] == ["layer2", "layer3"]
    for png in ("context.png", "where.png", "trace.png", "trace_heatmap.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "building" in printed and "wrote" in printed
    assert list((tmp_path / "tb").glob("context-door-layer1/events.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb" / "context-door-layer1"), size_guidance={"scalars": 0}).Reload()
    rows = list(doc["by_background"].values())  # one point per background, along the step axis, in table order
    assert [e.step for e in acc.Scalars("context/effect")] == list(range(1, len(rows) + 1))
    assert [e.value for e in acc.Scalars("context/appear_rate")] == pytest.approx([r["appear_rate"] for r in rows])
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    bad = [*args[:-6], "--concept", "tree"]
    with pytest.raises(SystemExit) as err:
        main(bad)
    assert err.value.code == 2


def test_insertion_constants_parse_and_match_a_sorted_sample():
    from lightning_gd.causal.interventions import insertion_values, parse_insertion

    assert parse_insertion("k_c") == ("k_c", 1.0) and parse_insertion("k_c*4") == ("k_c", 4.0)
    assert parse_insertion("q0.999") == ("quantile", 0.999)
    for bad in ("kc", "k_c*0", "k_c*-2", "q1", "q0", "qx", "", "k_c*inf"):
        with pytest.raises(ValueError, match="k_c\\*M"):
            parse_insertion(bad)
    k_c = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(insertion_values("k_c*3", k_c), 3 * k_c)
    G = DoorGenerator()
    split = LayerSplit(G, "layer1")
    got = insertion_values("q0.75", K_C, split, n=6, progress=False)
    r = split.h(latents(range(6), G.z_dim, 0))  # the same seeded sample
    for u in range(r.shape[1]):
        values = r[:, u].flatten().sort().values
        pos = 0.75 * (len(values) - 1)  # linear interpolation between the two order statistics around it
        lo, frac = int(pos), pos - int(pos)
        expected = values[lo] + frac * (values[min(lo + 1, len(values) - 1)] - values[lo])
        torch.testing.assert_close(got[u], expected)


def test_the_realism_guard_counts_only_windows_as_confident_as_the_generators_own_instances():
    from lightning_gd.causal.context_summary import guard_confidence, summarize

    # 2 images × 3 windows; background 0 everywhere. Natural instances (before > 0) have confidences 0.9, 0.8;
    # the 10th percentile of those is 0.81. Inserted into the 4 concept-free windows: confident, faint, none.
    found = {
        "before": torch.tensor([[5.0, 0, 0], [3.0, 0, 0]], dtype=torch.float64),
        "after": torch.tensor([[6.0, 4, 2], [3.0, 7, 0]], dtype=torch.float64),
        "confidence_before": torch.tensor([[0.9, 0, 0], [0.8, 0, 0]], dtype=torch.float64),
        "confidence_after": torch.tensor([[0.9, 0.95, 0.5], [0.8, 0.85, 0.0]], dtype=torch.float64),
        "window": torch.tensor([16.0, 16, 16], dtype=torch.float64),
        "background": torch.zeros(2, 3, dtype=torch.long),
    }
    assert guard_confidence(found) == pytest.approx(0.81)
    out = summarize(found, ("grass",), respond=0.05, reps=20, seed=0)
    row = out["by_background"]["grass"]
    assert row["appear_rate"] == pytest.approx(3 / 4)  # any pixel of the concept: windows 2, 3 of image 0, 2 of image 1
    assert row["appear_rate_guarded"] == pytest.approx(2 / 4)  # the faint one (0.5 < 0.81) does not count
    assert out["overall"]["guard_confidence"] == pytest.approx(0.81)


def test_the_guarded_appear_rate_by_row_against_a_loop_over_windows():
    from lightning_gd.causal.context_summary import guard_confidence, summarize

    torch.manual_seed(2)
    B, h, w = 5, 3, 4
    locations = torch.tensor([0, 2, 5, 7, 9, 11])  # rows 0, 0, 1, 1, 2, 2
    L = len(locations)
    before = (torch.rand(B, L) < 0.3).double() * 4
    after = before + (torch.rand(B, L) < 0.5).double() * 3
    found = {
        "before": before,
        "after": after,
        "confidence_before": torch.rand(B, L, dtype=torch.float64),
        "confidence_after": torch.rand(B, L, dtype=torch.float64),
        "window": torch.full((L,), 16.0, dtype=torch.float64),
        "background": torch.randint(0, 2, (B, L)),
        "locations": locations,
        "size": (h, w),
    }
    bar = guard_confidence(found)
    out = summarize(found, ("sky", "grass"), respond=0.05, reps=10, seed=0)
    for g, name in enumerate(("sky", "grass")):
        want = []
        for r in range(h):
            hits = [
                bool(after[b, i] > 0 and found["confidence_after"][b, i] >= bar)
                for b in range(B)
                for i in range(L)
                if int(locations[i]) // w == r and int(found["background"][b, i]) == g and before[b, i] == 0
            ]
            want.append(sum(hits) / len(hits) if hits else None)
        got = out["by_background"][name]["appear_by_row"]
        assert got == [pytest.approx(v) if v is not None else None for v in want]

"""The shipped generator's targets (world-card): the share bar by hand on made-up fractions, and the table; the
per-image presence against a loop over images, and what its table says of a short share."""

import pytest
import torch

from lightning_gd.world.cards import presence_rows, presence_table, targets_table
from lightning_gd.world.evaluate import presence, quality_bar, stand_rates, targets


def _rows(**shares):
    return {c: {"real": r, "generated": g, "real_segmented": r, "relative_difference": g / r - 1 if r else float("nan")}
            for c, (r, g) in shares.items()}  # fmt: skip


def test_share_bar_is_plus_minus_15_percent_for_every_concept():
    # generated / real: sky 1.14, grass 0.86 (inside ±15 %); road 1.16, cloud 0.84 (outside); window 0.86 (a
    # part, the same bar now), door 0.81 (below it), tree 1.2 (outside)
    fractions = _rows(sky=(0.30, 0.342), grass=(0.20, 0.172), road=(0.10, 0.116), cloud=(0.05, 0.042),
                      window=(0.02, 0.0172), door=(0.01, 0.0081), tree=(0.1, 0.12), sun=(0.0, 0.001))  # fmt: skip
    bar = quality_bar(fractions)
    assert bar == {"sky": True, "grass": True, "road": False, "cloud": False, "window": True, "door": False,
                   "tree": False}  # fmt: skip
    assert "sun" not in bar  # no real pixels: no share to match
    # a lower floor for the parts is still an option
    assert quality_bar(fractions, part_floor=0.8)["door"] is True


def test_the_same_bar_on_the_share_of_images_a_concept_is_in():
    fractions = _rows(sun=(0.01, 0.005), door=(0.02, 0.02))
    fractions["sun"].update(in_images_real=0.4, in_images_generated=0.2)  # dropped in half the images
    fractions["door"].update(in_images_real=0.7, in_images_generated=0.75)
    assert quality_bar(fractions, key="in_images") == {"sun": False, "door": True}


def test_targets_rows_and_table():
    fractions = _rows(sky=(0.3, 0.3), window=(0.02, 0.017))
    rows = targets(fid=28.2, fractions=fractions, confidence=0.968, weights_mb=11.5, precision_recall=(0.71, 0.64))
    assert [r["holds"] for r in rows] == [True, True, True, False, True]
    assert rows[0]["target"] == "world FID" and rows[0]["measured"] == "28.2 (precision 0.71, recall 0.64)"
    assert rows[2]["measured"] == "0.0170 / 0.0200 = 0.85×" and rows[2]["bar"] == "0.85× … 1.15×"
    table = targets_table(rows).splitlines()
    assert table[0].split() == ["target", "measured", "target", "value", "holds"]
    assert table[-1] == "4 of 5 targets hold"
    assert table[4].startswith("segmenter confidence on samples") and table[4].endswith("NO")
    assert {len(line.rstrip()) - len(line.rstrip().split()[-1]) for line in table[1:-1]} == {len(table[0]) - 5}
    assert targets(fid=31.0, fractions=fractions, confidence=0.99, weights_mb=15.1)[0]["holds"] is False


def test_geometry_and_transplant_targets_at_each_objects_own_size():
    fractions = _rows(door=(0.02, 0.02), window=(0.03, 0.03), tree=(0.08, 0.08))
    for c, px in (("door", 126.0), ("window", 60.0), ("tree", 326.0)):
        fractions[c]["median_instance_real"] = px
    transplants = [
        {"concept": "tree", "region": 1, "reproduced": 0.2},
        {"concept": "tree", "region": 2, "reproduced": 0.55},  # a tree of 326 px is nearest a 2×2 square
        {"concept": "door", "region": 1, "reproduced": 0.4},  # a door of 126 px: 1×1 (√(126/64) = 1.4)
        {"concept": "door", "region": 2, "reproduced": 0.9},
    ]
    rows = targets(25.0, fractions, 0.98, 11.0, cell_px=64, transplants=transplants)
    got = {r["target"]: (r["measured"], r["holds"]) for r in rows[-5:]}
    assert got == {
        "door median instance (renders)": ("1.97 cells", True),
        "window median instance (renders)": ("0.94 cells", False),
        "tree median instance (renders)": ("5.09 cells", True),
        "tree transplant at 2×2 cells (reproduced)": ("0.55", True),
        "door transplant at 1×1 cells (reproduced)": ("0.40", False),
    }


def test_presence_against_a_loop_over_images():
    torch.manual_seed(3)
    labels = torch.randint(0, 4, (7, 10, 20))
    labels[:3][labels[:3] == 2] = 0  # concept 2 in images 3… only
    labels[5, 0, 0] = 3
    labels[5][labels[5] == 3] = 1
    labels[5, 0, 0] = 3  # concept 3 covers 1 pixel of 200 in image 5: 0.5 %, in; one pixel less would be out
    labels = labels.clone()
    fraction, share = presence(labels, 5)
    for c in range(5):
        shares = [float((img == c).sum()) / img.numel() for img in labels]
        inside = [v for v in shares if v >= 0.005]
        assert abs(float(fraction[c]) - len(inside) / len(shares)) < 1e-12
        assert abs(float(share[c]) - (sum(inside) / len(inside) if inside else 0.0)) < 1e-12
    assert float(fraction[4]) == 0.0 and float(share[4]) == 0.0  # a concept in no image
    assert float(fraction[2]) == 4 / 7


def test_presence_table_says_where_a_short_share_comes_from():
    row = {"real": 0.01, "generated": 0.005, "real_segmented": 0.01, "relative_difference": -0.5}
    fractions = {
        # dropped per image: in half the images, as large where it is in
        "sun": {**row, "in_images_real": 0.4, "in_images_generated": 0.2, "share_where_in_real": 0.015,
                "share_where_in_generated": 0.014},
        # in more images but drawn at 40 % of the size
        "road": {**row, "in_images_real": 0.6, "in_images_generated": 0.73, "share_where_in_real": 0.083,
                 "share_where_in_generated": 0.034},
        "sky": {**row, "in_images_real": 1.0, "in_images_generated": 1.0, "share_where_in_real": 0.42,
                "share_where_in_generated": 0.44},
        "ghost": {**row, "in_images_real": 0.0, "in_images_generated": 0.1, "share_where_in_real": 0.0,
                  "share_where_in_generated": 0.01},
        "old": row,  # a row without per-image numbers (an older card) is left out
    }  # fmt: skip
    rows = presence_rows(fractions)
    assert [r[0] for r in rows] == ["sun", "road", "sky", "ghost"]
    assert rows[0][1:] == ["40.0% → 20.0%", "1.50% → 1.40%", "in fewer images"]
    assert rows[1][3] == "in more images, smaller" and rows[2][3] == "as real"
    assert rows[3][3] == "as real"  # nothing real to compare with: no claim
    lines = presence_table(fractions).splitlines()
    assert lines[0].startswith("concept") and len(lines) == 5
    assert lines[1].endswith("in fewer images") and len({line.index("→") for line in lines[1:]}) == 1
    assert presence_table({"old": row}) == ""  # nothing to show


def test_instance_sizes_are_medians_of_connected_components_drawn_by_hand():
    from lightning_gd.world.evaluate import instance_sizes

    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, 0:2, 0:2] = 1  # a 4-pixel instance of concept 1
    labels[0, 5:8, 5:8] = 1  # and a 9-pixel one
    labels[1, 0:1, 0:5] = 1  # a 5-pixel one in the other image
    labels[1, 3, 3] = 2  # diagonal neighbours are separate instances (4-connectivity): two of 1 pixel
    labels[1, 4, 4] = 2
    sizes = instance_sizes(labels, 4)
    assert sizes[1] == 5.0 and sizes[2] == 1.0 and sizes[3] == 0.0
    assert sizes[0] == (51 + 57) / 2  # background: one component per image, 64 − 13 and 64 − 7 pixels


def test_stand_rates_against_a_loop_over_cells():
    torch.manual_seed(5)
    n, H, W, cell, C, c = 6, 8, 12, 4, 4, 3
    without = torch.randint(0, 3, (n, H, W))  # backgrounds 0, 1, 2; none of them is concept 3
    with_c = without.clone()
    with_c[torch.rand(n, H, W) < 0.3] = c
    with_c[0, :4, :4] = c  # one cell fully covered
    got = stand_rates(with_c, without, c, C, cell)
    windows: dict[int, list[tuple[float, int]]] = {}
    for i in range(n):
        for y in range(0, H, cell):
            for x in range(0, W, cell):
                counts = torch.bincount(without[i, y : y + cell, x : x + cell].flatten(), minlength=C)
                bg = int(counts.argmax())  # ties: the lower index, as argmax takes the first
                share = float((with_c[i, y : y + cell, x : x + cell] == c).float().mean())
                windows.setdefault(bg, []).append((share, y // cell))
    assert set(got) == set(windows)
    for bg, cells in windows.items():
        assert got[bg]["windows"] == len(cells)
        assert abs(got[bg]["covered"] - sum(s > 0 for s, _ in cells) / len(cells)) < 1e-12
        assert abs(got[bg]["half_covered"] - sum(s >= 0.5 for s, _ in cells) / len(cells)) < 1e-12
        for r in range(H // cell):
            in_row = [s for s, row in cells if row == r]
            want = sum(s >= 0.5 for s in in_row) / len(in_row) if in_row else None
            assert got[bg]["half_covered_by_row"][r] == (pytest.approx(want) if want is not None else None)


def test_stand_rates_of_a_tree_drawn_only_on_grass():
    without = torch.zeros(1, 8, 16, dtype=torch.long)  # sky (0) on the left cell, grass (1) on the right
    without[:, :, 8:] = 1
    with_c = without.clone()
    with_c[0, 2:8, 10:14] = 2  # a tree on the grass, 24 of 64 pixels
    got = stand_rates(with_c, without, 2, 3, 8)
    assert got[0] == {"windows": 1, "covered": 0.0, "half_covered": 0.0, "half_covered_by_row": [0.0]}
    assert got[1] == {"windows": 1, "covered": 1.0, "half_covered": 0.0, "half_covered_by_row": [0.0]}


def test_the_card_tables_of_where_objects_stand_and_of_the_transplant_backgrounds():
    from lightning_gd.world.cards import _by_background, _stand_md

    without = torch.zeros(1, 8, 16, dtype=torch.long)
    without[:, :, 8:] = 1
    with_c = without.clone()
    with_c[0, 0:8, 8:14] = 2  # the object covers 48 of the grass cell's 64 pixels
    rates = stand_rates(with_c, without, 2, 3, 8)
    stand = {"tree": {"n": 1, "cell_side": 8, "by_background": {["sky", "grass"][b]: v for b, v in rates.items()}}}
    md = "\n".join(_stand_md(stand))
    assert "**tree** (1 scenes, 8×8 px cells)" in md
    assert "| sky | 1 | 0.000 | 0.000 | 0.000 |" in md and "| grass | 1 | 1.000 | 1.000 | 1.000 |" in md
    assert _stand_md({}) == []
    t = {
        "donor_share": 0.8,
        "by_background": {"sky": {"pairs": 12, "kept_share": 0.4}, "sun": {"pairs": 3, "kept_share": 0.8}},
    }
    assert _by_background(t) == "sky (12) 0.50"  # backgrounds of fewer than 10 pairs are left out

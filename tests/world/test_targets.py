"""The shipped generator's targets (world-card): the share bar by hand on made-up fractions, and the table; the
per-image presence against a loop over images, and what its table says of a short share."""

import torch

from lightning_gd.world.cards import presence_rows, presence_table, targets_table
from lightning_gd.world.evaluate import presence, quality_bar, targets


def _rows(**shares):
    return {c: {"real": r, "generated": g, "real_segmented": r, "relative_difference": g / r - 1 if r else float("nan")}
            for c, (r, g) in shares.items()}  # fmt: skip


def test_share_bar_is_plus_minus_15_percent_and_parts_may_fall_to_0_8():
    # generated / real: sky 1.14, grass 0.86 (inside ±15 %); road 1.16, cloud 0.84 (outside); window 0.81 (a
    # part: ≥ 0.8 holds), door 0.79 (below the parts' floor), tree 1.2 (parts get no extra room above)
    fractions = _rows(sky=(0.30, 0.342), grass=(0.20, 0.172), road=(0.10, 0.116), cloud=(0.05, 0.042),
                      window=(0.02, 0.0162), door=(0.01, 0.0079), tree=(0.1, 0.12), sun=(0.0, 0.001))  # fmt: skip
    bar = quality_bar(fractions)
    assert bar == {"sky": True, "grass": True, "road": False, "cloud": False, "window": True, "door": False,
                   "tree": False}  # fmt: skip
    assert "sun" not in bar  # no real pixels: no share to match


def test_targets_rows_and_table():
    fractions = _rows(sky=(0.3, 0.3), window=(0.02, 0.017))
    rows = targets(fid=58.2, fractions=fractions, confidence=0.968, weights_mb=11.5)
    assert [r["holds"] for r in rows] == [True, True, True, False, True]
    assert rows[0]["target"] == "world FID" and rows[0]["measured"] == "58.2"
    assert rows[2]["measured"] == "0.0170 / 0.0200 = 0.85×" and rows[2]["bar"] == "0.8× … 1.15×"
    table = targets_table(rows).splitlines()
    assert table[0].split() == ["target", "measured", "target", "value", "holds"]
    assert table[-1] == "4 of 5 targets hold"
    assert table[4].startswith("segmenter confidence on samples") and table[4].endswith("NO")
    assert {len(line.rstrip()) - len(line.rstrip().split()[-1]) for line in table[1:-1]} == {len(table[0]) - 5}
    assert targets(fid=61.0, fractions=fractions, confidence=0.99, weights_mb=15.1)[0]["holds"] is False


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

"""The shipped generator's targets (world-card): the share bar by hand on made-up fractions, and the table."""

from lightning_gd.world.cards import targets_table
from lightning_gd.world.evaluate import quality_bar, targets


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

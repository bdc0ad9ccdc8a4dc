"""Figures drawn without pyplot, read back from their matplotlib `Figure`: every axis holds every value it plots
(negative shares included), counts have whole-number ticks and a zero origin, bands and lines have legend
entries, error bars appear only where there is spread, per-layer bars are shares with "k of U" totals, the
comparison's titles and ticks do not overlap, and every figure renders to a PNG (or an RGB array)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.patches import Rectangle

from lightning_gd.reports import emergence_figures as E
from lightning_gd.reports import figures as F
from tests.helpers import is_png

SUMMARY = {
    "concept": "tree", "layer": "layer4", "top_n": 20, "sizes": [1, 2, 5, 10, 20, 40, 128], "presence": 0.05,
    "n_test": 200,
    "ablation_removed": {"alpha": [0.1, 0.3, 0.6, 0.8, 0.98, 1.0, 1.0], "iou": [0.1, 0.28, 0.5, 0.79, 0.92, 0.98, 1.0],
                         "random_mean": [-0.02, -0.03, 0.07, -0.04, -0.17, -0.26, 1.0],
                         "random_std": [0.01, 0.02, 0.08, 0.14, 0.21, 0.45, 0.0]},
    "removed_at_top_n": {"alpha": 0.98, "iou": 0.92, "random_mean": -0.17, "random_std": 0.21},
}  # fmt: skip
HISTORY = [
    {"step": s, "layer": "layer4", "units": 2, "best_iou": [0.1 * s, 0.02], "best_concept": ["tree", "sky"],
     "interpretable": s, "distinct_concepts": 1, "mean_iou": 0.1 * s, "per_concept": {"tree": s, "sky": 0},
     "iou_threshold": 0.05}
    for s in (1, 2, 3)
]  # fmt: skip


def plotted_y(ax) -> list[float]:
    """Every y value drawn in data coordinates: lines, bar tops and bottoms, bands, error bars."""
    values = []
    for line in ax.lines:
        if line.get_transform() == ax.transData:  # axhline/axvline span the axes, not data
            values += list(np.asarray(line.get_ydata(), dtype=float))
    for patch in ax.patches:
        if isinstance(patch, Rectangle):
            values += [patch.get_y(), patch.get_y() + patch.get_height()]
    for coll in ax.collections:
        if isinstance(coll, PolyCollection):
            values += [y for path in coll.get_paths() for y in path.vertices[:, 1]]
        if isinstance(coll, LineCollection):
            values += [y for seg in coll.get_segments() for y in seg[:, 1]]
    return [v for v in values if np.isfinite(v)]


def assert_holds_everything(ax):
    lo, hi = ax.get_ylim()
    values = plotted_y(ax)
    assert values and lo <= min(values) and hi >= max(values), (ax.get_title(), (lo, hi), min(values), max(values))


def assert_counts(ax):
    ax.figure.canvas.draw()
    lo, hi = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
    assert lo == 0, (ax.get_title(), lo)


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def test_ace_curve_holds_the_random_baseline_and_labels_its_band_and_line():
    ax = F.ace_curve_plot(SUMMARY).axes[0]
    assert_holds_everything(ax)
    assert ax.get_ylim()[0] <= -0.26 - 0.45  # mean − s.d. at n = 40, far below the old −0.05 floor
    texts = legend_texts(ax)
    expected = {"α (causal search)", "IoU (dissection)", "random units (mean)", "random ± 1 s.d.", "n = 20 (reported)"}
    assert expected <= set(texts)


def test_ace_curve_has_a_linear_panel_up_to_30_units_with_its_own_y_range():
    fig = F.ace_curve_plot(SUMMARY)
    full, zoom = fig.axes
    assert full.get_xscale() == "log" and zoom.get_xscale() == "linear"
    assert zoom.get_xlim() == (0.0, 30.0) and F.ace_zoom_limit(20) == 30 and F.ace_zoom_limit(40) == 60
    drawn = [line for line in zoom.lines if line.get_transform() == zoom.transData]
    assert all(max(line.get_xdata()) <= 20 for line in drawn)  # sizes 1 … 20 of SUMMARY; 40 and 128 only in full
    assert_holds_everything(zoom)
    assert zoom.get_ylim()[0] > full.get_ylim()[0] + 0.3  # the n = 40 tail (−0.26 − 0.45) does not squash it
    assert zoom.get_ylim()[0] <= -0.17 - 0.21  # the random band at n = 20
    assert [line.get_xdata()[0] for line in zoom.lines if line.get_linestyle() == ":"] == [20]  # the reported n


def test_ace_curve_without_spread_draws_no_band():
    flat = {**SUMMARY, "ablation_removed": {**SUMMARY["ablation_removed"], "random_std": [0.0] * 7}}
    ax = F.ace_curve_plot(flat).axes[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert "random ± 1 s.d." not in legend_texts(ax)
    assert_holds_everything(ax)


def test_removal_bars_go_below_zero_and_error_bars_only_where_draws_differ():
    door = {**SUMMARY, "concept": "door", "removed_at_top_n": {"alpha": 0.6, "iou": -0.1, "random_mean": -0.3,
                                                               "random_std": 0.0}}  # fmt: skip
    ax = F.removal_plot([SUMMARY, door]).axes[0]
    assert_holds_everything(ax)
    assert ax.get_ylim()[0] <= -0.3 and ax.get_ylim()[0] <= -0.17 - 0.21
    (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]  # the one error bar container's lines
    assert len(bars.get_segments()) == 1  # tree's random draws differ; door's do not: no zero-length bar
    assert "random ± 1 s.d." in legend_texts(ax)
    heights = sorted(p.get_height() for p in ax.patches if isinstance(p, Rectangle))
    assert heights[0] == -0.3 and heights[-1] == 0.98


def test_removal_without_a_value_draws_no_bar_rather_than_zero():
    missing = {**SUMMARY, "removed_at_top_n": {}}  # top_n outside the curve's sizes
    ax = F.removal_plot([missing]).axes[0]
    assert all(np.isnan(p.get_height()) for p in ax.patches if isinstance(p, Rectangle))


def test_layer_summary_shows_shares_with_totals_and_counts_with_integer_ticks():
    categories = {"tree": "object", "door": "part"}
    summaries = [
        {"layer": "layer1", "units": 256, "interpretable": 12, "per_concept": {"tree": 10, "door": 2},
         "distinct_concepts": 2},
        {"layer": "layer6", "units": 32, "interpretable": 8, "per_concept": {"tree": 8}, "distinct_concepts": 1},
    ]  # fmt: skip
    fig = F.layer_summary_plot(summaries, categories, "2 layers, threshold quantile")
    shares, concepts = fig.axes[:2]
    stacks = {}
    for p in shares.patches:
        x = round(p.get_x() + p.get_width() / 2)
        stacks[x] = stacks.get(x, 0) + p.get_height()
    assert stacks == pytest.approx({0: 12 / 256, 1: 8 / 32})
    assert [t.get_text() for t in shares.texts] == ["12 of 256", "8 of 32"]
    assert shares.get_ylim()[0] == 0 and "2 of" not in shares.get_ylabel()
    assert_holds_everything(shares)
    assert_counts(concepts)
    assert fig._suptitle.get_text().endswith("threshold quantile")


def test_counts_have_integer_ticks_and_a_zero_origin():
    assert_counts(F.concept_bar_plot({"tree": 3, "door": 1}, {"tree": "object", "door": "part"}, "layer4").axes[0])
    rows = [{"name": "a", "layer": "layer4", "threshold": "quantile", "object_units": 3, "distinct_concepts": 2,
             "mean_iou": 0.2}, {"name": "b", "layer": "layer4", "threshold": "iqr", "object_units": 5,
             "distinct_concepts": 4, "mean_iou": 0.3}]  # fmt: skip
    objects, distinct, iou = F.comparison_plot(rows, "compare").axes
    assert_counts(objects), assert_counts(distinct)
    assert iou.get_ylim()[0] == 0
    fig = E.emergence_plot(HISTORY, "emergence")
    for ax in (fig.axes[0], fig.axes[1], fig.axes[3]):
        assert_counts(ax)
        assert_holds_everything(ax)
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3]  # the measured steps
    ax = F.unit_fid_plot(torch.tensor([3.0, 1.0, 2.0]), 1, "per-unit FID").axes[0]
    assert ax.get_ylim()[0] == 0 and legend_texts(ax) == ["top 1 (ablated)", "other units"]
    assert_holds_everything(ax)


def test_comparison_titles_and_ticks_do_not_overlap():
    """Two checkpoints dissected into `a/dissect` and `b/dissect` are both named "dissect" by default: their bars
    stay apart, and the layer and threshold mode under each name tell them apart."""
    rows = [
        {"name": "dissect", "layer": "layer4", "threshold": "quantile", "object_units": 3, "distinct_concepts": 2,
         "mean_iou": 0.2},
        {"name": "dissect", "layer": "layer4", "threshold": "iqr", "object_units": 5, "distinct_concepts": 4,
         "mean_iou": 0.3},
    ]  # fmt: skip
    fig = F.comparison_plot(rows, "comparison: quantile, iqr")
    for ax, key in zip(fig.axes, ("object_units", "distinct_concepts", "mean_iou")):
        bars = sorted(ax.patches, key=lambda b: b.get_x())
        assert len({b.get_x() for b in bars}) == 2 and [b.get_height() for b in bars] == [r[key] for r in rows]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dissect\nlayer4\nquantile", "dissect\nlayer4\niqr"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [fig._suptitle.get_window_extent(renderer)]
    for ax in fig.axes:
        boxes.append(ax.title.get_window_extent(renderer))
        boxes.append(ax.get_tightbbox(renderer))  # the axes with its tick labels
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            inside = a.x0 >= b.x0 and a.x1 <= b.x1 and a.y0 >= b.y0 and a.y1 <= b.y1  # a title is in its axes' box
            assert inside or not a.overlaps(b), (a, b)


def test_every_figure_renders(tmp_path):
    for array in (E.heatmap_image(HISTORY), E.emergence_figure(HISTORY, "title")):
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and array.std() > 0
    strips = {0: torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}
    columns = [(record, strips) for record in HISTORY]
    assert E.units_over_time_figure(columns, [0, 1]).shape[2] == 3
    assert is_png(F.ace_curve_figure(SUMMARY, tmp_path / "ace.png"))
    assert is_png(F.removal_figure([SUMMARY, {**SUMMARY, "concept": "sky"}]))
    assert is_png(F.unit_fid_figure(torch.tensor([3.0, 1.0, 2.0]), 1, "per-unit FID"))
    per_concept, categories = {"tree": 3, "door": 1}, {"tree": "object", "door": "part"}
    assert is_png(F.concept_bar_chart(per_concept, categories, "layer4"))
    assert is_png(F.concept_bar_chart({}, categories, "no interpretable unit"))
    summaries = [{"layer": "layer3", "units": 8, "interpretable": 4, "per_concept": per_concept,
                  "distinct_concepts": 2}] * 2  # fmt: skip
    assert is_png(F.layer_summary_figure(summaries, categories, "layers"))
    assert (tmp_path / "ace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

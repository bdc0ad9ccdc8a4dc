"""Figures drawn without pyplot: bars of the comparison figure stay apart for rows of the same name, and every
figure of the project renders to a PNG (or an RGB array) from a minimal input."""

from __future__ import annotations

import numpy as np
import torch

from lightning_gd.reports import figures as figures_module
from tests.helpers import is_png


def test_comparison_figure_keeps_rows_with_the_same_name_apart(monkeypatch):
    """Two checkpoints dissected into `a/dissect` and `b/dissect` are both named "dissect" by default."""
    figures = []
    save = figures_module.save
    monkeypatch.setattr(figures_module, "save", lambda fig, path: figures.append(fig) or save(fig, path))
    rows = [
        {"name": "dissect", "object_units": 3, "distinct_concepts": 2, "mean_iou": 0.2},
        {"name": "dissect", "object_units": 5, "distinct_concepts": 4, "mean_iou": 0.3},
    ]
    assert is_png(figures_module.comparison_figure(rows, "same names"))
    for ax, key in zip(figures[0].axes, ("object_units", "distinct_concepts", "mean_iou")):
        bars = sorted(ax.patches, key=lambda b: b.get_x())
        assert len({b.get_x() for b in bars}) == 2, key  # side by side, not drawn over each other
        assert [b.get_height() for b in bars] == [r[key] for r in rows]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dissect", "dissect"]


def test_every_figure_renders(tmp_path):
    history = [
        {"step": s, "layer": "layer4", "best_iou": [0.1 * s, 0.02], "best_concept": ["tree", "sky"],
         "interpretable": s, "distinct_concepts": 1, "mean_iou": 0.1 * s, "per_concept": {"tree": s, "sky": 0},
         "iou_threshold": 0.05}
        for s in (1, 2, 3)
    ]  # fmt: skip
    for array in (figures_module.heatmap_image(history), figures_module.emergence_figure(history, "title")):
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and array.std() > 0
    strips = {0: torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}
    columns = [(record, strips) for record in history]
    assert figures_module.units_over_time_figure(columns, [0, 1]).shape[2] == 3
    summary = {
        "concept": "tree", "layer": "layer4", "top_n": 2, "sizes": [1, 2, 4], "presence": 0.1, "n_test": 8,
        "ablation_removed": {"alpha": [0.5, 0.9, 1.0], "iou": [0.2, 0.4, 1.0], "random_mean": [0.0, 0.1, 1.0],
                             "random_std": [0.0, 0.05, 0.0]},
        "removed_at_top_n": {"alpha": 0.9, "iou": 0.4, "random_mean": 0.1, "random_std": 0.05},
    }  # fmt: skip
    assert is_png(figures_module.ace_curve_figure(summary, tmp_path / "ace.png"))
    assert is_png(figures_module.removal_figure([summary, {**summary, "concept": "sky"}]))
    assert is_png(figures_module.unit_fid_figure(torch.tensor([3.0, 1.0, 2.0]), 1, "per-unit FID"))
    per_concept, categories = {"tree": 3, "door": 1}, {"tree": "object", "door": "part"}
    assert is_png(figures_module.concept_bar_chart(per_concept, categories, "layer4"))
    summaries = [{"layer": "layer3", "per_concept": per_concept, "distinct_concepts": 2}] * 2
    assert is_png(figures_module.layer_summary_figure(summaries, categories, "layers"))
    assert (tmp_path / "ace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

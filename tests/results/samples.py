"""One small, complete document per results file, laid out as the jobs write them, for the tests of the result
classes and of their readers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

UNITS = [
    {
        "unit": u,
        "label": label,
        "category": "object",
        "iou": iou,
        "threshold": 0.5,
        "interpretable": iou > 0.05,
        "realistic": True,
    }
    for u, (label, iou) in enumerate([("tree", 0.31), ("sky", 0.02), ("door", 0.2)])
]


def dissection() -> dict:
    summary = {
        "layer": "layer4",
        "units": 3,
        "interpretable": 2,
        "distinct_concepts": 2,
        "mean_iou": 0.255,
        "per_concept": {"tree": 1, "door": 1},
        "unrealistic": [],
    }
    return {
        "version": 1,
        "settings": {
            "layers": ["layer4"],
            "n": 40,
            "seed": 0,
            "threshold": "quantile",
            "q": 0.99,
            "generator": "world",
        },
        "vocabulary": {"names": ["tree", "sky", "door"], "categories": ["object", "object", "object"]},
        "layers": {
            "layer4": {
                "featuremap_size": [8, 8],
                "iou_table": "iou-layer4.npy",
                "summary": summary,
                "units": copy.deepcopy(UNITS),
            }
        },
    }


def causal() -> dict:
    return {
        "version": 1,
        "concept": "tree",
        "layer": "layer4",
        "settings": {"lam": 0.1, "top_n": 2},
        "presence": 0.05,
        "top_n": 2,
        "top_units": [2, 0],
        "units": [
            {"unit": 2, "alpha": 1.0, "iou": 0.04},
            {"unit": 0, "alpha": 0.8, "iou": 0.31},
            {"unit": 1, "alpha": 0.0, "iou": 0.0},
        ],
        "epochs": 4,
        "global_step": 128,
        "diagnosis": None,
    }


def ace() -> dict:
    return {
        "version": 1,
        "concept": "tree",
        "layer": "layer4",
        "presence": 0.05,
        "sizes": [1, 2, 3],
        "top_n": 2,
        "ablation_removed": {"alpha": [0.5, 0.9, 0.95], "iou": [0.2, 0.4, None]},
        "removed_at_top_n": {"alpha": 0.9, "iou": 0.4, "random_mean": 0.01, "random_std": 0.02},
        "side_effects_at_top_n": {"alpha": {"tree": -0.9, "sky": 0.01, "door": None}},
        "insertion_at_top_n": {"alpha": {"ace": 0.07, "appeared": 0.05}, "random": {"ace": 0.0, "ace_std": 0.01}},
        "n_test": 200,
        "top_units": [2, 0],
        "generator": "world",
    }


def context() -> dict:
    settings = {
        "concept": "door",
        "layer": "layer4",
        "n": 4,
        "seed": 3,
        "region": 1,
        "respond": 0.05,
        "top_n": 2,
        "locations": None,
        "generator": "world",
        "bootstrap": 10,
        "seconds": 1.5,
        "units_from": "--units",
        "k_c_from": "concept means",
    }
    row = {"effect": 0.01, "ci": [0.0, 0.02], "appear_rate": None, "respond_rate": 0.1, "count": 64, "count_free": 0}
    return {
        "version": 1,
        "settings": settings,
        "units": [2, 0],
        "k_c": [1.5, 0.7],
        "by_background": {"building": row},
        "overall": {"effect": 0.01, "appear_rate": 0.2, "respond_rate": 0.1, "count": 64},
        "trace": {
            "layers": ["layer5", "layer6"],
            "visible": [0.3, None],
            "not_visible": [0.1, 0.05],
            "heatmap": [[0.1, None], [0.2, 0.3]],
            "visible_count": 3,
            "not_visible_count": 61,
        },
        "where_images": [1, 0],
    }


def unit_fid() -> dict:
    return {
        "version": 1,
        "layer": "layer4",
        "n": 40,
        "top_k": 8,
        "score": "max activation over the featuremap",
        "ranking": [1, 2, 0],
        "unit_fid": [200.5, 410.25, 300.0],
        "ablation": [
            {"ablation": "original", "units": [], "fid": 194.5},
            {"ablation": "top-1 FID units", "units": [1], "fid": 190.1},
            {
                "ablation": "1 random units (2 draws)",
                "units": [[0], [2]],
                "fid": 196.0,
                "fid_std": 1.5,
                "fid_draws": [195.0, 197.0],
            },
        ],
        "generator": "world",
        "generator_fingerprint": "0123abcd",
        "real": "world renders",
        "real_n": 50,
        "n_eval": 20,
    }


def emergence() -> dict:
    records = [
        {
            "step": s,
            "batches": s,
            "checkpoint": f"ckpts/step={s}.ckpt",
            "layer": "layer4",
            "units": 3,
            "interpretable": k,
            "distinct_concepts": k,
            "mean_iou": m,
            "per_concept": {"tree": k, "door": 0},
            "best_iou": [0.1, 0.0, 0.02],
            "best_concept": ["tree", "sky", "door"],
            "iou_threshold": 0.05,
            "seconds": 0.5,
            "fixed_units": [0, 2],
        }
        for s, k, m in ((100, 1, 0.1), (200, 2, 0.2))
    ]
    return {"version": 1, "history": records}


def compare() -> dict:
    row = {
        "name": "dissect",
        "layer": "layer4",
        "threshold": "quantile",
        "interpretable": 2,
        "object_units": 2,
        "distinct_concepts": 2,
        "mean_iou": 0.255,
        "per_concept": {"tree": 1, "door": 1},
    }
    return {"version": 1, "rows": [row, {**row, "name": "iqr", "threshold": "iqr"}]}


def causal_summary() -> dict:
    run = {k: v for k, v in ace().items() if k != "version"}
    return {"version": 1, "runs": [run, {**run, "concept": "door"}]}


DOCUMENTS = {
    "dissect.json": dissection,
    "causal.json": causal,
    "ace.json": ace,
    "context.json": context,
    "unit_fid.json": unit_fid,
    "emergence.json": emergence,
    "compare.json": compare,
    "causal_summary.json": causal_summary,
}


def write(folder: Path, name: str, doc) -> Path:
    """`doc` as `folder/name`, written as a hand edit would be (NaN allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(doc, indent=1))
    return folder / name

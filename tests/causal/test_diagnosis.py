"""The end-of-search diagnosis of α against hand-made α vectors: collapsed (every α below 0.05), saturated
(more than n units at 1), or none; and the λ each one suggests. And the check that `test` reads the checkpoint
that `causal.json` was written from."""

import json

import torch

from lightning_gd.causal.diagnosis import diagnose, stale_checkpoint


def test_a_collapsed_search_is_told_to_lower_lambda():
    alpha = torch.full((256,), 0.001)
    alpha[7] = 0.0016
    said = diagnose(alpha, 20, 0.1)
    assert said.startswith("α collapsed: every α is below 0.05 (the largest 0.0016)")
    assert "λ = 0.1" in said and said.endswith("(--model.init_args.lam 0.01)")
    alpha[:5] = 0.7  # five units grew and the rest shrank: a sparse answer, not a collapse
    assert diagnose(alpha, 20, 0.1) is None


def test_a_saturated_search_is_told_to_raise_lambda():
    alpha = torch.linspace(0, 0.9, 100)
    alpha[:20] = 1.0
    assert diagnose(alpha, 20, 0.01) is None  # exactly n at 1: the top-n is still α's own
    alpha[20] = 0.9995  # the clamp's top counts as 1
    said = diagnose(alpha, 20, 0.01)
    assert said.startswith("α saturated: 21 units reached α = 1, more than the top-20")
    assert said.endswith("(--model.init_args.lam 0.03)")


def test_more_units_asked_than_there_are():
    assert diagnose(torch.tensor([0.9, 0.2]), 20, 0.1) is None  # all units are the top-n
    assert diagnose(torch.tensor([0.04, 0.01]), 20, 0.1).startswith("α collapsed: every α is below 0.05")


def test_a_checkpoint_from_another_fit_is_named(tmp_path):
    assert stale_checkpoint(tmp_path, [3, 1, 2]) is None  # no causal.json yet: nothing to compare with
    units = [{"unit": u, "alpha": a, "iou": 0.1} for u, a in ((3, 0.9), (1, 0.8), (2, 0.7), (0, 0.1))]
    search = {
        "concept": "door",
        "layer": "layer1",
        "settings": {},
        "presence": 0.1,
        "top_n": 3,
        "top_units": [3, 1, 2],
        "units": units,
        "epochs": 1,
        "global_step": 4,
    }
    (tmp_path / "causal.json").write_text(json.dumps(search))
    assert stale_checkpoint(tmp_path, [3, 1, 2]) is None
    said = stale_checkpoint(tmp_path, [3, 2, 1])
    assert said.startswith("the checkpoint's top-3 units (3, 2, 1, …) are not those of ")
    assert "causal.json (3, 1, 2, …): it comes from another fit" in said
    (tmp_path / "causal.json").write_text(json.dumps({"top_units": [3, 1, 2]}))  # hand-edited, fields missing
    said = stale_checkpoint(tmp_path, [3, 2, 1])  # named, with its field: a warning, not a reason to stop a test
    assert said.startswith(f"{tmp_path / 'causal.json'}: ") and "cannot check that its checkpoint" in said

"""Atomic writes and the stage cache: readers see whole files, keys follow their payload, bad files recompute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gd.cache import Cache, atomic_write, cache_key, fingerprint


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write(tmp_path / "a" / "x.txt", b"one")
    atomic_write(tmp_path / "a" / "x.txt", b"two")
    assert (tmp_path / "a" / "x.txt").read_bytes() == b"two"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.txt"]


def test_fingerprint_follows_weights_and_class():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    assert fingerprint(a) == fingerprint(b)
    with torch.no_grad():
        b.weight[0, 0] += 1
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(nn.ReLU()) != fingerprint(nn.Tanh())


def test_cache_computes_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"t": torch.arange(3.0)}

    cache = Cache(tmp_path)
    first = cache.tensors("stage", {"n": 1}, compute, label="x")
    again = cache.tensors("stage", {"n": 1}, compute, label="x")
    other = cache.tensors("stage", {"n": 2}, compute, label="x")
    assert len(calls) == 2 and torch.equal(first["t"], again["t"]) and torch.equal(other["t"], first["t"])
    assert cache_key({"n": 1}) != cache_key({"n": 2})
    assert len(list(tmp_path.glob("stage-x-*.safetensors"))) == 2


def test_per_label_results_and_no_folder(tmp_path):
    out = Cache(tmp_path).per_label(
        "s", {}, lambda: {"a": {"v": torch.ones(1)}, "b": {"v": torch.zeros(1)}}, ["a", "b"]
    )
    assert out["b"]["v"].item() == 0 and len(list(tmp_path.iterdir())) == 2
    assert Cache(None).tensors("s", {}, lambda: {"v": torch.ones(2)})["v"].shape == (2,)
    assert Cache(tmp_path, write=False).path("t", {}) is not None


def test_an_unreadable_cache_file_is_named_and_recomputed(tmp_path):
    cache = Cache(tmp_path)
    cache.tensors("s", {}, lambda: {"v": torch.ones(2)})
    (path,) = tmp_path.glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:20])  # truncated
    with pytest.warns(UserWarning, match=str(path.name)):
        again = cache.tensors("s", {}, lambda: {"v": torch.full((2,), 7.0)})
    assert again["v"].tolist() == [7.0, 7.0]
    assert Cache(tmp_path).tensors("s", {}, lambda: {"v": torch.zeros(2)})["v"].tolist() == [7.0, 7.0]

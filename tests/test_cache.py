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


def test_fingerprint_follows_code_of_parameter_free_networks():
    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

    first = fingerprint(Double())

    class Double(nn.Module):  # noqa: F811  (same name, other code)
        def forward(self, x):
            return 3 * x

    assert fingerprint(Double()) != first
    net = nn.Sequential(nn.ReLU())
    before = fingerprint(net)
    net.eval()
    net(torch.zeros(1))
    assert fingerprint(net) == before  # mode and calls change nothing


def test_a_tampered_or_invalid_cache_file_is_recomputed(tmp_path):
    from safetensors.torch import load_file, save_file

    cache = Cache(tmp_path)
    cache.tensors("s", {}, lambda: {"t": torch.ones(3)})
    (path,) = tmp_path.glob("*.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file({"t": torch.zeros(3)}, path, metadata=meta)  # readable, its checksum kept, but not what was computed
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert cache.tensors("s", {}, lambda: {"t": torch.full((3,), 2.0)})["t"].tolist() == [2.0] * 3
    assert load_file(path)["t"].tolist() == [2.0] * 3
    save_file({"t": torch.zeros(3)}, path)  # a file written by something else: no checksum at all
    with pytest.warns(UserWarning, match="without a checksum"):
        cache.tensors("s", {}, lambda: {"t": torch.full((3,), 2.0)})

    def three(t):
        return None if t["t"].shape == (3,) else f"shape {tuple(t['t'].shape)}, expected (3,)"

    cache.tensors("u", {}, lambda: {"t": torch.ones(4)})
    with pytest.warns(UserWarning, match=r"shape \(4,\), expected \(3,\)"):
        assert cache.tensors("u", {}, lambda: {"t": torch.ones(3)}, check=three)["t"].shape == (3,)
    cache.tensors("v", {}, lambda: {"t": torch.tensor([float("nan")])})
    with pytest.warns(UserWarning, match="NaN or Inf"):
        cache.tensors("v", {}, lambda: {"t": torch.ones(1)})


def test_stale_temporary_files_are_removed(tmp_path):
    import os
    import time

    stale, fresh = tmp_path / ".x.safetensors.123.tmp", tmp_path / ".y.safetensors.456.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    Cache(tmp_path).tensors("s", {}, lambda: {"t": torch.ones(1)})
    assert not stale.exists() and fresh.exists()  # a writer may still be busy with the fresh one


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import os

    atomic_write(tmp_path / "x.json", b"old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "x.json", b"new")
    assert (tmp_path / "x.json").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_writability_is_checked_without_creating_anything(tmp_path, monkeypatch):
    import os

    from lightning_gd.cache import check_writable, staged

    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b" and not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_writable(tmp_path / "f" / "out")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only folder looks to a non-root user
    with pytest.raises(PermissionError, match="cannot write to the output folder"):
        check_writable(tmp_path / "ro")
    monkeypatch.undo()
    with pytest.raises(RuntimeError), staged(tmp_path / "s") as stage:
        (stage / "half.json").write_text("{")
        raise RuntimeError("failed halfway")
    assert list((tmp_path / "s").iterdir()) == []  # nothing of the failed run
    with staged(tmp_path / "s") as stage:
        (stage / "sub").mkdir()
        (stage / "sub" / "ok.json").write_text("{}")
    assert [str(p.relative_to(tmp_path)) for p in sorted((tmp_path / "s").rglob("*"))] == ["s/sub", "s/sub/ok.json"]


def test_fingerprint_follows_settings_outside_the_weights():
    from lightning_gd.models.generators import GeneratorWrapper
    from lightning_gd.zoo.progan import ProGAN, preset
    from lightning_gd.zoo.segmenting import PublishedSegmenter

    net = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)))
    plain, ranged = GeneratorWrapper(net, z_dim=4), GeneratorWrapper(net, z_dim=4, output_range=(0, 1))
    assert fingerprint(plain) != fingerprint(ranged)
    torch.manual_seed(0)
    g = ProGAN(preset(8, 1 / 64))
    clamped = ProGAN(preset(8, 1 / 64), tanh=True)
    clamped.load_state_dict(g.state_dict())
    assert fingerprint(g) != fingerprint(clamped)
    seg = nn.Conv2d(3, 2, 1)
    assert fingerprint(PublishedSegmenter(seg, ["a", "b"])) != fingerprint(
        PublishedSegmenter(seg, ["a", "b"], bgr=True)
    )
    assert fingerprint(g, code=False) == fingerprint(g, code=False) and fingerprint(g, code=False) != fingerprint(g)


def test_ranks_agree_on_a_cache_hit_without_distributed():
    from lightning_gd.cache import _all_ranks_agree

    assert _all_ranks_agree(True) and not _all_ranks_agree(False)


def test_a_dangling_link_as_output_folder_is_named(tmp_path):
    from lightning_gd.cache import check_writable

    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="is a link to a missing .*gone"):
        check_writable(tmp_path / "link" / "out")

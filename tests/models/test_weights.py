"""One loader for weights and checkpoints: local files only, weights-only, errors that name the file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lightning_gd.models.weights import (
    checkpoint_batches,
    checkpoint_files,
    checkpoint_step,
    load_weights,
    read_file,
    state_dict_of,
    training_order,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2))


@pytest.mark.parametrize("layout", ["safetensors", "plain", "wrapped", "lightning"])
def test_every_layout_loads(tmp_path, layout):
    src = _net()
    state = {k: v.clone() for k, v in src.state_dict().items()}
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, path)
        prefix = None
    else:
        path = tmp_path / "w.pt"
        obj = {"plain": state, "wrapped": {"state_dict": state}}.get(layout)
        if layout == "lightning":
            obj = {"state_dict": {f"generator.{k}": v for k, v in state.items()}, "global_step": 8}
        torch.save(obj, path)
        prefix = "generator" if layout == "lightning" else None
    dst = load_weights(_net(), path, prefix)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in state.items())


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found: .*missing.pt"):
        read_file(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is a URL"):
        read_file("https://example.org/w.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt is not readable as weights"):
        read_file(tmp_path / "junk.pt")
    torch.save({"0.weight": torch.zeros(5, 5)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="wrong.pt does not fit Sequential"):
        load_weights(_net(), tmp_path / "wrong.pt")
    with pytest.raises(KeyError, match="no weights under 'G.'; its state_dict prefixes: 0"):
        state_dict_of({"0.weight": torch.zeros(1)}, "G", "f.pt")


def test_code_in_a_pickle_is_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not readable as weights"):
        read_file(tmp_path / "evil.pt")


def test_checkpoint_discovery_and_steps(tmp_path):
    for name in ("step=8.ckpt", "step=12.ckpt", "last.ckpt"):
        torch.save({"global_step": 1}, tmp_path / name)
    files = sorted(checkpoint_files(tmp_path), key=training_order)
    assert [p.name for p in files] == ["step=8.ckpt", "step=12.ckpt", "last.ckpt"]
    assert checkpoint_step({}, tmp_path / "step=12.ckpt") == 12 and checkpoint_step({"global_step": 3}, files[0]) == 3
    loops = {"loops": {"fit_loop": {"epoch_loop.batch_progress": {"total": {"processed": 6}}}}}
    assert checkpoint_batches(loops) == 6 and checkpoint_batches({}) is None
    with pytest.raises(ValueError, match="no global_step and its name has no step=N"):
        checkpoint_step({}, tmp_path / "last.ckpt")


def test_checkpoint_files_from_folders_globs_and_files(foreign_resumed):
    ckdir, _, _ = foreign_resumed
    names = ["last.ckpt", "step=12.ckpt", "step=4.ckpt", "step=8.ckpt"]
    assert [p.name for p in checkpoint_files(ckdir)] == names
    assert [p.name for p in checkpoint_files([str(ckdir / "step=*.ckpt"), ckdir / "last.ckpt"])] == names[1:] + names[
        :1
    ]
    with pytest.raises(FileNotFoundError, match="no checkpoint matches the pattern"):
        checkpoint_files(str(ckdir / "epoch=*.ckpt"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint_files([ckdir / "missing.ckpt"])


def test_state_differences_lists_every_kind_once():
    from lightning_gd.models.weights import shapes_of, state_differences

    expected = {"a.weight": (2, 3), "a.bias": (2,), "bn.num_batches_tracked": ()}
    given = shapes_of({"a.weight": torch.zeros(3, 3), "extra": torch.zeros(1)})
    assert state_differences(expected, given, optional=("num_batches_tracked",)) == (
        "missing (1): a.bias; unexpected (1): extra; shapes differ (1): a.weight (3, 3) (expected (2, 3))"
    )
    assert (
        state_differences(
            expected, shapes_of({"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}), ("num_batches_tracked",)
        )
        is None
    )

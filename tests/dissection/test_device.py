"""The per-batch work of a dissection stays on the generator's device: under a `TorchFunctionMode` that records
every call that would bring a tensor's values back to the host (`item`, `tolist`, `cpu`, `numpy`, truth values,
`int`/`float`), one batch of the one-pass quantile dissection — band counts, label areas, top images, ranges —
makes none (`nonzero` only reports a count, as any sparse selection must). Runs on the CPU, and on CUDA too when
this machine has it, where the counts must also equal the CPU's."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lightning_gd.dissection.bands import BandTally, RangeTracker
from lightning_gd.dissection.stats import TopK, relative_peaks

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TO_HOST = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
FROM_HOST = {"tensor", "as_tensor"}  # host values copied to the device: on a GPU that waits for it as well


class HostReads(TorchFunctionMode):
    """Records the names of calls that read a tensor's values on the host or copy host values to the device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in TO_HOST | FROM_HOST:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def batch(device: str):
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4, 6, 8, 8, generator=g)
    r[:, 0] = torch.relu(r[:, 0] - 0.5)  # a plateau at 0
    labels = torch.randint(-1, 3, (4, 32, 32), generator=g)
    lo = torch.quantile(r.transpose(0, 1).flatten(1), 0.9, dim=1)
    lo[0] = 0.0
    hi = lo + 0.5
    return r.to(device), [labels.to(device)], lo.to(device), hi.to(device)


def test_the_recorder_sees_host_reads():
    x = torch.ones(2)
    with HostReads() as reads:
        x.sum().item(), x.tolist(), bool(x[0]), int(x[1]), x.cpu(), torch.tensor([1, 2])
    assert reads.calls == ["item", "tolist", "__bool__", "__int__", "cpu", "tensor"]


@pytest.mark.parametrize("device", DEVICES)
def test_one_batch_reads_nothing_back(device):
    r, groups, lo, hi = batch(device)
    tally = BandTally(lo, hi, 3, 16).to(device)
    tops, ranges = TopK(6, 3).to(device), RangeTracker(6).to(device)
    tally.update(r, groups, [0])  # the first batch of a size makes its interpolation taps on the device, once
    with HostReads() as reads:
        tally.update(r, groups, [0])
        tops.update(relative_peaks(r), torch.arange(4, device=device))
        ranges.update(r)
    assert reads.calls == [], reads.calls
    assert tally.counts.device.type == device and int(tally.counts.sum()) > 0
    if device != "cpu":  # the same counts as on the CPU
        ref = BandTally(lo.cpu(), hi.cpu(), 3, 16)
        for _ in range(2):  # the warm-up batch and the recorded one
            ref.update(r.cpu(), [groups[0].cpu()], [0])
        for name in ("counts", "equal", "concept_area", "low", "high"):
            assert torch.equal(getattr(tally, name).cpu(), getattr(ref, name)), name

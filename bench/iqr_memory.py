"""IQR mode's memory at the paper's scale: 512 units against a vocabulary of ≈ 1,500 concepts with parts (300
object classes, each expanded into its four halves), on a random generator and a random segmenter of that shape.

    python bench/iqr_memory.py [--units 512] [--classes 300] [--no-parts] [--iqr-n 32] [--size 64]
        [--featuremap 8] [--batch-size 8] [--threads 2] [--device cpu|cuda] [--trainer-devices 1]

Runs `dissect --threshold iqr` (the validation pass that chooses the thresholds, then the IoU tally) through a
Lightning Trainer in a fresh process and prints, as JSON:
- `state_mb`: the IQR statistic's state, `UnitConceptHistogram`'s counts of unit × (concept + all pixels) ×
  value bin, as `stats.concept_histogram_bytes` sizes it (the formula in docs/dissection.md);
- `bound_mb`: that state plus the largest block `UnitConceptHistogram` works on at once, at the bytes per cell
  of `stats.IQR_BYTES_PER_CELL` (the bound the documentation gives, before the networks and the batch);
- `dissect_peak_mb`: the measured peak of the dissection above the process's memory before it (the networks
  built and one batch run): resident memory on the CPU (ru_maxrss), peak allocated GPU memory on CUDA.
The sample is small (a few dozen images) because the statistic's size does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def networks(units: int, classes: int, featuremap: int, size: int):
    """A random generator whose layer `features` has `units` units on a featuremap×featuremap grid, and a random
    segmenter with `classes` object classes at size×size, both small enough to cost little besides the statistic."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from lightning_gd.models.segmenters import ModuleSegmenter

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.z_dim = 64
            self.fc = nn.Linear(self.z_dim, units * featuremap * featuremap)
            self.features = nn.LeakyReLU(0.2)  # the probed layer: (B, units, featuremap, featuremap)
            self.to_rgb = nn.Conv2d(units, 3, 1)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            r = self.features(self.fc(z).view(-1, units, featuremap, featuremap))
            return torch.tanh(F.interpolate(self.to_rgb(r), size=(size, size), mode="bilinear"))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, classes, 1))
    concepts = [f"class{i}" for i in range(classes)]
    return Generator(), ModuleSegmenter(net, concepts, output="logits")


def run_one(args) -> dict:
    import torch

    from lightning_gd.dissection import concepts
    from lightning_gd.dissection.recipe import dissect
    from lightning_gd.jobs.trainer import TrainerOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    G, seg = networks(args.units, args.classes, args.featuremap, args.size)
    G, seg = G.to(device), seg.to(device)
    vocab = concepts.vocabulary(seg, parts=args.parts)
    with torch.no_grad():  # one batch first: kernels, allocator, and the networks' own memory
        seg.labels(G(torch.randn(args.batch_size, G.z_dim, device=device)))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    accelerator = "gpu" if cuda else "cpu"
    trainer = TrainerOptions(accelerator=accelerator, devices=args.trainer_devices).trainer(progress=False)
    started = time.perf_counter()
    result = dissect(
        G,
        "features",
        seg,
        threshold="iqr",
        n=args.iqr_n,
        iqr_n=args.iqr_n,
        batch_size=args.batch_size,
        parts=args.parts,
        trainer=trainer,
        progress=False,
    )
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "concepts": len(vocab.names),
        "interpretable": int(result.layers["features"].iou.amax(1).gt(0.05).sum()),
        "before_mb": before / 2**20,
        "dissect_peak_mb": (peak - before) / 2**20,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--classes", type=int, default=300)
    ap.add_argument("--no-parts", dest="parts", action="store_false", help="the classes only, no part concepts")
    ap.add_argument("--iqr-n", type=int, default=32, help="validation (and test) samples")
    ap.add_argument("--size", type=int, default=64, help="segmentation size")
    ap.add_argument("--featuremap", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trainer-devices", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return

    from lightning_gd.dissection.stats import BLOCK_CELLS, IQR_BYTES_PER_CELL, concept_histogram_bytes, num_bins

    stride = 4  # DissectSettings' default: the IQR pass reads every 4th pixel in each direction
    pixels = args.iqr_n * (args.size // stride) ** 2  # the most any count can reach
    concepts = args.classes * (5 if args.parts else 1)
    state = concept_histogram_bytes(args.units, concepts, pixels)
    per_unit = (concepts + 1) * num_bins(16)  # counts of one unit
    block = min(args.units, max(1, BLOCK_CELLS // per_unit)) * per_unit * IQR_BYTES_PER_CELL
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out.update(units=args.units, state_mb=state / 2**20, bound_mb=(state + block) / 2**20, device=args.device)
    out["peak_over_bound"] = out["dissect_peak_mb"] / out["bound_mb"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

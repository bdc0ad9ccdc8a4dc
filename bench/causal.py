"""Cost of one causal-search optimisation step against one forward pass of f + segmenter.

    python bench/causal.py [--concept tree] [--layer layer4] [--batch-size 32] [--steps 20] [--threads 2]

One step (after the first epoch has fixed every sample's locations) runs h(z) without a gradient, then f and the
segmenter forward and backward on the ablation and the insertion images, and Adam; in bf16 autocast as the
search trains by default, and in float32 for comparison. The reference is
f + segmenter forward (no gradient) on the same batch of featuremaps; a step with B samples edits up to 2·B
featuremaps, so the ratio per edited image is printed too. For comparison: the full generator + segmenter
forward, which a search that re-ran h for every edit would pay per image.
"""

from __future__ import annotations

import argparse
import time

import torch


def timed_alternating(fns: list, repeats: int) -> list[float]:
    """Median seconds per call of each function, the calls interleaved so that load from other processes
    falls on all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="tree")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="out/cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lightning_gd.causal.search import CausalSearch
    from lightning_gd.latents import latents

    module = CausalSearch(concept=args.concept, layer=args.layer, cache_dir=args.cache_dir, progress=False)
    module.prepare()
    split, seg = module.split, module.segmenter
    indices = torch.arange(args.batch_size)
    z = latents(indices, module.z_dim, seed=100)
    with torch.no_grad():
        r = split.h(z)
    locations = module.training_locations(indices, z, r)  # fixed once per sample, as after the first epoch
    opt = torch.optim.Adam([module.alpha], lr=module.hparams.lr)
    edited = int((locations >= 0).sum())

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as CausalSearch(bf16=...) trains
            with torch.no_grad():
                r = split.h(z)
            terms = module.delta(z, r, locations)
            loss = -terms["delta"] + module.hparams.lam * module.alpha.norm()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            module.alpha.clamp_(0, 1)

    def forward_f() -> None:
        with torch.no_grad():
            seg.probs(split.f(r, z))

    def forward_g() -> None:
        with torch.no_grad():
            seg.probs(module.generator(z))

    t_step, t_step32, t_f, t_g = timed_alternating(
        [lambda: step(True), lambda: step(False), forward_f, forward_g], args.steps
    )
    B = args.batch_size
    print(
        f"concept {args.concept}, {args.layer}, batch {B}, {edited} edited featuremaps per step, threads {args.threads}"
    )
    print(
        f"one optimisation step       {t_step * 1e3:8.1f} ms (bf16 autocast, the default; float32 "
        f"{t_step32 * 1e3:.1f} ms: {t_step32 / t_step:.2f}×)"
    )
    print(f"f + segmenter forward (B)   {t_f * 1e3:8.1f} ms")
    print(f"G + segmenter forward (B)   {t_g * 1e3:8.1f} ms")
    print(f"ratio step / (f + seg forward on B):              {t_step / t_f:.2f}")
    print(f"ratio step / (f + seg forward on the {edited} edits):  {t_step / (t_f * edited / B):.2f}")
    print(f"share of a step saved by reusing h(z) (G vs f forward): {1 - t_f / t_g:.1%} of each forward")


if __name__ == "__main__":
    main()

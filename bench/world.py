"""Throughput of the embedded world: renderer (scenes/s) and generator + segmenter forward (images/s).

python bench/world.py [--n 512] [--batch-size 64] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from lightning_gd import allocator
from lightning_gd.world import load_generator, load_segmenter
from lightning_gd.world.data import render_batch


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    tuned = allocator.tune()  # as the command line does
    if args.threads:
        torch.set_num_threads(args.threads)
    G, seg = load_generator(), load_segmenter()
    z = G.sample_z(args.n, seed=0)
    images, _ = render_batch(args.n, seed=1)

    def gen():
        with torch.no_grad():
            for zb in z.split(args.batch_size):
                G(zb)

    def segment():
        with torch.no_grad():
            for xb in images.split(args.batch_size):
                seg.probs(xb)

    def both():
        with torch.no_grad():
            for zb in z.split(args.batch_size):
                seg.probs(G(zb))

    t_render = timed(lambda: render_batch(args.n, seed=2), repeat=1)
    rows = [
        ("renderer (1 process)", args.n / t_render, "scenes/s"),
        ("generator forward", args.n / timed(gen), "images/s"),
        ("segmenter forward", args.n / timed(segment), "images/s"),
        ("generator + segmenter forward", args.n / timed(both), "images/s"),
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={args.n}, batch {args.batch_size}, "
        f"malloc thresholds {'raised (lightning_gd.allocator)' if tuned else 'glibc defaults'}"
    )
    for name, value, unit in rows:
        print(f"{name:<32} {value:10.1f} {unit}")


if __name__ == "__main__":
    main()

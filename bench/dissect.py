"""Dissection cost against the forward passes it needs, and its memory as the sample grows.

    python bench/dissect.py [--layer layer4] [--n 1000] [--big-n 10000] [--threads 2]

Prints time(dissect N) / time(generator + segmenter forward on the same N) (target ≤ 1.25) and the peak
resident memory of a dissection of N and of big-N samples, each in a fresh process (target: ≤ 1.2×).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(args) -> dict:
    import torch

    from lightning_gd import zoo
    from lightning_gd.dissection import dissect
    from lightning_gd.latents import latents

    if args.threads:
        torch.set_num_threads(args.threads)
    G, seg = zoo.generator(), zoo.segmenter()
    out = {"n": args.n, "threads": torch.get_num_threads()}
    if args.mode in ("time", "both"):
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, args.n, args.batch_size):
                idx = range(start, min(start + args.batch_size, args.n))
                seg.labels(G(latents(idx, G.z_dim, 0)))
        out["forward_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = dissect(G, args.layer, seg, n=args.n, batch_size=args.batch_size, progress=False)
    out["dissect_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.mode == "both":  # how well the (strided, histogram) quantile holds on the full upsampled sample
        from lightning_gd.dissection.featuremaps import upsample
        from lightning_gd.models.hooks import Trace

        t = result.layers[args.layer].thresholds
        above = torch.zeros(t.shape[0], dtype=torch.float64)
        total = 0
        with torch.no_grad():
            for start in range(0, args.n, args.batch_size):
                idx = range(start, min(start + args.batch_size, args.n))
                with Trace(G, args.layer, stop=True) as tr:
                    G(latents(idx, G.z_dim, 0))
                up = upsample(tr.output, (64, 64))
                above += (up > t[None, :, None, None]).sum((0, 2, 3)).double()
                total += up.shape[0] * 64 * 64
        frac = above / total
        alive = t > 0  # units that are zero on more than 99 % of pixels have no top-1 % region
        out["frac_above_min"], out["frac_above_max"] = float(frac[alive].min()), float(frac[alive].max())
        out["alive_units"], out["units"] = int(alive.sum()), int(t.numel())
    return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--big-n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:  # child process
        print(json.dumps(run_one(args)))
        return

    def child(n: int, mode: str) -> dict:
        cmd = [
            sys.executable,
            __file__,
            "--layer",
            args.layer,
            "--n",
            str(n),
            "--batch-size",
            str(args.batch_size),
            "--mode",
            mode,
        ] + (["--threads", str(args.threads)] if args.threads else [])
        return json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )

    small = child(args.n, "both")
    big = child(args.big_n, "memory")
    print(f"layer {args.layer}, batch {args.batch_size}, {small['threads']} threads")
    print(f"generator + segmenter forward, N={args.n}: {small['forward_s']:.2f} s")
    print(f"dissect (quantile thresholds + IoU tallies), N={args.n}: {small['dissect_s']:.2f} s")
    print(f"ratio dissect / forward: {small['dissect_s'] / small['forward_s']:.2f}  (target <= 1.25)")
    print(
        f"peak RSS N={args.n}: {small['peak_rss_mb']:.0f} MB; N={args.big_n}: {big['peak_rss_mb']:.0f} MB; "
        f"ratio {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}  (target <= 1.2)"
    )
    print(
        f"quantile q=0.99 on the full upsampled sample: fraction above threshold in [{small['frac_above_min']:.5f}, "
        f"{small['frac_above_max']:.5f}] over the {small['alive_units']}/{small['units']} units that are non-zero on "
        "more than 1 % of pixels  (target 0.01 ± 0.001)"
    )


if __name__ == "__main__":
    main()

"""Cost of per-unit FID for every unit of a layer, against one FID over the same N and against the naive way.

    python bench/fid.py [--layer layer4] [--n 10000] [--top_k 1000] [--threads 2]

- one FID: generate N images, extract their features, one Fréchet distance against the (cached) real statistics;
- per-unit FID (`lightning_gd.realism.artifacts`): one pass that also records every unit's scores, then one
  eigen-decomposition per unit from the stored features (target: ≤ 2× one FID);
- naive: a generation pass per unit (what a loop calling an FID function per unit costs), timed for
  `--naive-units` units and extrapolated to all U.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--top_k", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--naive-units", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="out/cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lightning_gd import zoo
    from lightning_gd.realism.artifacts import per_unit_fid, scores_and_features, top_images
    from lightning_gd.realism.fid import fid_to_real, real_statistics

    G = zoo.generator("world")
    ex = zoo.feature_extractor("world")
    real = real_statistics(ex, zoo.real_images("world"), cache_dir=args.cache_dir, progress=False)

    t0 = time.perf_counter()
    scores, feats = scores_and_features(G, args.layer, ex, args.n, 0, args.batch_size, progress=False)
    fid_to_real(feats, real)
    t_one = time.perf_counter() - t0  # one FID over N (the scores come almost free with the pass)

    t0 = time.perf_counter()
    unit_fid = per_unit_fid(scores, feats, real, args.top_k, progress=False)
    t_units = time.perf_counter() - t0
    t_per_unit = t_one + t_units

    # naive: regenerate the N images for each unit and take its top K (same numbers, U passes)
    U = scores.shape[1]
    t0 = time.perf_counter()
    for u in range(args.naive_units):
        s, f = scores_and_features(G, args.layer, ex, args.n, 0, args.batch_size, progress=False)
        fid_to_real(f[top_images(s[:, u : u + 1], args.top_k)[:, 0]], real)
    t_naive = (time.perf_counter() - t0) / args.naive_units * U

    print(f"{args.layer}: U = {U} units, N = {args.n}, K = {args.top_k}, threads {args.threads}")
    print(f"one FID over N (generate + features + distance)   {t_one:8.1f} s")
    print(
        f"per-unit FID, all units (one pass + {U} distances)  {t_per_unit:8.1f} s  ({t_units:.1f} s for the distances)"
    )
    print(f"naive, one pass per unit (extrapolated from {args.naive_units})     {t_naive:8.1f} s")
    print(f"ratio per-unit / one FID:  {t_per_unit / t_one:.2f}  (target ≤ 2)")
    print(f"ratio per-unit / naive:    {t_per_unit / t_naive:.4f}  ({t_naive / t_per_unit:.0f}× faster)")
    print(f"per-unit FID range: {float(unit_fid.min()):.1f} … {float(unit_fid.max()):.1f}")


if __name__ == "__main__":
    main()

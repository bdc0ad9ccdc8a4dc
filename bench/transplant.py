"""The transplant probe (`lightning_gd.causal.transplant`) on a generator or on the checkpoints of a GAN run: how
much of a real object's concept share a generator reproduces when a square of its featuremap is copied into a
concept-free square of another sample. Run it after an hour of training to compare candidate worlds and GANs.

    python bench/transplant.py [--generator world] [--segmenter world] [--layer layer4] [--regions 1 2]
        [--concepts tree door window building] [--n 200]
    python bench/transplant.py --checkpoints tb_logs/world_close_progan/version_0/checkpoints

Prints, per concept and square side (in featuremap locations and image pixels): the pairs measured, the donor
square's concept share, the share reproduced in the recipient square, their ratio, and the ratio by the
recipient's background (its window's majority concept) where that background has at least 10 pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import torch


def probe_table(generator, segmenter, layer: str, concepts: list[str], regions: list[int], n: int) -> list[dict]:
    from lightning_gd.causal.transplant import transplant
    from lightning_gd.models.split import LayerSplit

    split = LayerSplit(generator, layer)
    rows = []
    for concept in concepts:
        for region in regions:
            res = transplant(split, segmenter, concept, n=n, region=region, progress=False)
            rows.append(res.to_dict())
            by = ", ".join(
                f"{bg} {v['kept_share'] / res.donor_share:.2f} ({v['pairs']})"
                for bg, v in res.by_background.items()
                if v["pairs"] >= 10 and res.donor_share > 0
            )
            print(
                f"{concept:<10} {region}×{region} ({res.window_px:>2} px) {res.pairs:>5} {res.donor_share:>7.2f} "
                f"{res.kept_share:>7.2f} {res.reproduced:>10.2f}   {by}",
                flush=True,
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="world", help="a zoo spec (default: the shipped world GAN)")
    ap.add_argument("--checkpoints", type=Path, help="a folder of world-GAN step=*.ckpt files (EMA weights)")
    ap.add_argument("--segmenter", default="world")
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--concepts", nargs="+", default=["tree", "door", "window", "building"])
    ap.add_argument("--regions", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lightning_gd import zoo

    seg = zoo.segmenter(args.segmenter)
    header = f"{'concept':<10} {'square':<12} {'pairs':>5} {'donor':>7} {'kept':>7} {'reproduced':>10}   by background"
    results = {}
    if args.checkpoints is None:
        print(header)
        results[args.generator] = probe_table(
            zoo.generator(args.generator), seg, args.layer, args.concepts, args.regions, args.n
        )
    else:
        from lightning_gd.world.export import export

        ckpts = sorted(args.checkpoints.glob("step=*.ckpt"), key=lambda p: int(re.findall(r"\d+", p.name)[0]))
        if not ckpts:
            raise SystemExit(f"no step=*.ckpt files in {args.checkpoints}")
        with tempfile.TemporaryDirectory() as tmp:
            for ckpt in ckpts:
                print(f"\n{ckpt.name}\n{header}")
                G = zoo.generator(f"world:{export('gan', ckpt, Path(tmp) / 'g.safetensors', 'ema')}")
                results[ckpt.name] = probe_table(G, seg, args.layer, args.concepts, args.regions, args.n)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

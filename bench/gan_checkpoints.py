"""Quality of every checkpoint of a world-GAN run, for both the EMA and the trained generator weights:
world FID against renders and the model card's pixel-fraction quality bar.

    python bench/gan_checkpoints.py tb_logs/world_gan/version_0/checkpoints [--n 500] [--weights ema generator]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from lightning_gd.world import load_generator, load_segmenter
from lightning_gd.world.evaluate import FRESH_SEED_2, gan_table, quality_bar, world_fid
from lightning_gd.world.export import GAN_WEIGHTS, export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--weights", nargs="+", default=list(GAN_WEIGHTS), choices=GAN_WEIGHTS)
    args = ap.parse_args()
    ckpts = sorted(args.folder.glob("step=*.ckpt"), key=lambda p: int(re.findall(r"\d+", p.name)[0]))
    if not ckpts:
        raise SystemExit(f"no step=*.ckpt files in {args.folder}")
    seg = load_segmenter()
    print(f"{'checkpoint':<18} {'weights':<10} {'FID':>8}  bar  failing concepts (relative difference)")
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in ckpts:
            for weights in args.weights:
                G = load_generator(export("gan", ckpt, Path(tmp) / "g.safetensors", weights))
                # other z and renders than the model card's, so choosing a checkpoint here does not bias the card
                table = gan_table(G, seg, args.n, seed=1, render_seed=FRESH_SEED_2)
                bar = quality_bar(table["fractions"])
                fid = world_fid(table["images_real"], table["images_generated"])
                fails = ", ".join(
                    f"{c} {table['fractions'][c]['relative_difference']:+.0%}" for c, ok in bar.items() if not ok
                )
                print(
                    f"{ckpt.name:<18} {weights:<10} {fid:8.1f}  {'pass' if all(bar.values()) else 'FAIL'}  {fails}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

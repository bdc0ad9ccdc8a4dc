"""Latency of the painting page's edits on the world GAN: time per stroke (f + segmenter on one image, two PNG
encodings), measured through the JSON API with Starlette's test client.

    python bench/paint.py [--strokes 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import torch
    from starlette.testclient import TestClient

    from lightning_gd import allocator
    from lightning_gd.jobs.paint import paint_session
    from lightning_gd.paint.server import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    session = paint_session(results=None, dissect_samples=300)
    client = TestClient(create_app(session), base_url="http://127.0.0.1")  # the Host the server accepts
    brush = next(iter(session.brushes))
    key = client.post("/api/sample", json={"seed": 0}).json()["id"]
    h, w = session.size
    mask = [[int(4 <= y < 8 and 4 <= x < 8) for x in range(w)] for y in range(h)]
    client.post("/api/edit", json={"id": key, "action": "draw", "concept": brush, "mask": mask, "n": 10})  # k_c
    client.post("/api/reset", json={"id": key})
    wall = []
    for i in range(args.strokes):
        t0 = time.perf_counter()
        action = "draw" if i % 2 == 0 else "remove"
        client.post("/api/edit", json={"id": key, "action": action, "concept": brush, "mask": mask, "n": 10})
        wall.append(1000 * (time.perf_counter() - t0))
        if i % 10 == 9:
            client.post("/api/reset", json={"id": key})
    print(
        f"{args.strokes} strokes on {session.layer} ({brush}), {torch.get_num_threads()} threads: median "
        f"{statistics.median(wall):.1f} ms, 90th percentile {sorted(wall)[int(0.9 * len(wall))]:.1f} ms per "
        "request (composing up to 10 strokes; target: well under 1 s); malloc thresholds "
        f"{'raised (lightning_gd.allocator)' if allocator.tune() else 'glibc defaults'}"
    )


if __name__ == "__main__":
    main()

"""Dissection cost against the forward passes it needs, its memory as the sample grows, and its error.

    python bench/dissect.py [--layer layer4] [--n 1000] [--big-n 10000] [--threads 2] [--device cpu|cuda]
        [--generator world:PATH] [--repeats 3] [--big-repeats 1]

Prints time(dissect N) / time(generator + segmenter forward on the same N) (target ≤ 1.25; the median ratio of
`repeats` forward and dissection runs made side by side; the dissection runs through a Lightning Trainer, as the
`dissect` command does), the peak memory
of a dissection of N and of big-N samples, each in a fresh process (target: ≤ 1.2×; resident memory on the CPU,
peak allocated GPU memory on CUDA), and the largest IoU and threshold error against the exact computation:
torch.quantile-style thresholds over every upsampled pixel of the N samples and dense masks (target ≤ 0.002).
Both run with the malloc thresholds `lightning_gd.allocator` sets, as in the command line; prefix
LIGHTNING_GD_MALLOC=default to measure with glibc's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def exact_quantile_iou(G, seg, layer: str, n: int, q: float, batch_size: int, device) -> tuple:
    """Thresholds (U,) as torch.quantile defines them (linear between order statistics) over all upsampled
    pixels, and IoU (U, C) of the dense masks r↑ > t: featuremaps kept at their own size, one unit at a time."""
    import torch

    from lightning_gd.dissection.featuremaps import upsample
    from lightning_gd.latents import latents
    from lightning_gd.models.hooks import TraceDict

    maps, labels = [], []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = range(start, min(start + batch_size, n))
            with TraceDict(G, [layer]) as tr:
                x = G(latents(idx, G.z_dim, 0).to(device))
            maps.append(tr[layer].output.float().cpu())
            labels.append(seg.labels(x).cpu())
    r, lab = torch.cat(maps), torch.cat(labels)  # (N, U, h, w), (N, H, W)
    C = len(seg.concepts)
    onehot = torch.nn.functional.one_hot(lab.clamp(min=0), C).bool() & (lab >= 0)[..., None]  # (N, H, W, C)
    area = onehot.sum((0, 1, 2)).double()
    thresholds, iou = torch.zeros(r.shape[1], dtype=torch.float64), torch.zeros(r.shape[1], C, dtype=torch.float64)
    for u in range(r.shape[1]):
        up = upsample(r[:, u : u + 1].double(), tuple(lab.shape[-2:]))[:, 0]  # (N, H, W)
        flat = up.flatten()
        pos = q * (flat.numel() - 1)
        lo_k, frac = int(pos), pos - int(pos)
        a = flat.kthvalue(lo_k + 1).values
        b = flat.kthvalue(min(lo_k + 2, flat.numel())).values
        t = a + frac * (b - a)
        m = up > t
        inter = (m[..., None] & onehot).sum((0, 1, 2)).double()
        union = m.sum().double() + area - inter
        thresholds[u], iou[u] = t, torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    return thresholds, iou


def timed_phases(sync) -> tuple[dict, list]:
    """Wrap the dissection's phases (generator + segmenter on a batch; band counting; peaks and top-k, ranges, the
    warm-up's sparse samples and histograms) with timers; returns the totals (seconds) and the undo list."""
    import functools

    from lightning_gd.dissection import bands, module, passes, stats

    totals = {"forward": 0.0, "counting": 0.0, "top-k, ranges, warm-up": 0.0}
    undo = []

    def wrap(owner, name, phase):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*a, **k):
            sync()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            sync()
            totals[phase] += time.perf_counter() - t0
            return out

        setattr(owner, name, timed)
        undo.append((owner, name, fn))

    wrap(module.DissectionModule, "_segment", "forward")
    wrap(bands.BandTally, "update", "counting")
    others = [(stats.TopK, "update"), (bands.RangeTracker, "update"), (stats.UnitHistogram, "update")]
    for owner, name in [*others, (passes, "relative_peaks"), (passes, "sparse_upsample")]:
        wrap(owner, name, "top-k, ranges, warm-up")
    return totals, undo


def run_one(args) -> dict:
    import torch

    from lightning_gd import allocator, zoo
    from lightning_gd.dissection import dissect
    from lightning_gd.jobs.trainer import TrainerOptions
    from lightning_gd.latents import latents

    # as the command line does at start (and dissect on its first call): forward and dissection both run with it
    tuned = allocator.tune()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    G, seg = zoo.generator(args.generator, device=device), zoo.segmenter(device=device)
    hardware = TrainerOptions(
        accelerator="gpu" if device.type == "cuda" else device.type,
        devices=[device.index] if device.index is not None else 1,
    )
    out = {"n": args.n, "threads": torch.get_num_threads(), "device": str(device), "allocator_tuned": tuned}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():  # warm-up (kernels, allocator)
        seg.labels(G(latents(range(args.batch_size), G.z_dim, 0).to(device)))
    sync()
    # forward and dissection alternate, `repeats` times: on a shared machine the speed drifts by tens of per
    # cent within minutes, and each ratio compares two runs made side by side
    forward, dissection, cpu_f, cpu_d = [], [], [], []
    for _ in range(args.repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, args.n, args.batch_size):
                idx = range(start, min(start + args.batch_size, args.n))
                seg.labels(G(latents(idx, G.z_dim, 0).to(device)))
        sync()
        forward.append(time.perf_counter() - t0)
        cpu_f.append(time.process_time() - c0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        c0 = time.process_time()
        t0 = time.perf_counter()
        trainer = hardware.trainer(progress=False)
        result = dissect(G, args.layer, seg, n=args.n, batch_size=args.batch_size, progress=False, trainer=trainer)
        sync()
        dissection.append(time.perf_counter() - t0)
        cpu_d.append(time.process_time() - c0)
    out["forward_s"], out["dissect_s"] = statistics.median(forward), statistics.median(dissection)
    out["ratio"] = statistics.median(d / f for d, f in zip(dissection, forward))
    # CPU time (all threads) is what the work costs: unlike wall-clock time it does not count the time a shared
    # machine gives to other tenants
    out["cpu_ratio"] = statistics.median(d / f for d, f in zip(cpu_d, cpu_f))
    out["repeats"] = args.repeats
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.mode == "both":
        lay = result.layers[args.layer]
        t, iou = exact_quantile_iou(G, seg, args.layer, args.n, result.settings.q, args.batch_size, device)
        out["iou_max_error"] = float((lay.iou.double() - iou).abs().max())
        out["threshold_max_error"] = float((lay.thresholds.double() - t).abs().max())
        out["threshold_scale"] = float(t.abs().max())
        out["units"] = int(t.numel())
    if args.mode == "both":  # after the memory was read: one more dissection of N with its phases timed
        del result
        phases, undo = timed_phases(sync)
        try:
            t0 = time.perf_counter()
            trainer = hardware.trainer(progress=False)
            dissect(G, args.layer, seg, n=args.n, batch_size=args.batch_size, progress=False, trainer=trainer)
            phases["total"] = time.perf_counter() - t0
        finally:
            for owner, name, fn in reversed(undo):
                setattr(owner, name, fn)
        out["phases"] = phases
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--big-n", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator", default="world", help="a zoo spec (default: the world's shipped generator)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating forward/dissect runs at --n (median)")
    ap.add_argument("--big-repeats", type=int, default=1, help="the same at --big-n")
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:  # child process
        print(json.dumps(run_one(args)))
        return

    def child(n: int, mode: str, repeats: int) -> dict:
        options = {
            "--layer": args.layer,
            "--n": n,
            "--batch-size": args.batch_size,
            "--device": args.device,
            "--generator": args.generator,
            "--mode": mode,
            "--repeats": repeats,
        }
        cmd = [sys.executable, __file__, *(str(part) for option in options.items() for part in option)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    small = child(args.n, "both", args.repeats)
    big = child(args.big_n, "time", args.big_repeats)
    mem = "peak_cuda_mb" if args.device.startswith("cuda") else "peak_rss_mb"
    alloc = "raised (lightning_gd.allocator)" if small["allocator_tuned"] else "glibc's (LIGHTNING_GD_MALLOC=default)"
    print(
        f"layer {args.layer}, batch {args.batch_size}, device {small['device']}, {small['threads']} threads, "
        f"malloc thresholds {alloc}"
    )
    for res in (small, big):
        n = res["n"]
        print(
            f"N={n}: forward {res['forward_s']:.2f} s ({n / res['forward_s']:.0f} images/s), dissect "
            f"{res['dissect_s']:.2f} s ({n / res['dissect_s']:.0f} images/s); ratio dissect / forward: "
            f"{res['ratio']:.2f} wall clock, {res['cpu_ratio']:.2f} CPU time  (median of {res['repeats']} "
            f"side-by-side runs; target <= 1.25)"
        )
    ph = small["phases"]
    other = ph["total"] - sum(v for k, v in ph.items() if k != "total")
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in ph.items() if k != "total")
    print(
        f"N={args.n}, one more dissection with its phases timed ({ph['total']:.2f} s): {parts}, the rest {other:.2f} s"
    )
    print(
        f"peak memory ({mem}) N={args.n}: {small[mem]:.0f} MB; N={args.big_n}: {big[mem]:.0f} MB; "
        f"ratio {big[mem] / small[mem]:.2f}  (target <= 1.2)"
    )
    print(
        f"against the exact computation at N={args.n} ({small['units']} units): IoU max error "
        f"{small['iou_max_error']:.5f} (target <= 0.002); threshold max error {small['threshold_max_error']:.5f} "
        f"(largest threshold {small['threshold_scale']:.3f})"
    )


if __name__ == "__main__":
    main()

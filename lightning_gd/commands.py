"""The project's own subcommands (registered with `lightning_gd.cli.subcommand`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lightning_gd.cli import subcommand
from lightning_gd.segmenters import Segmenter


@subcommand
def demo(out: Path = Path("demo"), n: int = 8, seed: int = 0) -> Path:
    """Sample the world's GAN, segment real and generated scenes, and save a picture of both.

    Args:
        out: output folder.
        n: images per row.
        seed: seed of the renders and of z.
    """
    import torch

    from lightning_gd.images import to_uint8
    from lightning_gd.viz import colorize, save_rows
    from lightning_gd.world import load_generator, load_segmenter
    from lightning_gd.world.data import render_batch

    G, seg = load_generator(), load_segmenter()
    real, real_labels = render_batch(n, seed=seed + 424_242)
    with torch.no_grad():
        fake = G(G.sample_z(n, seed=seed))
    rows = [
        to_uint8(real),
        colorize(real_labels),
        colorize(seg.labels(real)),
        to_uint8(fake),
        colorize(seg.labels(fake)),
    ]
    path = save_rows(rows, Path(out) / "world_samples.png")
    legend = ", ".join(seg.concepts)
    print(f"wrote {path}\nrows: renders | exact labels | segmenter on renders | GAN samples | segmenter on samples")
    print(f"concepts: {legend}")
    return path


@subcommand
def export_world(model: str, checkpoint: Path, out: Path | None = None, gan_weights: str = "ema") -> Path:
    """Export a world model (gan, segmenter or features) from a Lightning checkpoint to safetensors.

    Args:
        model: gan, segmenter or features.
        checkpoint: a checkpoint written by `python -m lightning_gd fit --config configs/world/<model>.yaml`.
        out: output file (default: the package's shipped weights).
        gan_weights: for the GAN, `ema` (the moving average) or `generator` (the weights under training).
    """
    from lightning_gd.world.export import export

    path = export(model, checkpoint, out, gan_weights)
    print(f"wrote {path}")
    return path


@subcommand
def world_card(n: int = 2000, gan_checkpoints: list[Path] | None = None, out: Path | None = None) -> Path:
    """Measure the shipped world models and write their model cards (markdown + JSON).

    Args:
        n: samples per measurement (renders, generated images).
        gan_checkpoints: GAN training checkpoints whose world FID is reported too (EMA generator of each).
        out: output folder (default: the package's weights folder).
    """
    from lightning_gd.world.cards import write_cards

    return write_cards(n=n, gan_checkpoints=gan_checkpoints or [], out=out)


def load_weights(module, path: Path | None):
    """Load a state dict from safetensors or a torch file (weights only, never pickle code) into `module`."""
    if path is None:
        return module
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit {type(module).__name__}: {err}") from err
    return module


@subcommand
def dissect(
    layers: list[str] | None = None,
    all_layers: bool = False,
    generator: nn.Module | None = None,
    generator_weights: Path | None = None,
    segmenter: Segmenter | None = None,
    z_dim: int | None = None,
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 50,
    threshold: str = "quantile",
    q: float = 0.99,
    iqr_n: int = 500,
    iqr_seed: int = 1,
    stride: int = 4,
    parts: bool = False,
    iou_threshold: float = 0.05,
    top_k: int = 10,
    out: Path = Path("out/dissect"),
    tb_dir: Path | None = Path("tb_logs"),
    device: str = "cpu",
) -> Path:
    """Dissect generator layers: per-unit thresholds, unit×concept IoU, labels, HTML/JSON/TensorBoard reports.

    Args:
        layers: layer names to dissect (default: layer4 of the world's generator).
        all_layers: dissect every `layer*` block of the generator in one run.
        generator: a generator module (class_path + init_args); default: the embedded world's GAN.
        generator_weights: state dict for `generator` (safetensors, or a torch file loaded with weights_only).
        segmenter: a `lightning_gd.segmenters.Segmenter` (class_path + init_args); default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: samples for the IoU (and, in quantile mode, the thresholds).
        seed: seed of the sample's z (per-index).
        batch_size: samples per forward pass.
        threshold: `quantile` (top 1-q level per unit) or `iqr` (max I/H against the best concept, paper Eq. 2).
        q: quantile level of the `quantile` mode.
        iqr_n: size of the separate validation sample of the `iqr` mode.
        iqr_seed: seed of that validation sample (must differ from `seed`).
        stride: threshold passes read every stride-th upsampled pixel per axis (offset per sample), 1 = all.
        parts: also dissect part concepts (object halves: -t, -b, -l, -r).
        iou_threshold: a unit is interpretable when its best IoU exceeds this.
        top_k: top-activating images kept per unit.
        out: output folder (dissect.json, iou-<layer>.npy, report.html, figures, stage cache).
        tb_dir: TensorBoard folder (None: no TensorBoard).
        device: torch device for both networks.
    """
    import torch

    from lightning_gd.dissection import DissectSettings
    from lightning_gd.dissection import dissect as run_dissect
    from lightning_gd.generators import z_dim_of
    from lightning_gd.hooks import layer_names
    from lightning_gd.reports.dissection_report import write_dissection
    from lightning_gd.reports.images import unit_strips
    from lightning_gd.world import load_generator, load_segmenter

    G = load_weights(generator, generator_weights) if generator is not None else load_generator()
    seg = segmenter if segmenter is not None else load_segmenter()
    G, seg = G.to(device).eval(), seg.to(device).eval()
    if all_layers:
        layers = [name for name in layer_names(G) if name.startswith("layer") and "." not in name]
        if not layers:
            raise ValueError(f"all_layers: {type(G).__name__} has no top-level `layer*` blocks; name them with layers")
    if not layers and generator is not None:
        raise ValueError(f"name the layers to dissect (--layers); {type(G).__name__} has: {', '.join(layer_names(G))}")
    layers = layers or ["layer4"]
    settings = DissectSettings(
        layers=tuple(layers),
        n=n,
        seed=seed,
        batch_size=batch_size,
        threshold=threshold,
        q=q,
        iqr_n=iqr_n,
        iqr_seed=iqr_seed,
        stride=stride,
        parts=parts,
        iou_threshold=iou_threshold,
        top_k=top_k,
    )
    zd = z_dim_of(G, z_dim)
    result = run_dissect(G, layers, seg, settings, z_dim=zd, cache_dir=Path(out) / "cache")
    strips = {layer: unit_strips(G, result.layers[layer], zd, seed) for layer in layers}
    info = {
        "generator": "world" if generator is None else type(generator).__name__,
        "segmenter": "world" if segmenter is None else type(segmenter).__name__,
        "torch": torch.__version__,
    }
    doc = write_dissection(result, out, strips, info, tb_dir=tb_dir, tb_name=f"dissect-{Path(out).name}")
    for layer in layers:
        summ = doc["layers"][layer]["summary"]
        top = ", ".join(f"{c} {k}" for c, k in list(summ["per_concept"].items())[:8])
        print(
            f"{layer}: {summ['interpretable']}/{summ['units']} interpretable units, "
            f"{summ['distinct_concepts']} concepts, mean IoU {summ['mean_iou']:.3f}  [{top}]"
        )
    print(f"wrote {Path(out) / 'dissect.json'}, {Path(out) / 'report.html'}")
    return Path(out)


@subcommand
def compare(
    dissections: list[Path], names: list[str] | None = None, layer: str | None = None, out: Path = Path("out/compare")
) -> Path:
    """Compare dissections of several generators, checkpoints or threshold modes side by side (paper Fig. 7).

    Args:
        dissections: `dissect.json` files (or the folders holding them).
        names: a label per dissection (default: the folder names).
        layer: the layer to compare (default: each dissection's first layer).
        out: output folder for compare.json, compare.png and per-concept counts.
    """
    import json

    from lightning_gd.reports.plots import comparison_figure

    rows = []
    for i, path in enumerate(dissections):
        path = Path(path)
        path = path / "dissect.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no dissection at {path} (run `python -m lightning_gd dissect --out ...` first)")
        doc = json.loads(path.read_text())
        lay = layer or doc["settings"]["layers"][0]
        if lay not in doc["layers"]:
            raise KeyError(f"{path} has no layer '{lay}'; it has {', '.join(doc['layers'])}")
        units = [u for u in doc["layers"][lay]["units"] if u["interpretable"]]
        summ = doc["layers"][lay]["summary"]
        rows.append(
            {
                "name": names[i] if names and i < len(names) else path.resolve().parent.name,
                "layer": lay,
                "threshold": doc["settings"]["threshold"],
                "interpretable": summ["interpretable"],
                "object_units": sum(u["category"] == "object" for u in units),
                "distinct_concepts": summ["distinct_concepts"],
                "mean_iou": summ["mean_iou"],
                "per_concept": summ["per_concept"],
            }
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1))
    comparison_figure(rows, "comparison: " + ", ".join(r["name"] for r in rows), out / "compare.png")
    for r in rows:
        print(
            f"{r['name']:<20} {r['layer']:<8} {r['threshold']:<8} interpretable {r['interpretable']:>4}  "
            f"objects {r['object_units']:>4}  concepts {r['distinct_concepts']:>3}  mean IoU {r['mean_iou']:.3f}"
        )
    print(f"wrote {out / 'compare.json'}, {out / 'compare.png'}")
    return out


@subcommand
def causal_summary(runs: list[Path], out: Path = Path("out/causal")) -> Path:
    """Summarise finished causal searches: the share of each concept removed by its top-n units (paper Fig. 9).

    Args:
        runs: run folders (each with the `ace.json` that `python -m lightning_gd test` writes).
        out: output folder for causal_summary.json, causal_summary.md and causal_removal.png.
    """
    import json

    from lightning_gd.reports.causal_report import removal_figure, summary_table

    summaries = []
    for run in runs:
        path = Path(run) / "ace.json" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(
                f"no ace.json at {path}: test the run first "
                "(`python -m lightning_gd test --config <its config> --ckpt_path <run>/checkpoints/last.ckpt`)"
            )
        summaries.append(json.loads(path.read_text()))
    if not summaries:
        raise ValueError("name at least one run folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "causal_summary.json").write_text(json.dumps(summaries, indent=1))
    table = summary_table(summaries)
    (out / "causal_summary.md").write_text(table + "\n")
    removal_figure(summaries, out / "causal_removal.png")
    print(table)
    print(f"wrote {out / 'causal_summary.md'}, {out / 'causal_removal.png'}")
    return out

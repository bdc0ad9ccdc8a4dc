"""The project's own subcommands (registered with `lightning_gd.cli.subcommand`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lightning_gd.cli import subcommand
from lightning_gd.io import load_weights
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
    realism: Path | None = None,
    max_unit_fid: float | None = None,
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
        realism: the `unit_fid.json` of `python -m lightning_gd artifacts` for the dissected layer: units
            whose per-unit FID exceeds `max_unit_fid` are left out of the labels (the realism filter, §S-6.3).
        max_unit_fid: the per-unit FID above which a unit counts as unrealistic (needed with `realism`; it
            depends on the data and the feature extractor: the paper used 55 with Inception on LSUN bedrooms).
    """
    import torch

    from lightning_gd.dissection import DissectSettings
    from lightning_gd.dissection import dissect as run_dissect
    from lightning_gd.generators import z_dim_of
    from lightning_gd.hooks import layer_names
    from lightning_gd.reports.dissection_report import write_dissection
    from lightning_gd.reports.images import unit_strips
    from lightning_gd.world import load_generator, load_segmenter

    G = load_weights(generator, generator_weights) if generator is not None else load_generator(generator_weights)
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
    if (realism is None) != (max_unit_fid is None):
        raise ValueError("the realism filter needs both --realism (a unit_fid.json) and --max_unit_fid")
    if realism is not None:  # checked before the long passes
        import json

        if not Path(realism).is_file():
            raise FileNotFoundError(f"no per-unit FID file at {realism} (run `python -m lightning_gd artifacts`)")
        doc = json.loads(Path(realism).read_text())
        if doc.get("layer") not in layers:
            raise ValueError(f"{realism} scores layer '{doc.get('layer')}', not one of the dissected {layers}")
        from lightning_gd.dissection import fingerprint

        scored = doc.get("generator_fingerprint")
        if scored is not None and scored != fingerprint(G):
            raise ValueError(f"{realism} was scored on another generator (weights fingerprint {scored})")
    result = run_dissect(G, layers, seg, settings, z_dim=zd, cache_dir=Path(out) / "cache")
    if realism is not None:
        dropped = result.filter_unrealistic(doc["layer"], doc["unit_fid"], max_unit_fid)
        print(f"realism filter: {len(dropped)} units of {doc['layer']} with per-unit FID > {max_unit_fid} left out")
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


@subcommand
def dissect_checkpoints(
    checkpoints: list[str] | str,
    layer: str = "layer4",
    generator: nn.Module | None = None,
    prefix: str = "generator",
    segmenter: Segmenter | None = None,
    z_dim: int | None = None,
    n: int = 500,
    seed: int = 0,
    batch_size: int = 50,
    iou_threshold: float = 0.05,
    units: list[int] | None = None,
    num_units: int = 4,
    top_k: int = 4,
    out: Path = Path("out/emergence"),
    tb_dir: Path | None = Path("tb_logs"),
    device: str = "cpu",
) -> Path:
    """Dissect a layer in each checkpoint of a training run and plot how its units emerge (paper Fig. 18).

    Args:
        checkpoints: Lightning checkpoints: a file, folder (its *.ckpt) or quoted glob pattern, or a list of them.
        layer: the generator layer to dissect.
        generator: the generator module to load each checkpoint into (class_path + init_args); default: the
            world's Generator, sized from the checkpoint's hyper-parameters.
        prefix: the generator's key prefix in the checkpoint's state_dict (`generator`, `generator_ema`, `nets.G`).
        segmenter: a `lightning_gd.segmenters.Segmenter` (class_path + init_args); default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: probe samples per checkpoint (the same z for every checkpoint).
        seed: seed of the probe z.
        batch_size: samples per forward pass.
        iou_threshold: a unit is interpretable when its best IoU exceeds this.
        units: units whose top images are shown per checkpoint (default: the top units of the last checkpoint).
        num_units: how many units to show when `units` is not given.
        top_k: top images kept per unit.
        out: output folder (emergence.json, emergence.png, emergence_heatmap.png, emergence_units.png).
        tb_dir: TensorBoard folder (None: no TensorBoard); the run is `emergence-<out folder name>`.
        device: torch device for both networks.
    """
    from lightning_gd.monitoring import dissect_checkpoints as run

    history = run(
        checkpoints, out=out, layer=layer, generator=generator, prefix=prefix, segmenter=segmenter, z_dim=z_dim,
        n=n, seed=seed, batch_size=batch_size, iou_threshold=iou_threshold, units=units, num_units=num_units,
        top_k=top_k, tb_dir=tb_dir, device=device,
    )  # fmt: skip
    print(f"{'step':>8} {'interpretable':>13} {'concepts':>9} {'mean IoU':>9}")
    for r in history:
        print(f"{r['step']:>8} {r['interpretable']:>13} {r['distinct_concepts']:>9} {r['mean_iou']:>9.3f}")
    print(f"wrote {Path(out) / 'emergence.json'}, {Path(out) / 'emergence.png'}")
    return Path(out)


@subcommand
def artifacts(
    layer: str = "layer4",
    generator: nn.Module | None = None,
    generator_weights: Path | None = None,
    z_dim: int | None = None,
    n: int = 10_000,
    k: int = 1_000,
    seed: int = 0,
    n_ablate: int = 20,
    units: list[int] | None = None,
    random_draws: int = 5,
    n_eval: int = 2_000,
    eval_seed: int = 1,
    feature_extractor: str = "world",
    feature_extractor_weights_path: Path | None = None,
    real_images: Path | None = None,
    real_n: int = 2_000,
    batch_size: int = 100,
    out: Path = Path("out/artifacts"),
    cache_dir: Path | None = Path("out/cache"),
    device: str = "cpu",
) -> Path:
    """Find artifact units by per-unit FID and report FID before/after ablating them vs random units.

    Args:
        layer: the generator layer whose units are scored.
        generator: a generator module (class_path + init_args); default: the embedded world's GAN.
        generator_weights: state dict for `generator` (safetensors, or a torch file loaded with weights_only).
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: images generated once for the per-unit FID (the paper: 200,000 on a GPU).
        k: top-activating images per unit whose FID is measured (the paper: 10,000).
        seed: seed of those n samples of z.
        n_ablate: how many of the highest-FID units to ablate.
        units: a user-chosen list of units to ablate too (e.g. picked by eye in the dissection's HTML report).
        random_draws: random unit sets of size n_ablate for the baseline (mean ± std).
        n_eval: samples per FID of the ablation table (the same seeded z for every row).
        eval_seed: seed of those samples (differs from `seed`).
        feature_extractor: `world` (world FID) or `inception` (needs feature_extractor_weights_path).
        feature_extractor_weights_path: local weights of the extractor (Inception: torch-fidelity's layout).
        real_images: a folder of real images for the real statistics (default: world renders).
        real_n: world renders for the real statistics when real_images is not given.
        batch_size: images per forward pass.
        out: output folder (unit_fid.json, unit_fid.png, ablation.md, top_units.png, before_after.png).
        cache_dir: where real-image statistics are cached (None: no cache).
        device: torch device.
    """
    import torch

    from lightning_gd.artifacts import (
        ablation_table,
        check_units,
        firing_most,
        per_unit_fid,
        scores_and_features,
        top_images,
    )
    from lightning_gd.dissection import fingerprint
    from lightning_gd.fid import folder_real_statistics, make_extractor, world_real_statistics
    from lightning_gd.generators import latents, z_dim_of
    from lightning_gd.reports.artifact_report import ablation_markdown, write_artifacts
    from lightning_gd.world import load_generator

    if n_ablate < 1 or random_draws < 1 or n_eval < 2:
        raise ValueError("n_ablate and random_draws must be positive and n_eval at least 2")
    if k > n:
        raise ValueError(f"k = {k} top images per unit, but only n = {n} samples: use k ≤ n (the paper: k = n/20)")
    G = load_weights(generator, generator_weights) if generator is not None else load_generator(generator_weights)
    G = G.to(device).eval()
    extractor = make_extractor(feature_extractor, feature_extractor_weights_path).to(device)
    if real_images is not None:
        real = folder_real_statistics(extractor, real_images, cache_dir, batch_size)
    elif generator is None or feature_extractor == "world":
        real = world_real_statistics(extractor, real_n, cache_dir=cache_dir, batch_size=batch_size)
    else:
        raise ValueError("name the real images of your model's domain with --real_images (a folder of PNG/JPEG)")
    if units:  # checked on one probe sample, before the long pass
        from lightning_gd.interventions import LayerSplit

        with torch.no_grad():
            probe = LayerSplit(G, layer, z_dim, check=False).h(latents([0], z_dim_of(G, z_dim), seed).to(device))
        check_units(units, probe.shape[1], "units")
    scores, features = scores_and_features(G, layer, extractor, n, seed, batch_size, z_dim)
    unit_fid = per_unit_fid(scores, features, real, k)
    ranking = torch.sort(unit_fid, descending=True, stable=True).indices.tolist()
    focus = (firing_most(scores, ranking[:n_ablate], min(n_eval, n)), seed)  # as the paper's Table 1
    rows = ablation_table(
        G, layer, ranking, extractor, real, n_ablate, units, random_draws, n_eval, eval_seed, batch_size, z_dim,
        focus=focus,
    )  # fmt: skip
    info = {
        "generator": "world" if generator is None else type(generator).__name__,
        "generator_fingerprint": fingerprint(G),
        "feature_extractor": extractor.identity,
        "real": "world renders" if real_images is None else str(real_images),
        "real_n": real.n,
        "n_eval": n_eval,
    }
    write_artifacts(out, layer, unit_fid, k, n, rows, G, top_images(scores, k), n_ablate, seed, eval_seed, info, z_dim)
    print(f"{layer}: highest per-unit FID: " + ", ".join(f"{u} ({float(unit_fid[u]):.1f})" for u in ranking[:10]))
    print(ablation_markdown(rows))
    print(f"wrote {Path(out) / 'unit_fid.json'}, {Path(out) / 'ablation.md'} and figures")
    return Path(out)

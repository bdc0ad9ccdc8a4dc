"""The dissection jobs: dissect a generator's layers into a folder of reports, and compare finished dissections."""

from __future__ import annotations

import io
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from jsonargparse.typing import ClosedUnitInterval, OpenUnitInterval, PositiveInt
from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import atomic_write, check_writable, staged
from lightning_gd.dissection.recipe import dissect as run_dissection
from lightning_gd.dissection.results import Dissection, DissectSettings, ThresholdMode
from lightning_gd.dissection.top_images import no_images, shown_images
from lightning_gd.errors import InvalidValue, UnknownName
from lightning_gd.jobs import run_name
from lightning_gd.jobs.trainer import ONE_CPU, TrainerOptions
from lightning_gd.models.generators import default_layer, z_dim_of
from lightning_gd.models.hooks import layer_names
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.results import CompareResult, DissectionResult
from lightning_gd.results.images import UnitImages


def dissect(
    layers: list[str] | str | None = None,
    all_layers: bool = False,
    generator: nn.Module | str | None = None,
    generator_weights: Path | None = None,
    segmenter: Segmenter | str | None = None,
    z_dim: int | None = None,
    n: PositiveInt = 1000,
    seed: int = 0,
    batch_size: PositiveInt = 50,
    threshold: ThresholdMode = "quantile",
    q: OpenUnitInterval = 0.99,
    iqr_n: PositiveInt = 500,
    iqr_seed: int = 1,
    stride: PositiveInt = 4,
    parts: bool = False,
    iou_threshold: ClosedUnitInterval = 0.05,
    top_k: PositiveInt = 10,
    out: Path = Path("out/dissect"),
    tb_dir: Path | None = Path("tb_logs"),
    cache_dir: Path | None = Path("out/cache"),
    trainer: TrainerOptions = ONE_CPU,
    realism: Path | None = None,
    max_unit_fid: float | None = None,
) -> dict | None:
    """Dissect generator layers: per-unit thresholds, unit×concept IoU, labels, HTML/JSON/TensorBoard reports.

    Writes dissect.json, iou-<layer>.npy, report.html, figures and TensorBoard; returns the JSON document.

    Args:
        layers: layer names to dissect (default: the generator's default layer, the first of its `probe_layers`);
            one name or a list.
        all_layers: dissect every `layer*` block of the generator in one run.
        generator: a zoo spec (`world`, `world:PATH`, …) or a generator module (class_path + init_args);
            default: the embedded world's GAN.
        generator_weights: a local weights file for `generator` (safetensors, or a torch file read weights-only).
        segmenter: a zoo spec or a `lightning_gd.models.segmenters.Segmenter` (class_path + init_args);
            default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        n: samples for the IoU (and, in quantile mode, the thresholds).
        seed: seed of the sample's z (per-index).
        batch_size: samples per forward pass.
        threshold: `quantile` (top 1-q level per unit) or `iqr` (max I/H against the best concept, paper Eq. 2).
        q: quantile level of the `quantile` mode.
        iqr_n: size of the separate validation sample of the `iqr` mode.
        iqr_seed: seed of that validation sample (must differ from `seed`).
        stride: the warm-up and IQR histograms read every stride-th upsampled pixel per axis (offset per sample),
            1 = all (the quantile itself is taken over every pixel).
        parts: also dissect part concepts (object halves: -t, -b, -l, -r).
        iou_threshold: a unit is interpretable when its best IoU exceeds this.
        top_k: top-activating images kept per unit.
        out: output folder (dissect.json, iou-<layer>.npy, report.html, figures).
        tb_dir: TensorBoard folder (None: no TensorBoard); the run is `dissect-<layers>` (with the output
            folder's name when it is not `dissect`).
        cache_dir: where finished stages are cached (None: no cache); the causal search (`fit`), `context` and
            `paint` look in the same default folder, so they reuse this dissection instead of repeating it.
        trainer: where the passes run: Lightning's accelerator, devices, num_nodes, strategy and precision, as
            for `fit` (`--trainer.devices 2 --trainer.strategy ddp`: two processes, which give the same result
            as one; only global rank 0 writes the outputs, the other ranks return None).
        realism: the `unit_fid.json` of `python -m lightning_gd artifacts` for the dissected layer: units
            whose per-unit FID exceeds `max_unit_fid` are left out of the labels (the realism filter, §S-6.3).
        max_unit_fid: the per-unit FID above which a unit counts as unrealistic (needed with `realism`; it
            depends on the data and the feature extractor: the paper used 55 with Inception on LSUN bedrooms).

    Examples:
        python -m lightning_gd dissect
        python -m lightning_gd dissect --threshold iqr --out out/dissect-iqr
        python -m lightning_gd dissect --all_layers true --out out/dissect-all
    """
    from lightning_gd.realism.filter import load_unit_fid
    from lightning_gd.reports.dissection import find_causal

    check_writable(out)
    engine = trainer.trainer()
    # on this process's device from the start: the time estimate and the top images run there too
    G = zoo.generator(generator, weights=generator_weights).to(engine.strategy.root_device).eval()
    seg = zoo.segmenter(segmenter).to(engine.strategy.root_device).eval()
    layers = _layers(G, _named_layers(layers), all_layers)
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
    if (realism is None) != (max_unit_fid is None):
        raise InvalidValue("the realism filter needs both --realism (a unit_fid.json) and --max_unit_fid")
    unit_fid = load_unit_fid(realism, layers, G) if realism is not None else None  # checked before the long passes
    info = {
        "generator": zoo.describe(generator, "generator"),
        "segmenter": zoo.describe(segmenter, "segmenter"),
        "torch": torch.__version__,
    }
    # causal searches beside this folder: the browser shows their ranks and links to them (read now, so that a
    # malformed causal.json is named before the long passes, not after them)
    causal = find_causal(Path(out).resolve().parent, info, links_from=Path(out).resolve())
    zd = z_dim_of(G, z_dim)
    if engine.is_global_zero:
        announce_time(G, seg, settings, zd)
    result = run_dissection(G, layers, seg, settings, z_dim=zd, cache_dir=cache_dir, trainer=engine)
    if not engine.is_global_zero:  # every rank holds the same result; one writes it
        return None
    if unit_fid is not None:
        dropped = result.filter_unrealistic(unit_fid.layer, unit_fid.unit_fid, max_unit_fid)
        print(f"realism filter: {len(dropped)} units of {unit_fid.layer} with per-unit FID > {max_unit_fid} left out")
    shown = shown_images(G, result, zd, segmenter=seg)
    with staged(out) as stage:
        doc = write_dissection(
            result, stage, shown, info, causal=causal, tb_dir=tb_dir, tb_name=run_name("dissect", out, layers)
        )
    from lightning_gd.reports.pages import refresh_pages_beside

    refresh_pages_beside(out)  # the causal searches' pages, written before it, now show its labels
    return doc


def dissection_result(diss: Dissection, info: dict | None = None) -> DissectionResult:
    """The `dissect.json` of `diss`; `info` (generator, segmenter, torch version) joins its settings."""
    s = diss.settings
    layers = {
        layer: {
            "featuremap_size": list(res.featuremap_size),
            "iou_table": f"iou-{layer}.npy",
            "summary": diss.summary(layer),
            "units": diss.units(layer),
        }
        for layer, res in diss.layers.items()
    }
    settings = {**asdict(s), "layers": list(s.layers), **(info or {})}
    vocabulary = {"names": list(diss.vocabulary.names), "categories": list(diss.vocabulary.categories)}
    return DissectionResult.from_document(
        {"settings": settings, "vocabulary": vocabulary, "layers": layers}, "the dissection"
    )


def write_dissection(
    diss: Dissection,
    out: str | Path,
    shown: UnitImages | None = None,
    info: dict | None = None,
    tb_dir: str | Path | None = None,
    tb_name: str = "dissect",
    causal: list[dict] | None = None,
) -> dict:
    """Store a dissection in `out` — `dissect.json`, `iou-<layer>.npy` and the top images the pages show
    (`shown`, from `shown_images`; none: a dissection written without its generator) — then draw its pages
    from what was stored (`lightning_gd.reports.dissection.write_pages`). Returns the JSON document."""
    from lightning_gd.reports.dissection import write_pages

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = dissection_result(diss, info)
    for layer, res in diss.layers.items():
        buf = io.BytesIO()
        np.save(buf, res.iou.numpy())
        atomic_write(out / f"iou-{layer}.npy", buf.getvalue())
    result.save(out)
    shown = shown or no_images(diss)
    if shown.pools is None:  # images made without their units' pools: the dissection holds them
        shown.pools = no_images(diss).pools
    shown.save(out)
    iou = {layer: res.iou for layer, res in diss.layers.items()}
    write_pages(out, result, iou, shown, causal, tb_dir, tb_name)
    return result.document()


LONG_RUN_SAMPLES = 20_000  # above this many samples, time a few and say how long the whole run will take


def announce_time(G: nn.Module, seg: Segmenter, settings: DissectSettings, z_dim: int) -> float | None:
    """For a large sample, print the expected time of the passes (memory does not grow with n, time does);
    returns the estimate in seconds."""
    passes = settings.n + (settings.iqr_n if settings.threshold == "iqr" else 0)  # quantile mode: one pass
    if passes < LONG_RUN_SAMPLES:
        return None
    from lightning_gd.latents import latents
    from lightning_gd.models.generators import device_of

    probe = min(settings.batch_size, 16)
    t0 = time.perf_counter()
    with torch.no_grad():
        seg.labels(G(latents(range(probe), z_dim, settings.seed).to(device_of(G))))
    rate = probe / max(time.perf_counter() - t0, 1e-9)  # images/s through generator and segmenter
    seconds = passes / rate
    print(
        f"dissecting {settings.n:,} samples: about {seconds / 3600:.1f} h ({passes:,} generator passes at "
        f"{rate:.0f} images/s); memory does not grow with n. Ctrl-C stops it."
    )
    return seconds


def _named_layers(layers: list[str] | str | None) -> list[str]:
    """The layers named by --layers; None (not given) is no names. An empty list or an empty name is a mistake: it
    would dissect the default layer, or the whole generator's RGB output as three "units"."""
    if layers is None:
        return []
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise InvalidValue("--layers is empty: name at least one layer (or leave --layers out for the default)")
    if any(not isinstance(name, str) or not name.strip() for name in names):
        raise InvalidValue(f"--layers {names}: an empty layer name; name layers such as layer4")
    return names


def _layers(G: nn.Module, layers: list[str], all_layers: bool) -> list[str]:
    if all_layers:
        layers = [name for name in layer_names(G) if name.startswith("layer") and "." not in name]
        if not layers:
            raise InvalidValue(
                f"all_layers: {type(G).__name__} has no top-level `layer*` blocks; name them with layers"
            )
    return layers or [default_layer(G)]


def compare(
    dissections: list[Path],
    names: list[str] | None = None,
    layer: str | None = None,
    out: Path | None = Path("out/compare"),
) -> list[dict]:
    """Compare dissections of several generators, checkpoints or threshold modes side by side (paper Fig. 7).

    Returns one row per dissection: interpretable units, units matching objects, distinct concepts, mean IoU and
    units per concept of `layer`; writes compare.json and compare.png under `out` (None: nothing written).

    Args:
        dissections: `dissect.json` files (or the folders holding them).
        names: a label per dissection (default: the folder names).
        layer: the layer to compare (default: each dissection's first layer).
        out: output folder for compare.json and compare.png (None: no files).

    Examples:
        python -m lightning_gd compare --dissections "[out/dissect, out/dissect-iqr]" --names "[quantile, iqr]"
        python -m lightning_gd compare --dissections "[out/dissect-quantile, out/dissect-iqr]" --layer layer6
    """
    if not dissections:  # checked first: an empty comparison would replace a folder's compare.json with nothing
        raise InvalidValue("dissections is empty: name at least one dissect.json or the folder holding it")
    if names is not None and len(names) != len(dissections):
        raise InvalidValue(
            f"--names has {len(names)} label(s) for {len(dissections)} dissection(s): give one per dissection, or "
            "leave --names out for the folder names"
        )
    if names is not None and any(not str(name).strip() for name in names):
        raise InvalidValue(f"--names has an empty label: {names}")
    if layer is not None and not layer.strip():
        raise InvalidValue("--layer is empty: name a layer, or leave --layer out for each dissection's first layer")
    if out is not None:
        check_writable(out)
    rows = []
    for i, path in enumerate(dissections):
        path = Path(path)
        path = path / "dissect.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no dissection at {path} (run `python -m lightning_gd dissect --out ...` first)")
        doc = DissectionResult.load(path)
        lay = layer or doc.settings["layers"][0]
        if lay not in doc.layers:
            raise UnknownName(f"{path} has no layer '{lay}'; it has {', '.join(doc.layers)}")
        units = doc.interpretable(lay)
        summ = doc.summary(lay)
        rows.append(
            {
                "name": names[i] if names and i < len(names) else path.resolve().parent.name,
                "layer": lay,
                "threshold": doc.threshold,
                "interpretable": summ["interpretable"],
                "object_units": sum(u["category"] == "object" for u in units),
                "distinct_concepts": summ["distinct_concepts"],
                "mean_iou": summ["mean_iou"],
                "per_concept": summ["per_concept"],
            }
        )
    if out is not None:
        from lightning_gd.reports.figures import comparison_figure

        with staged(out) as stage:
            CompareResult(rows).save(stage)
            comparison_figure(rows, "comparison: " + ", ".join(r["name"] for r in rows), stage / "compare.png")
    return rows

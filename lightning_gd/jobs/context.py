"""The context job (paper §4.4, Fig. 11; §S-6.5, Fig. 17): where can a concept's causal units insert it, and how
does an insertion travel through the later layers."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_gd import zoo
from lightning_gd.cache import check_writable, staged
from lightning_gd.causal.context_module import measure_context
from lightning_gd.causal.context_summary import context_result, where_images
from lightning_gd.causal.interventions import insertion_values, parse_insertion
from lightning_gd.errors import InvalidValue
from lightning_gd.jobs.trainer import ONE_CPU, TrainerOptions
from lightning_gd.models.generators import default_layer, device_of
from lightning_gd.models.segmenters import Segmenter
from lightning_gd.results import CausalSearchResult
from lightning_gd.results.base import VERSION_KEY


def context(
    concept: str | None = None,
    layer: str | None = None,
    generator: nn.Module | str | None = None,
    generator_weights: Path | None = None,
    segmenter: Segmenter | str | None = None,
    z_dim: int | None = None,
    causal: Path | None = None,
    units: list[int] | None = None,
    top_n: PositiveInt = 20,
    n: PositiveInt = 200,
    seed: int = 3,
    locations: PositiveInt | None = None,
    region: PositiveInt = 1,
    trace: bool = False,
    respond: float = 0.05,
    insertion: str = "k_c",
    kc_samples: PositiveInt = 500,
    dissect_samples: PositiveInt = 1000,
    overlays: int = 6,
    bootstrap: PositiveInt = 1000,
    batch_size: PositiveInt = 4,
    chunk: PositiveInt = 256,
    out: Path = Path("out/context"),
    tb_dir: Path | None = Path("tb_logs"),
    cache_dir: Path | None = Path("out/cache"),
    trainer: TrainerOptions = ONE_CPU,
    progress: bool = True,
) -> dict | None:
    """Insert a concept's causal units at single featuremap locations and measure, by the background at the
    location, how much of the concept appears (paper §4.4, Fig. 11); optionally trace the insertion through
    the later layers (§S-6.5, Fig. 17).

    Writes context.json, context_images.safetensors (the images where.png shows, so that `python -m lightning_gd
    report OUT` draws the page again with no network), context.png (effect by background), where.png (responsive
    locations outlined on a few images), with --trace true trace.png and trace_heatmap.png, index.html and
    TensorBoard; returns context.json's content.

    Args:
        concept: the concept to insert (default: the concept of the `causal` search).
        layer: the generator layer of its units (default: the `causal` search's layer, else the generator's
            default layer).
        generator: a zoo spec or a generator module (class_path + init_args); default: the embedded world's GAN.
        generator_weights: a local weights file for `generator`.
        segmenter: a zoo spec or a Segmenter (class_path + init_args); default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        causal: a finished causal search's folder (its causal.json and alpha.safetensors): its top-n units by α
            and its k_c. Without it: `units`, else the top-n units by IoU with the concept (a dissection).
        units: the units to insert (overrides `causal`'s ranking; k_c is still taken from `causal` if given).
        top_n: how many units of a ranking to insert.
        n: images.
        seed: seed of their z.
        locations: insert at this many featuremap locations per image, a fixed uniform sample (default: all).
        region: insert over a region × region square of locations whose top-left corner is the location.
        trace: also record every later layer and measure how the insertion propagates (§S-6.5).
        respond: a location responds when the concept's share of its window grows by at least this much.
        insertion: the value the inserted units are set to: `k_c` (the paper's, §S-6.4), `k_c*M` (M times k_c)
            or `qP` (each unit's P-quantile over every location of kc_samples samples, e.g. q0.999).
        kc_samples: samples for k_c (§S-6.4) when no causal search gives it.
        dissect_samples: samples of the dissection that ranks units by IoU (when neither causal nor units).
        overlays: images shown in where.png.
        bootstrap: resamples of the images for the 95 % intervals.
        batch_size: images whose featuremaps are computed together (each gives locations × edited images).
        chunk: edited images per `f` pass.
        out: output folder.
        tb_dir: TensorBoard folder (None: no TensorBoard).
        cache_dir: where the IoU ranking's dissection is cached.
        trainer: where the insertions run: Lightning's accelerator, devices, num_nodes, strategy and precision, as
            for `fit` (`--trainer.devices 2 --trainer.strategy ddp`: two processes sharing the images, which give
            the same tables as one; only global rank 0 writes the outputs, the other ranks return None).
        progress: show a progress bar.

    Examples:
        python -m lightning_gd context --causal out/causal/door-layer4 --trace true --out out/context/door
        python -m lightning_gd context --causal out/causal/door-layer4 --region 2 --out out/context/door-r2
    """
    from lightning_gd.reports.context import write_context_pages

    concept, layer = _checked_request(concept, layer, causal, units, respond, insertion)
    check_writable(out)
    engine = trainer.trainer(progress)
    dev = engine.strategy.root_device  # this process's device: k_c, the ranking and the figures are made there too
    G = zoo.generator(generator, weights=generator_weights).to(dev).eval()
    layer = layer if layer is not None else default_layer(G)
    seg = zoo.segmenter(segmenter).to(dev).eval()
    seg.concept_index(concept)  # an unknown concept fails here, before any work
    t0 = time.perf_counter()
    chosen, k_c, sources = _units_and_k_c(
        G, seg, concept, layer, causal, units, top_n, z_dim, kc_samples, dissect_samples, cache_dir, progress
    )
    if parse_insertion(insertion)[0] == "quantile":  # measured on the generator's own activations
        from lightning_gd.models.split import LayerSplit

        k_c = insertion_values(insertion, k_c, LayerSplit(G, layer, z_dim), n=kc_samples, progress=progress)
    else:
        k_c = insertion_values(insertion, k_c)
    where = {"locations": locations, "region": region, "trace": trace, "batch_size": batch_size, "chunk": chunk}
    found = measure_context(G, seg, concept, layer, chosen, k_c, n, seed, **where, z_dim=z_dim, trainer=engine)
    if not engine.is_global_zero:  # every rank holds the same result; one writes it
        return None
    settings = {
        "concept": concept,
        "layer": layer,
        "n": n,
        "seed": seed,
        "region": region,
        "respond": respond,
        "insertion": insertion,
        "top_n": len(chosen),
        "locations": locations,
        "generator": zoo.describe(generator, "generator"),
        "bootstrap": bootstrap,
        "seconds": round(time.perf_counter() - t0, 1),
        **sources,
    }
    shown, images = where_images(G, found, seed, region, respond, overlays, z_dim)
    result = context_result(found, tuple(seg.concepts), chosen, k_c, settings, bootstrap, shown)
    with staged(out) as stage:
        result.save(stage)
        if images is not None:
            images.save(stage)
        write_context_pages(stage, tb_dir)
    return {k: v for k, v in result.document().items() if k != VERSION_KEY}


def _checked_request(
    concept: str | None, layer: str | None, causal: Path | None, units: list[int] | None, respond: float, insertion: str
) -> tuple[str, str | None]:
    """The concept and layer to insert at (named, or those of the causal search), after checking the settings that
    need no network, so that a mistake fails before any work."""
    if not 0.0 <= respond <= 1.0:
        raise InvalidValue(f"respond is a share of the window's pixels, in [0, 1]; got {respond}")
    if units is not None and len(units) == 0:  # inserting nothing gives a table of zeros that looks like a result
        raise InvalidValue("--units is empty: name the units to insert, or leave it out to rank them by IoU")
    parse_insertion(insertion)
    if causal is not None:  # what the search was for, unless named (a mismatch is an error in _read_causal)
        searched = _read_causal(Path(causal))[0]
        concept, layer = concept or searched.concept, layer or searched.layer
    if concept is None:
        raise InvalidValue("name the concept to insert (--concept), or a causal search of it (--causal FOLDER)")
    return concept, layer


def _units_and_k_c(
    G: nn.Module,
    seg: Segmenter,
    concept: str,
    layer: str,
    causal: Path | None,
    units: list[int] | None,
    top_n: int,
    z_dim: int | None,
    kc_samples: int,
    dissect_samples: int,
    cache_dir: Path | None,
    progress: bool,
) -> tuple[list[int], torch.Tensor, dict]:
    """The units to insert, their k_c, and where both came from."""
    from lightning_gd.causal.interventions import concept_means
    from lightning_gd.models.split import LayerSplit

    sources: dict = {}
    k_c = None
    if causal is not None:
        doc, tensors = _read_causal(Path(causal), concept, layer)
        k_c = tensors["k_c"]
        sources |= {"units_from": f"α ranking of {causal}", "k_c_from": str(causal)}
        chosen = doc.ranking[:top_n]  # ranked by α
    if units is not None:
        chosen, sources["units_from"] = [int(u) for u in units], "--units"
    elif causal is None:
        from lightning_gd.dissection import dissect
        from lightning_gd.dissection.results import concept_ranking

        d = dissect(G, layer, seg, n=dissect_samples, z_dim=z_dim, cache_dir=cache_dir, progress=progress)
        chosen = concept_ranking(d.layers[layer].iou, d.vocabulary.index(concept))[:top_n]
        sources["units_from"] = f"IoU with {concept} (dissection of {dissect_samples} samples)"
    if k_c is None:
        split = LayerSplit(G, layer, z_dim)
        k_c = concept_means(split, seg, concept, n=kc_samples, progress=progress)["k_c"]
        sources["k_c_from"] = f"concept means over {kc_samples} samples (§S-6.4)"
    return chosen, k_c.to(device_of(G)), sources


def _read_causal(
    folder: Path, concept: str | None = None, layer: str | None = None
) -> tuple[CausalSearchResult, dict | None]:
    """The causal search's result and, once the concept and layer it must be for are known, its tensors (k_c)."""
    from safetensors.torch import load_file

    path = folder / "causal.json" if folder.is_dir() else folder
    if not path.is_file():
        raise FileNotFoundError(f"no causal.json at {path}: run the causal search first (python -m lightning_gd fit)")
    doc = CausalSearchResult.load(path)
    if concept is None or layer is None:
        return doc, None
    if doc.layer != layer or doc.concept != concept:
        raise InvalidValue(f"{path} is a search for {doc.concept!r} at {doc.layer!r}, not {concept!r} at {layer!r}")
    tensors = path.parent / "alpha.safetensors"
    if not tensors.is_file():
        raise FileNotFoundError(f"{tensors} is missing: the causal search's k_c is stored there next to causal.json")
    return doc, load_file(str(tensors))

"""The paint job: build the palette from finished results and serve the painting page on this machine."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_gd import allocator, zoo
from lightning_gd.causal.interventions import parse_insertion
from lightning_gd.errors import InvalidValue
from lightning_gd.models.generators import default_layer, resolve_device
from lightning_gd.models.segmenters import Segmenter


def paint_session(
    layer: str | None = None,
    generator: nn.Module | str | None = None,
    generator_weights: Path | None = None,
    segmenter: Segmenter | str | None = None,
    z_dim: int | None = None,
    results: Path | None = Path("out"),
    dissect_samples: PositiveInt = 300,
    kc_samples: PositiveInt = 200,
    cache_dir: Path | None = Path("out/cache"),
    device: str = "cpu",
    insertion: str = "k_c",
):
    """The `PaintSession` that `paint` serves: brushes from the causal searches (α) and dissections (IoU) found
    under `results`; with none, the labels of a fresh (cached) dissection of `layer` (every concept that is some
    unit's best match, interpretable or not: a brush needs a ranking, not a label)."""
    from lightning_gd.dissection import dissect
    from lightning_gd.dissection.results import concept_ranking
    from lightning_gd.paint.session import Brush, PaintSession, brush_concepts, find_results

    allocator.tune()  # each stroke's blocks reused from the heap, as in the command line (`allocator`)
    dev = resolve_device(device)
    G = zoo.generator(generator, weights=generator_weights).to(dev).eval()
    seg = zoo.segmenter(segmenter).to(dev).eval()
    layer = layer if layer is not None else default_layer(G)
    brushes = find_results(results, layer)
    if not brushes:
        cached = f" (cached in {cache_dir})" if cache_dir else ""
        print(
            f"paint: no causal search or dissection of {layer} under {results}; dissecting {dissect_samples} samples "
            f"for IoU-ranked brushes{cached}",
            flush=True,
        )
        d = dissect(G, layer, seg, n=dissect_samples, z_dim=z_dim, cache_dir=cache_dir, progress=False)
        units = d.units(layer)
        matches = brush_concepts(d.layers[layer].iou, list(d.vocabulary.names))
        for concept in sorted({u["label"] for u in units} | set(matches)):
            order = concept_ranking(d.layers[layer].iou, d.vocabulary.index(concept))
            source = f"dissection of {dissect_samples}"
            brushes.append(Brush(f"{concept} (IoU)", concept, "iou", order, None, source, matches.get(concept)))
    session = PaintSession(G, seg, layer, brushes, z_dim, kc_samples, insertion=insertion)
    session.prepare()
    return session


def paint(
    layer: str | None = None,
    generator: nn.Module | str | None = None,
    generator_weights: Path | None = None,
    segmenter: Segmenter | str | None = None,
    z_dim: int | None = None,
    results: Path | None = Path("out"),
    host: str = "127.0.0.1",
    port: int = 8000,
    dissect_samples: PositiveInt = 300,
    kc_samples: PositiveInt = 200,
    cache_dir: Path | None = Path("out/cache"),
    device: str = "cpu",
    insertion: str = "k_c",
) -> None:
    """Paint with units: a local web page to draw or remove concepts in generated images (the paper's GANPaint).

    Starts a web server on this machine and prints its URL; Ctrl-C stops it.

    Args:
        layer: the generator layer whose units are painted with (default: the generator's default layer).
        generator: a zoo spec or a generator module (class_path + init_args); default: the embedded world's GAN.
        generator_weights: a local weights file for `generator`.
        segmenter: a zoo spec or a Segmenter (class_path + init_args); default: the world's.
        z_dim: latent size, if the generator has no `z_dim` attribute.
        results: a folder searched for finished causal searches (causal.json: α rankings, preferred) and
            dissections (dissect.json: IoU rankings) of `layer`; with none, a dissection is run (cached).
        host: the address to listen on; 127.0.0.1 (default) is reachable from this machine only.
        port: the port.
        dissect_samples: samples of the dissection run when `results` has none.
        kc_samples: samples for k_c of an IoU-ranked concept (computed on its first use).
        cache_dir: where that dissection is cached.
        device: torch device.
        insertion: the value a drawn unit is set to: `k_c` (the paper's, §S-6.4), `k_c*M` (M times k_c) or
            `qP` (each unit's P-quantile over kc_samples samples, e.g. q0.999).

    Examples:
        python -m lightning_gd paint
        python -m lightning_gd paint --results out/causal --port 8080
        python -m lightning_gd paint --insertion k_c*4
    """
    import uvicorn

    from lightning_gd.paint.server import create_app

    if not 0 < port < 65536:
        raise InvalidValue(f"port must be in 1-65535, got {port}")
    parse_insertion(insertion)
    sock = bind(host, port)  # first: a busy port fails before the palette is prepared, and no URL names another server
    session = paint_session(
        layer,
        generator,
        generator_weights,
        segmenter,
        z_dim,
        results,
        dissect_samples,
        kc_samples,
        cache_dir,
        device,
        insertion,
    )
    names = ", ".join(session.brushes)
    print(f"palette ({session.layer}): {names}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: other machines on the network can reach this page")
    print(f"paint at http://{'[' + host + ']' if ':' in host else host}:{port}/  (Ctrl-C stops the server)")
    config = uvicorn.Config(create_app(session, host, port), host=host, port=port, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a user error that says why not (the port in use, an unknown host)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise InvalidValue(f"--host {host}: not an address of this machine ({err.strerror})") from None
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise InvalidValue(f"port {port} on {host} is in use (another server?): choose another --port") from None
        raise InvalidValue(f"cannot listen on {host}:{port}: {err.strerror or err}") from None

"""One painting session on the world GAN for the paint tests: brushes from a small cached dissection (the
`paint` command's fallback when no results are given)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def session(tmp_path_factory):
    import torch

    from lightning_gd.jobs.paint import paint_session

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield paint_session(results=None, dissect_samples=200, kc_samples=100, cache_dir=tmp_path_factory.mktemp("c"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def url(session):
    """The painting server on a free local port: (its address, the session it serves). With
    LIGHTNING_GD_PAINT_RESULTS=<folder> it serves the brushes of the results there instead, drawing with the
    insertion constant LIGHTNING_GD_PAINT_INSERTION (default k_c)."""
    import os
    import socket
    import threading
    import time
    from pathlib import Path

    import uvicorn

    from lightning_gd.jobs.paint import paint_session
    from lightning_gd.paint.server import create_app

    results = os.environ.get("LIGHTNING_GD_PAINT_RESULTS")
    insertion = os.environ.get("LIGHTNING_GD_PAINT_INSERTION", "k_c")
    served = paint_session(results=Path(results), insertion=insertion) if results else session
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", served
    server.should_exit = True
    thread.join(10)

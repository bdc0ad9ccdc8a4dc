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

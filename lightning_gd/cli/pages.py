"""The results pages of a Lightning run, drawn after its analysis has stored its results: `test` of a causal
search writes `ace.json` and the images its grids show; `ResultPages` then draws the curve, the grids and the
folder's page from those files (as `python -m lightning_gd report FOLDER` does later), and logs the same
pictures to the run's TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from lightning_gd.results import AceResult


class ResultPages(pl.Callback):
    """Draws a causal search's pages once its test has stored `ace.json` (added by the project's CLI to every
    Trainer; add it to your own Trainer to get the pages from a test run in Python)."""

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_gd.reports.causal import write_ace_pages

        out = getattr(pl_module, "out", None)
        written = list(getattr(pl_module, "written", []))
        if not trainer.is_global_zero or out is None or Path(out) / AceResult.FILE not in written:
            return
        pages = write_ace_pages(out, pl_module._tensorboard(), pl_module.global_step)
        pl_module.written = [*written, *pages]

"""How a causal search's TensorBoard run opens: a custom-scalars layout of what the search optimises and measures,
α's histogram and the top-n set at the same steps as the scalars (`global_step`), and the search's real result
as its hyper-parameter metric (no `hp_metric = -1` placeholder)."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_gd.cache import staged
from lightning_gd.results import AceResult
from lightning_gd.results.images import AceImages


def epoch_end_step(module) -> int:
    """The step of an epoch's end on the run's x-axis: Lightning logs the epoch's scalars and its validation's at
    the step of the epoch's last optimiser step, `global_step − 1` (the scalars of a batch go at its own step)."""
    return max(module.global_step - 1, 0)


def writer(logger):
    """The run's SummaryWriter when its logger writes TensorBoard, else None."""
    from torch.utils.tensorboard import SummaryWriter

    exp = getattr(logger, "experiment", None) if logger is not None else None
    return exp if isinstance(exp, SummaryWriter) else None


def lay_out(module) -> None:
    """Write a search's custom-scalars layout to its run (at the start of fit and of test, each its own run)."""
    tb = module._tensorboard()
    if tb is not None:
        tb.add_custom_scalars(custom_scalars_layout(module.hparams.concept, module.hparams.layer, module.top_n))


def custom_scalars_layout(concept: str, layer: str, top_n: int) -> dict:
    """One "custom scalars" section per search: the search's result first, the share of the concept removed by the
    top-n units (validation, test), then δ with its two terms, the loss, α's size and the top-n set's turnover."""
    return {
        f"causal search: {concept} @ {layer}": {
            f"share of {concept} removed by the top-{top_n} units": [
                "Multiline",
                [f"val/removed_top{top_n}", f"test/removed_top{top_n}_.*"],
            ],
            "δ = insertion − ablation (soft presence of the concept)": [
                "Multiline",
                ["train/delta", "train/insertion", "train/ablation"],
            ],
            "loss = −δ + λ‖α‖₂": ["Multiline", ["train/loss"]],
            "‖α‖₂ and units with α > 0.5": ["Multiline", ["train/alpha_norm", "train/alpha_above_half"]],
            f"top-{top_n} units replaced per epoch": ["Multiline", ["train/top_n_turnover"]],
        }
    }


def log_alpha(writer, alpha: torch.Tensor, top: list[int], step: int) -> None:
    """α's histogram and the top-n units with their α, at `step` (`epoch_end_step`: where the scalars of the same
    epoch are)."""
    alpha = alpha.detach().cpu()
    writer.add_histogram("train/alpha", alpha, step)  # with the training scalars, not a group that opens first
    text = ", ".join(f"{u} ({float(alpha[u]):.2f})" for u in top)
    writer.add_text(f"top_{len(top)}_units", text, step)


def log_result(loggers, params: dict, metrics: dict[str, float], step: int) -> None:
    """The search's settings with its result as their metrics (TensorBoard's HParams tab), for every
    TensorBoardLogger of the run; other loggers get the metrics as scalars. The metrics are the tags the search
    logs anyway (val/…, test/…) at the same step: a tag of their own would be a chart of one point."""
    from pytorch_lightning.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics, step=step)
        else:
            logger.log_metrics(metrics, step=step)


def log_fit_result(module, removed: float | None) -> None:
    """After fit: the share of the concept that the top-n units removed at the last validation, as the metric of
    the search's settings (none without a validation)."""
    if removed is not None:
        log_result(
            module.trainer.loggers,
            dict(module.hparams),
            {f"val/removed_top{module.top_n}": removed},
            epoch_end_step(module),
        )


def fit_step(module) -> int:
    """The step of the fit that a test measures: its checkpoint's (`CausalSearch.on_load_checkpoint`), or this
    Trainer's after a fit in the same process. A test logs there, at the end of the fit's curves in the run it
    shares with the fit, instead of at step 0."""
    return max(getattr(module, "fit_step", 0), module.global_step)  # a resumed fit: its own, later step


def test_metrics(module, summary: dict) -> dict[str, float]:
    """The test's scalars (share removed by the top-n units of each ranking, α's insertion ACE) and `step`, which
    Lightning takes as their x (and then adds no `epoch` point)."""
    at_n, n = summary["removed_at_top_n"], module.top_n
    return {
        f"test/removed_top{n}_alpha": at_n["alpha"],
        f"test/removed_top{n}_iou": at_n["iou"],
        f"test/removed_top{n}_random": at_n["random_mean"],
        "test/insertion_ace_alpha": summary["insertion_at_top_n"]["alpha"]["ace"],
        "step": float(fit_step(module)),
    }


def write_test_result(module, summary: dict, grid_batch) -> tuple[str, list]:
    """The test's results in the search's folder — `ace.json` and the images its page shows
    (`ace_images.safetensors`, from `grid_batch`: latents and insertion locations), replaced together — and its
    result as the hparam metrics. Returns the line that says the result, for the caller to print once the
    progress bar has closed, and the files written. The pages are drawn from these files
    (`lightning_gd.reports.causal.write_ace_pages`: the command line's `ResultPages` callback, or `report`)."""
    from lightning_gd.causal.grids import grid_images

    out = Path(module.out)
    summary = {**summary, "generator": module.names["generator"]}  # what the results page matches pages by
    result = AceResult.from_summary(summary)  # an undefined share (the concept never present) as null, not NaN
    with staged(out) as stage:
        result.save(stage)
        if grid_batch:
            grid_images(module, *grid_batch).save(stage)
    written = [out / AceResult.FILE, *([out / AceImages.FILE] if grid_batch else [])]
    metrics = {
        f"test/removed_top{module.top_n}_alpha": summary["removed_at_top_n"]["alpha"],
        "test/insertion_ace_alpha": summary["insertion_at_top_n"]["alpha"]["ace"],
    }
    log_result(module.trainer.loggers, dict(module.hparams), metrics, fit_step(module))
    at_n = result.removed_at_top_n
    line = (
        f"{result.concept} @ {result.layer}: ablating the top-{result.top_n} units removes {share(at_n.get('alpha'))} "
        f"of its pixels (α), {share(at_n.get('iou'))} (IoU), {share(at_n.get('random_mean'))} ± "
        f"{share(at_n.get('random_std'))} (random)\n"
    )
    return line, written


def share(value: float | None) -> str:
    """A share as a percentage; "–" where it is undefined."""
    return "–" if value is None else f"{value:.1%}"

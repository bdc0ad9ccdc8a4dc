"""What a long `fit`, `validate` or `test` prints while it runs: Lightning's progress bar on a terminal, without its
`v_num` field (the logger's version, which reads as a metric), and plain lines when the output goes to a file or a
pipe, where a bar is a stream of carriage returns that a log shows as minutes of silence: one line when a run
starts, one per training epoch with the epoch's logged numbers, and one per quarter of a test or validation."""

from __future__ import annotations

import sys
import time

from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar


class ConsoleBar(TQDMProgressBar):
    """Lightning's bar without `v_num`: the TensorBoard version is named once, in the closing listing."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def _number(value) -> str:
    return f"{float(value):.4g}"


class LineProgress(Callback):
    """One line per training epoch and per quarter of an evaluation, flushed as it is printed."""

    def __init__(self, stream=None) -> None:
        self.stream = stream
        self._started: dict[str, float] = {}
        self._said: dict[str, int] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def _start(self, what: str) -> None:
        self._started[what], self._said[what] = time.perf_counter(), 0

    def _took(self, what: str) -> str:
        return f"{time.perf_counter() - self._started.get(what, time.perf_counter()):.0f} s"

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._print(f"fit: {type(pl_module).__name__}, {trainer.max_epochs} epochs")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start("epoch")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: v for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        numbers = ", ".join(f"{k} {_number(v)}" for k, v in sorted(shown.items()))
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        line = f"epoch {trainer.current_epoch + 1}{total} done in {self._took('epoch')}"
        self._print(f"{line}: {numbers}" if numbers else line)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._evaluation_start(trainer, "test")

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn != "fit":  # during fit the epoch line says it
            self._evaluation_start(trainer, "validation")

    def _evaluation_start(self, trainer, what: str) -> None:
        self._start(what)
        if trainer.is_global_zero:
            self._print(f"{what}: {_batches(trainer, what)} batches")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self._quarter(trainer, "test", batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not trainer.sanity_checking and trainer.state.fn != "fit":
            self._quarter(trainer, "validation", batch_idx)

    def _quarter(self, trainer, what: str, batch_idx: int) -> None:
        total = _batches(trainer, what)
        if not trainer.is_global_zero or not isinstance(total, int) or total <= 0:
            return
        quarter = 4 * (batch_idx + 1) // total  # 0…4: print each quarter once, the last with the total time
        if quarter > self._said.get(what, 0):
            self._said[what] = quarter
            self._print(f"{what}: {batch_idx + 1}/{total} batches in {self._took(what)}")


def _batches(trainer, what: str):
    found = trainer.num_test_batches if what == "test" else trainer.num_val_batches
    return sum(found) if isinstance(found, list) else found


def console_callbacks(config: dict, interactive: bool | None = None) -> list[Callback]:
    """The callbacks that print a run's progress, given the Trainer's `config` (its `enable_progress_bar` and
    `callbacks`): the bar without `v_num` on a terminal, lines elsewhere (the bar turned off in `config`)."""
    interactive = sys.stdout.isatty() if interactive is None else interactive
    own_bar = any(isinstance(c, ProgressBar) for c in config.get("callbacks") or [])
    if interactive and config.get("enable_progress_bar", True) is not False:
        return [] if own_bar else [ConsoleBar()]
    if not own_bar:
        config["enable_progress_bar"] = False
    return [LineProgress()]

"""Log a whole `netrazor compress` run into one tracked run (TensorBoard and/or MLflow).

Methods train inside their stages, often several times (gates, then a fine-tune; evolution's
fine-tune after every cycle), so epoch numbers restart. The tracker therefore logs:

- every training epoch of every stage as ``<stage>/<metric>`` (``stage-1-evolution/val_acc``)
  with one pipeline-wide epoch counter as the step, so the curves of all stages follow each
  other on one axis;
- each stage's measured numbers (params, non-zeros, MACs, bytes, val error, latency) as
  ``stage/<metric>`` with the stage number as the step (step 0 = the model before any stage);
- ``final/test_error`` at the end, and the recipe's stages and seed as run parameters.

It listens to the Trainer's progress events rather than being a Trainer callback: the
checkpoint records the callback classes, so a callback here would stop a run from resuming with
a different ``--tensorboard/--mlflow`` choice. A resumed compress opens a new tracked run that
starts at the resumed stage.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

STAGE_METRICS = ("params", "nonzero", "macs", "bytes", "val_error", "val_loss", "latency_ms_b1", "latency_ms_b64")


class PipelineTracker:
    """Forward a compress run's epochs and stage numbers to metric sinks (``open/log/close``,
    e.g. ``netrazor.train.tracking.TensorBoardLogger`` / ``MLflowLogger``)."""

    def __init__(self, loggers: Sequence[Any]):
        self.loggers = list(loggers)
        self.prefix = "train"
        self.epochs_logged = 0

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def open(self, params: dict) -> None:
        for logger in self.loggers:
            logger.open(params)

    def set_stage(self, index: int, kind: str) -> None:
        self.prefix = f"stage-{index}-{kind}"

    def wrap_progress(self, progress: Callable[[dict], None] | None) -> Callable[[dict], None] | None:
        """A progress callable that logs each ``epoch_end`` event, then passes every event on."""
        if not self.loggers:
            return progress

        def forward(event: dict) -> None:
            if event.get("event") == "epoch_end":
                metrics = {f"{self.prefix}/{k}": v for k, v in event.items() if k not in ("event", "epoch", "epochs")}
                self._log(metrics, self.epochs_logged)
                self.epochs_logged += 1
            if progress is not None:
                progress(event)

        return forward

    def log_stage(self, step: int, numbers: dict) -> None:
        """The measured numbers after stage ``step - 1`` (``step`` 0: before the first stage)."""
        self._log({f"stage/{k}": numbers[k] for k in STAGE_METRICS if numbers.get(k) is not None}, step)

    def log_final(self, step: int, test_error: float) -> None:
        self._log({"final/test_error": test_error}, step)

    def close(self, status: str) -> None:
        for logger in self.loggers:
            logger.close(status)

    def _log(self, metrics: dict, step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

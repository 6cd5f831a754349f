"""Optional experiment-tracking callbacks: mirror the Trainer's per-epoch history to TensorBoard
or MLflow. Neither package is a dependency of netrazor (``pip install netrazor[tracking]``);
they are imported only when a logger is constructed, so nothing changes for users without them.

Both loggers write every numeric entry of the history row (train_loss, train_acc, val_loss,
val_acc, lr, seconds, images_per_s, and whatever else a method adds) with the 0-based epoch as
the step, so the curves line up with ``metrics.jsonl``. Under torchrun only rank 0 writes
(``trainer.dist.is_main``); the other ranks hold no writer at all.

Each logger is also a plain metrics sink — ``open(params)``, ``log(metrics, step)``,
``close(status)`` — which is how ``netrazor compress`` logs a whole multi-stage run into one
tracked run (``netrazor.pipeline.tracking``) without being a Trainer callback.
"""

from __future__ import annotations

import importlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netrazor.errors import ConfigError
from netrazor.train.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from netrazor.train.trainer import Trainer

log = logging.getLogger(__name__)


def _require(module: str, package: str, what: str) -> Any:
    """Import ``module`` or raise a ConfigError that says which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the optional package '{package}', which is not installed ({exc}); "
            f"run `pip install {package}` (or `pip install netrazor[tracking]`), or drop the option."
        ) from exc


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """The loggable part of a history row: finite numbers except the epoch index itself
    (bools and strings are skipped; NaN, e.g. val_loss without a val split, is skipped too)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        value = float(value)
        if math.isfinite(value):
            out[key] = value
    return out


def _is_main(trainer: "Trainer") -> bool:
    dist = getattr(trainer, "dist", None)
    return True if dist is None else bool(dist.is_main)


class TensorBoardLogger(Callback):
    """Write each epoch's metrics as TensorBoard scalars under ``log_dir`` (tag = metric name).

    Uses ``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package. The writer
    is opened at train start (rank 0 only) and flushed/closed at train end.
    """

    def __init__(self, log_dir: str | Path):
        _require("tensorboard", "tensorboard", "TensorBoardLogger")
        # torch's wrapper itself imports tensorboard; importing it now surfaces a broken install early.
        self._writer_cls = _require("torch.utils.tensorboard", "tensorboard", "TensorBoardLogger").SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer = None

    # -- sink API
    def open(self, params: dict | None = None) -> None:
        """Open the writer (``params`` are not logged: TensorBoard scalars only)."""
        if self.writer is None:
            self.writer = self._writer_cls(log_dir=str(self.log_dir))

    def log(self, metrics: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in numeric_metrics(metrics).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # so a live `tensorboard --logdir` sees each epoch as it ends

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- Trainer hooks
    def on_train_start(self, trainer: "Trainer") -> None:
        if _is_main(trainer):
            self.open()

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict) -> None:
        self.log(metrics, epoch)

    def on_train_end(self, trainer: "Trainer") -> None:
        self.close()


class MLflowLogger(Callback):
    """Log each epoch's metrics to an MLflow run (``step`` = epoch) and the TrainConfig as params.

    Knobs: ``tracking_uri`` (default a local sqlite file ``mlflow.db``), ``experiment`` name
    (created if missing), ``run_name``. Needs the ``mlflow`` package. After training
    ``run_id`` holds the MLflow run id. The run is ended at train end with status FINISHED.
    """

    def __init__(self, tracking_uri: str = "sqlite:///mlflow.db", experiment: str = "netrazor", run_name: str | None = None):
        self._mlflow = _require("mlflow", "mlflow", "MLflowLogger")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client = None
        self.run_id: str | None = None

    # -- sink API
    def open(self, params: dict | None = None) -> None:
        """Create the MLflow run (once) and log ``params`` as its parameters."""
        if self.run_id is not None:
            return
        # The client API (not the fluent mlflow.start_run) keeps no global "active run", so this
        # logger cannot collide with a user's own mlflow session in the same process.
        self.client = self._mlflow.tracking.MlflowClient(tracking_uri=self.tracking_uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
        run = self.client.create_run(exp_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        for key, value in (params or {}).items():
            self.client.log_param(self.run_id, key, str(value))
        log.info("mlflow run %s in experiment %r at %s", self.run_id, self.experiment, self.tracking_uri)

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None or self.run_id is None:
            return
        for key, value in numeric_metrics(metrics).items():
            self.client.log_metric(self.run_id, key, value, step=step)

    def close(self, status: str = "KILLED") -> None:
        """End the run; KILLED by default (used when fit raised, since on_train_end does not run then)."""
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
        self.client = None

    # -- Trainer hooks
    def on_train_start(self, trainer: "Trainer") -> None:
        if not _is_main(trainer) or self.run_id is not None:
            return
        config = getattr(trainer, "config", None)
        self.open(config.to_dict() if config is not None and hasattr(config, "to_dict") else None)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict) -> None:
        self.log(metrics, epoch)

    def on_train_end(self, trainer: "Trainer") -> None:
        self.close("FINISHED")


def tracking_callbacks(tensorboard: str | Path | None = None, mlflow: str | None = None,
                       experiment: str = "netrazor", run_name: str | None = None) -> list[Callback]:
    """The tracking callbacks the options ask for: ``tensorboard`` a log folder, ``mlflow`` a
    tracking URI (e.g. ``sqlite:///mlflow.db``). Both None -> ``[]`` (and nothing is imported)."""
    callbacks: list[Callback] = []
    if tensorboard is not None:
        callbacks.append(TensorBoardLogger(tensorboard))
    if mlflow is not None:
        callbacks.append(MLflowLogger(mlflow, experiment=experiment, run_name=run_name))
    return callbacks

"""One complete training job for the CLI (``netrazor train``): data + zoo model + default recipe +
Trainer + run store + final val/test numbers. Kept in the library so the command only parses
arguments and renders; works under torchrun too (rank 0 owns the run folder)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


from netrazor.errors import ConfigError, TrainingError
from netrazor.train.callbacks import Callback, CallbackList
from netrazor.train.config import TrainConfig
from netrazor.train.distributed import broadcast_text, init_distributed
from netrazor.train.recipes import default_config
from netrazor.train.trainer import Trainer, seed_everything

log = logging.getLogger(__name__)


class RunLogger(Callback):
    """Mirrors the Trainer's history into the run's metrics.jsonl (rank 0 only), and forwards the
    start/epoch-end/end hooks to optional ``loggers`` (e.g. netrazor.train.tracking's TensorBoard /
    MLflow callbacks). Why forwarded rather than passed to the Trainer: the checkpoint records the
    Trainer's callback classes, so a run could not be resumed with a different set of loggers."""

    def __init__(self, run: Any, loggers: Sequence[Any] = ()):
        self.run = run
        self.loggers = CallbackList(loggers)

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.dist.is_main:
            self.run.write_metrics(trainer.history)  # after a resume: exactly the restored epochs
        self.loggers.call("on_train_start", trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        if trainer.dist.is_main:
            self.run.log_epoch(metrics)
        self.loggers.call("on_epoch_end", trainer, epoch, metrics)

    def on_train_end(self, trainer: Trainer) -> None:
        self.loggers.call("on_train_end", trainer)

    def close_loggers(self, trainer: Trainer) -> None:
        """Close the loggers after an interrupted/failed fit (the Trainer skips on_train_end then)."""
        for logger in self.loggers:
            close = getattr(logger, "close", None)
            if close is not None:
                close()


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during a job; ``run_dir`` holds the last epoch checkpoint to resume from."""

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        self.run_dir = run_dir


@dataclass
class TrainJobResult:
    run: Any  # netrazor.pipeline.store.Run (None on ranks > 0)
    history: list[dict]
    summary: dict


def open_run(resume: str | Path, out: str | Path):
    """Find the run to resume: a run id under ``out`` or a run folder path."""
    from netrazor.pipeline.store import RunStore

    path = Path(resume)
    if (path / "config.json").exists():
        return RunStore(path.resolve().parent).get(path.resolve().name)
    return RunStore(out).get(str(resume))


def train_job(
    model: str | None = None,
    data: str | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    data_root: str | Path | None = None,
    width_mult: float = 1.0,
    device: str = "cpu",
    progress: Callable[[dict], None] | None = None,
    loggers: Sequence[Any] = (),
) -> TrainJobResult:
    """Train zoo ``model`` on ``data`` with ``default_config`` plus ``overrides`` into a new run
    under ``out``, or continue run ``resume`` (an id under ``out`` or a run folder) with the
    settings stored in its config.json. Ctrl-C marks the run "interrupted" (checkpoint kept) and
    re-raises; a NaN loss marks it "failed" and re-raises the TrainingError. ``loggers`` are
    metric sinks with on_train_start/on_epoch_end/on_train_end hooks (see
    netrazor.train.tracking.tracking_callbacks); they may differ between a run and its resume."""
    from netrazor.data import load_data
    from netrazor.measure import count_params, evaluate
    from netrazor.models import build_model
    from netrazor.pipeline.store import RunStore

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    dist_info, dev = init_distributed(device)
    run = None
    if resume is not None:
        if overrides or model or data:
            raise ConfigError("--resume continues a run with its own settings; drop --model/--data/--epochs/... "
                              "or start a new run instead.")
        run = open_run(resume, out) if dist_info.is_main else None
        run_dir = broadcast_text(str(run.dir) if run else "", dev)
        if run is None:
            run = open_run(run_dir, out)
        stored = run.config
        model_name, model_kwargs = stored["model"]["name"], stored["model"].get("kwargs", {})
        data_name, data_root = stored["data"]["name"], stored["data"].get("root")
        config = TrainConfig.from_dict(stored["train"])
    else:
        if not model or not data:
            raise ConfigError("netrazor train needs --model and --data (or --resume RUN).")
        model_name, data_name = model, data
        model_kwargs = {"width_mult": width_mult} if width_mult != 1.0 else {}
        config = default_config(model_name, data_name).replace(**overrides)

    bundle = load_data(data_name, root=data_root)
    seed_everything(config.seed)  # the initial weights depend on the seed only
    net = build_model(model_name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                      input_size=bundle.image_size, **model_kwargs)
    if resume is None:
        job_config = {"command": "train", "model": {"name": model_name, "kwargs": model_kwargs},
                      "data": {"name": data_name, "root": str(data_root) if data_root else None},
                      "train": config.to_dict(), "world_size": dist_info.world_size}
        run = RunStore(out).create("train", job_config, model=model_name, data=data_name) if dist_info.is_main else None
        run_dir = broadcast_text(str(run.dir) if run else "", dev)
    else:
        run_dir = str(run.dir)
        if dist_info.is_main:
            run.set_status("running")

    run_logger = RunLogger(run, loggers)
    trainer = Trainer(net, bundle, config, callbacks=[run_logger], run_dir=run_dir, progress=progress, device=device)
    started = time.perf_counter()
    try:
        history = trainer.fit(resume=resume is not None)
    except KeyboardInterrupt as exc:
        run_logger.close_loggers(trainer)
        if dist_info.is_main:
            run.set_status("interrupted")
        raise TrainInterrupted(run_dir) from exc
    except TrainingError:
        run_logger.close_loggers(trainer)
        if dist_info.is_main:
            run.set_status("failed")
        raise
    wall = time.perf_counter() - started
    summary: dict[str, Any] = {}
    if dist_info.is_main:
        val = evaluate(trainer.model, bundle.val, bundle.mean, bundle.std)
        test = evaluate(trainer.model, bundle.test, bundle.mean, bundle.std)
        summary = {
            "model": model_name, "data": data_name, "epochs": len(history), "seed": config.seed,
            "val_acc": val["accuracy"], "val_loss": val["loss"], "test_acc": test["accuracy"], "test_loss": test["loss"],
            "val_error": val["error"], "test_error": test["error"], "params": count_params(trainer.model),
            "train_seconds": sum(h["seconds"] for h in history), "wall_seconds_this_session": wall,
            "images_per_s": (sum(h["images_per_s"] for h in history) / len(history)) if history else 0.0,
            "world_size": dist_info.world_size,
        }
        run.save_model(trainer.model,  # fit hands the model back contiguous whatever format training used
                       extra={"run": run.id, "val_acc": val["accuracy"], "test_acc": test["accuracy"]})
        run.write_summary(summary)
        log.info("run %s: val acc %.2f %%, test acc %.2f %%", run.id, 100 * val["accuracy"], 100 * test["accuracy"])
    return TrainJobResult(run=run, history=history, summary=summary)

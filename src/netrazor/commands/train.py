"""`netrazor train --model lenet5 --data mnist`: train a zoo model with its default recipe into
the run store, with a live progress bar (loss / accuracy / throughput) and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class TrainProgress:
    """Render the Trainer's progress events: one bar per epoch with loss, accuracy, images/s, lr."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self.task = None
        self.epoch = None

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "step":
            if event["epoch"] != self.epoch:
                self.epoch = event["epoch"]
                self.task = self.progress.add_task(f"epoch {self.epoch + 1}/{event['epochs']}",
                                                   total=event["steps_per_epoch"], info="")
            info = (f"loss {event['loss']:.4f}  acc {100 * event['acc']:.2f}%  "
                    f"{event['images_per_s']:,.0f} img/s  lr {event['lr']:.3g}")
            self.progress.update(self.task, completed=event["step"], info=info)
        elif kind == "epoch_end" and self.task is not None:
            self.progress.update(self.task, info=(f"loss {event['train_loss']:.4f}  acc {100 * event['train_acc']:.2f}%  "
                                                  f"val {100 * event['val_acc']:.2f}%  {event['images_per_s']:,.0f} img/s"))


def _summary_table(result) -> Table:
    s = result.summary
    table = Table(title=f"run {result.run.id}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("model / data", f"{s['model']} / {s['data']}")
    table.add_row("epochs", str(s["epochs"]))
    table.add_row("parameters", f"{s['params']:,}")
    table.add_row("val accuracy", f"{100 * s['val_acc']:.2f} %")
    table.add_row("test accuracy", f"{100 * s['test_acc']:.2f} %")
    table.add_row("training time", f"{s['train_seconds']:.1f} s ({s['images_per_s']:,.0f} img/s)")
    table.add_row("saved", str(result.run.dir))
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo model (lenet300, lenet5, resnet20, vgg11, ...)."),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="mnist, fashion-mnist, cifar10, synthetic or a path."),
        epochs: Optional[int] = typer.Option(None, help="Epochs (default: the model/data recipe)."),
        lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size."),
        optimizer: Optional[str] = typer.Option(None, help="sgd, adam or adamw."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay coefficient."),
        schedule: Optional[str] = typer.Option(None, help="cosine, step or constant."),
        warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", help="Linear warm-up length (epochs)."),
        label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Label smoothing in [0, 1)."),
        grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this value."),
        augment: Optional[str] = typer.Option(None, help="none, crop_flip (CIFAR) or shift (up to 2 px, digits); default: the data set's."),
        channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                     help="NHWC memory format (faster conv nets on CPU)."),
        seed: Optional[int] = typer.Option(None, help="Seed of weights, order and augmentation."),
        width_mult: float = typer.Option(1.0, "--width-mult", help="Model width multiplier."),
        resume: Optional[str] = typer.Option(None, "--resume", help="Continue an interrupted run (id or folder)."),
        out: Path = typer.Option(Path("runs"), "--out", help="Run store folder."),
        data_root: Optional[Path] = typer.Option(None, "--data-root", help="Data folder (default $NETRAZOR_DATA)."),
        device: str = typer.Option("cpu", help="cpu or cuda."),
        tensorboard: Optional[Path] = typer.Option(None, "--tensorboard",
                                                   help="Also log epoch metrics to TensorBoard in this folder "
                                                        "(needs `pip install tensorboard`)."),
        mlflow: Optional[str] = typer.Option(None, "--mlflow",
                                             help="Also log epoch metrics to MLflow at this tracking URI, e.g. "
                                                  "sqlite:///mlflow.db (needs `pip install mlflow`)."),
    ) -> None:
        """Train a zoo model with its documented default recipe (docs/training.md) into the run store."""
        from netrazor.cli import console
        from netrazor.train.job import TrainInterrupted, train_job
        from netrazor.train.tracking import tracking_callbacks

        overrides = dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay,
                         schedule=schedule, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
                         augment=augment, channels_last=channels_last, seed=seed, grad_clip=grad_clip)
        # built before training so a missing package fails at once (ConfigError with the pip hint)
        loggers = tracking_callbacks(tensorboard=tensorboard, mlflow=mlflow)
        try:
            with TrainProgress(console) as bar:
                result = train_job(model, data, overrides=overrides, out=out, resume=resume, data_root=data_root,
                                   width_mult=width_mult, device=device, progress=bar, loggers=loggers)
        except TrainInterrupted as exc:
            if (Path(exc.run_dir) / "checkpoint.json").exists():
                kept = f"the last epoch checkpoint in {exc.run_dir} is kept"
            else:
                kept = f"no epoch had finished, so resuming {exc.run_dir} starts from its beginning"
            console.print(f"[yellow]interrupted[/]: {kept}; continue with `netrazor train --resume {exc.run_dir}`.")
            raise typer.Exit(130)
        if result.run is not None:
            Console().print(_summary_table(result))

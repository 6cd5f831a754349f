"""Render the library's progress events as rich progress bars (the CLI's only job here).

The library emits plain dict events through a ``progress`` callable; this keeps
rendering out of the library. Known keys: ``task`` (bar name; default "train"),
``step``/``steps_per_epoch`` or ``completed``/``total``, ``epoch``/``epochs`` and
any numeric metrics (loss, acc, images_per_s, density, divergence, …) shown
beside the bar.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_SKIP = {"task", "step", "steps_per_epoch", "completed", "total", "epoch", "epochs", "event"}


def _describe(event: dict) -> str:
    parts = []
    if "epoch" in event:
        epochs = event.get("epochs")
        parts.append(f"epoch {event['epoch'] + 1}/{epochs}" if epochs else f"epoch {event['epoch'] + 1}")
    for key, value in event.items():
        if key in _SKIP or isinstance(value, bool):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{key} {value}")
    return " ".join(parts)


@contextmanager
def progress_renderer(console: Console | None = None) -> Iterator[Callable[[dict], None]]:
    """Yield a ``progress(event)`` callable that drives one rich bar per task name."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console or Console(stderr=True),
        transient=False,
    )
    bars: dict[str, int] = {}

    def update(event: dict) -> None:
        name = str(event.get("task", "train"))
        total = event.get("total", event.get("steps_per_epoch"))
        completed = event.get("completed", event.get("step"))
        if name not in bars:
            bars[name] = progress.add_task(name, total=total, info="")
        bar = bars[name]
        kwargs = {"info": _describe(event)}
        if total is not None:
            kwargs["total"] = total
        if completed is not None:
            kwargs["completed"] = completed
        progress.update(bar, **kwargs)

    with progress:
        yield update

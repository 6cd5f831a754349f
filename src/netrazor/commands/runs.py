"""`netrazor runs` lists the run store; `netrazor runs show ID` shows one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _pct(value) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else ""


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="List and inspect runs in the run store.", no_args_is_help=False)

    @runs_app.callback(invoke_without_command=True)
    def runs(
        ctx: typer.Context,
        root: Path = typer.Option(Path("runs"), "--root", help="Run store folder."),
        kind: Optional[str] = typer.Option(None, help="Only runs of this kind (train, compress, ...)."),
        as_json: bool = typer.Option(False, "--json", help="Print the index rows as JSON."),
    ) -> None:
        """List runs (newest last)."""
        ctx.obj = {"root": root}
        if ctx.invoked_subcommand is not None:
            return
        from netrazor.pipeline.store import RunStore

        rows = RunStore(root).list(kind=kind)
        if as_json:
            console.print_json(json.dumps(rows))
            return
        if not rows:
            console.print(f"no runs under {root}; `netrazor train --model lenet5 --data mnist` makes one.")
            return
        table = Table(title=f"runs in {root}")
        # The id already reads <created>-<kind>-<model>-<data>-<tag>, so the table stays narrow.
        table.add_column("id", no_wrap=True)
        for col in ("status", "val acc", "test acc"):
            table.add_column(col, no_wrap=True)
        for r in rows:
            s = r["summary"]
            table.add_row(r["id"], r["status"], _pct(s.get("val_acc")), _pct(s.get("test_acc")))
        console.print(table)

    @runs_app.command()
    def show(
        ctx: typer.Context,
        run_id: str = typer.Argument(..., metavar="ID", help="Run id (or run folder)."),
        as_json: bool = typer.Option(False, "--json", help="Print config, summary and metrics as JSON."),
    ) -> None:
        """Show one run: config, per-epoch metrics, summary."""
        from netrazor.pipeline.store import RunStore

        root = ctx.obj["root"] if ctx.obj else Path("runs")
        path = Path(run_id)
        store = RunStore(path.resolve().parent) if (path / "config.json").exists() else RunStore(root)
        run = store.get(path.resolve().name if (path / "config.json").exists() else run_id)
        info = {"id": run.id, "dir": str(run.dir), "index": run.row, "config": run.config,
                "summary": run.summary(), "metrics": run.metrics()}
        if as_json:
            console.print_json(json.dumps(info, default=str))
            return
        console.print(f"[bold]{run.id}[/]  {info['index']['status']}  ({run.dir})")
        console.print_json(json.dumps(info["config"], default=str))
        if info["metrics"]:
            table = Table(title="epochs")
            for col in ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "s", "img/s"):
                table.add_column(col, justify="right")
            for m in info["metrics"]:
                table.add_row(str(m.get("epoch", "") + 1 if isinstance(m.get("epoch"), int) else ""),
                              f"{m.get('train_loss', float('nan')):.4f}", _pct(m.get("train_acc")),
                              f"{m.get('val_loss', float('nan')):.4f}", _pct(m.get("val_acc")),
                              f"{m.get('lr', float('nan')):.3g}", f"{m.get('seconds', float('nan')):.1f}",
                              f"{m.get('images_per_s', float('nan')):,.0f}")
            console.print(table)
        if info["summary"]:
            table = Table(title="summary")
            table.add_column("key")
            table.add_column("value", justify="right")
            for k, v in info["summary"].items():
                table.add_row(k, _pct(v) if k.endswith("_acc") else (f"{v:.4g}" if isinstance(v, float) else str(v)))
            console.print(table)

    app.add_typer(runs_app, name="runs")

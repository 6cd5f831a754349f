"""`netrazor measure CHECKPOINT`: params, non-zeros, MACs, bytes, latency (and accuracy with --data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _input_shape(model, data, option: Optional[str]) -> tuple[int, ...]:
    from netrazor.errors import ConfigError

    if option:
        try:
            return tuple(int(v) for v in option.replace("x", ",").split(","))
        except ValueError as exc:
            raise ConfigError(f"--input-shape must look like 1,28,28, got {option!r}.") from exc
    if data is not None:
        return data.input_shape
    spec = getattr(model, "netrazor_spec", None)
    if isinstance(spec, dict) and "kwargs" in spec:
        kw = spec["kwargs"]
        return (int(kw["in_channels"]), *[int(s) for s in kw["input_size"]])
    raise ConfigError("cannot tell the input shape of this model; pass --input-shape C,H,W or --data NAME.")


def _table(checkpoint: Path, record: dict, with_data: bool) -> Table:
    extra = record.get("extra", {})
    table = Table(title=f"measure {checkpoint}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{record['params']:,}")
    density = record["nonzero"] / record["params"] if record["params"] else 0.0
    table.add_row("non-zero parameters", f"{record['nonzero']:,} ({100 * density:.1f} %)")
    table.add_row("MACs (batch 1)", f"{record['macs']:,}")
    table.add_row("bytes (dense float32)", f"{record['bytes']:,}")
    for batch in (1, 64):
        key = f"latency_ms_b{batch}"
        if key in record:
            table.add_row(
                f"latency batch {batch} (ms)",
                f"{record[key]:.3f} (p10 {extra[key + '_p10']:.3f}, p90 {extra[key + '_p90']:.3f})",
            )
    if "threads" in extra:
        table.add_row("threads", str(extra["threads"]))
    if with_data:
        for split in ("val", "test"):
            if f"{split}_error" in record:
                table.add_row(f"{split} accuracy", f"{100 * (1 - record[f'{split}_error']):.2f} %")
                table.add_row(f"{split} loss", f"{record[f'{split}_loss']:.4f}")
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def measure(
        checkpoint: Path = typer.Argument(..., help="A saved model: X, X.safetensors or X.json (both files must exist)."),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="Also report val/test accuracy on this data set (mnist, fashion-mnist, cifar10, synthetic or a path)."),
        data_root: Optional[Path] = typer.Option(None, help="Where data sets live (default $NETRAZOR_DATA or ~/.cache/netrazor/data)."),
        latency: bool = typer.Option(True, "--latency/--no-latency", help="Time batch 1 and batch 64 forward passes."),
        repeats: int = typer.Option(30, help="Timed runs per batch size (the median is reported)."),
        warmup: int = typer.Option(5, help="Untimed runs before timing."),
        threads: Optional[int] = typer.Option(None, help="torch intra-op threads for the timing (default: torch's)."),
        input_shape: Optional[str] = typer.Option(None, help="C,H,W when the model's spec does not say it."),
        as_json: bool = typer.Option(False, "--json", help="Print the record as JSON instead of a table."),
    ) -> None:
        """Measure a saved model: parameters, non-zeros, MACs, bytes, latency (and accuracy with --data)."""
        import torch

        from netrazor.measure import measure_model
        from netrazor.surgery import load_model  # reads zoo and altered architectures alike

        if threads is not None:
            torch.set_num_threads(max(1, threads))
        model = load_model(checkpoint)
        bundle = None
        if data is not None:
            from netrazor.data import load_data

            bundle = load_data(data, root=data_root)
        shape = _input_shape(model, bundle, input_shape)
        record = measure_model(model, shape, bundle, split=("val", "test"), latency=latency, repeats=repeats,
                               warmup=warmup)
        if as_json:
            typer.echo(json.dumps(record, indent=2, sort_keys=True))
        else:
            console.print(_table(checkpoint, record, bundle is not None))

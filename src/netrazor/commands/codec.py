"""`netrazor pack` / `netrazor unpack`: a saved model ⇄ an .nrz artifact, bytes at every stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _val_error_fn(data_name: str, eval_samples: int):
    """Validation error (lower is better) on the first ``eval_samples`` validation images."""
    import torch

    from netrazor.data import load_data
    from netrazor.measure import evaluate

    data = load_data(data_name)
    n = min(eval_samples, len(data.val))
    val = data.val.subset(torch.arange(n))

    def eval_fn(model) -> float:
        return float(evaluate(model, val, data.mean, data.std)["error"])

    return eval_fn


def _report_tables(report) -> tuple[Table, Table]:
    stages = Table(title=f"pack {report.path}")
    stages.add_column("stage")
    stages.add_column("bytes", justify="right")
    stages.add_column("× vs dense", justify="right")
    for name, size in report.stages():
        stages.add_row(name, f"{size:,}", f"{report.dense_bytes / size:.1f}" if size else "—")
    stages.add_row("coded streams (positions + indices)", f"{report.stream_bytes:,}", "")
    stages.add_row("Shannon bound of those streams", f"{report.shannon_bound_bytes:,.0f}",
                   f"+{100 * (report.stream_bytes / report.shannon_bound_bytes - 1):.1f} %" if report.shannon_bound_bytes else "")
    layers = Table(title="tensors", caption="bound: order-0 Shannon bound of the symbol streams the section codes "
                   "(positions, an index set's members, codebook indices); raw sections code no stream, so none")
    for col in ("tensor", "shape", "non-zero", "levels", "positions", "values", "bytes", "bound"):
        layers.add_column(col, justify="right" if col not in ("tensor", "positions", "values") else "left")
    for row in report.tensors:
        bound = section_bound_bytes(row)
        layers.add_row(
            row["name"], "×".join(map(str, row["shape"])) or "scalar", f"{row['nnz']:,}",
            str(row["levels"] or "—"), row["position_kind"] or "raw", row["value_kind"] or row["dtype"],
            f"{row['section_bytes']:,}", "none (raw)" if bound is None else f"{bound:,.0f}",
        )
    return stages, layers


def section_bound_bytes(row: dict) -> float | None:
    """Shannon bound in bytes of one section's coded streams (a ``PackReport.tensors`` row), or
    None for a raw section. An index set (e.g. a gated layer's kept input pixels) is coded as the
    positions of a mask, so its bound is that mask stream's, exactly as for a sparse tensor's positions."""
    if row["kind"] not in ("sparse", "index-set"):
        return None
    return (row["position_bound_bits"] + row["index_bound_bits"]) / 8


def register(app: typer.Typer) -> None:
    @app.command("pack")
    def pack_cmd(
        model_path: Path = typer.Argument(..., metavar="MODEL", help="saved model (X, X.safetensors or X.json)"),
        output: Path = typer.Option(..., "--output", "-o", help="the .nrz file to write"),
        bits: Optional[int] = typer.Option(None, "--bits", help="quantise every layer to N bits (1-8)"),
        tolerance: Optional[float] = typer.Option(None, "--tolerance", help="search the fewest bits per layer within this validation-error increase"),
        budget_bits: Optional[int] = typer.Option(None, "--budget-bits", help="allocate widths greedily so that all layers' indices + codebooks fit N bits (lowest validation-error increase per bit saved)"),
        data: Optional[str] = typer.Option(None, "--data", help="data set for --tolerance / --budget-bits (mnist, fashion-mnist, cifar10 or a path)"),
        method: str = typer.Option("kmeans", "--method", help="kmeans or uniform"),
        per_channel: bool = typer.Option(False, "--per-channel", help="uniform: one scale per output channel"),
        eval_samples: int = typer.Option(2000, "--eval-samples", help="validation images per evaluation in the search"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Quantise (optionally) and encode a model; print the bytes at every stage."""
        from netrazor.codec import pack
        from netrazor.errors import ConfigError
        from netrazor.quant import allocate_bits, search_bits
        from netrazor.surgery import load_model  # reads zoo and altered architectures alike

        chosen = [flag for flag, value in (("--bits", bits), ("--tolerance", tolerance), ("--budget-bits", budget_bits))
                  if value is not None]
        if len(chosen) > 1:
            raise ConfigError(f"pass one of --bits, --tolerance or --budget-bits, not {' and '.join(chosen)}.")
        if (tolerance is not None or budget_bits is not None) and not data:
            raise ConfigError(f"{chosen[0]} needs --data NAME to measure the validation error.")
        model = load_model(model_path)
        quantisation = None
        if tolerance is not None:
            result = search_bits(model, _val_error_fn(data, eval_samples), tolerance, method=method, per_channel=per_channel)
            model, quantisation = result.model, result.to_dict()
        elif budget_bits is not None:
            result = allocate_bits(model, _val_error_fn(data, eval_samples), budget_bits, method=method, per_channel=per_channel)
            model, quantisation = result.model, result.to_dict()
        report = pack(model, output, bits=bits, method=method, per_channel=per_channel, quantisation=quantisation)
        if as_json:
            console.print_json(json.dumps(report.to_dict()))
            return
        stages, layers = _report_tables(report)
        console.print(layers)
        console.print(stages)
        if report.bits:
            console.print(f"bits per layer: {report.bits}")
        console.print(f"[bold]{report.summary_line()}[/]")

    @app.command("unpack")
    def unpack_cmd(
        path: Path = typer.Argument(..., help="an .nrz file"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="folder to write model.safetensors + model.json"),
        check: bool = typer.Option(False, "--check", help="only verify the framing and checksums"),
    ) -> None:
        """Rebuild the model from an .nrz file (or just verify it with --check)."""
        from netrazor.codec import read_nrz, unpack, verify
        from netrazor.errors import ConfigError

        if check:
            info = verify(path)
            console.print(f"{path}: OK — format version {info['version']}, {info['tensors']} tensors, {info['bytes']:,} bytes, checksums valid")
            return
        if output is None:
            raise ConfigError("pass --output DIR to write the model, or --check to only verify the file.")
        header, tensors = read_nrz(path)
        if isinstance(header.get("model"), dict) or isinstance(header.get("architecture"), dict):
            # a zoo model or one altered by surgery: the one model format (netrazor.surgery.save_model)
            from netrazor.surgery import save_model

            save_model(unpack(path), output / "model", extra={"source": str(path)})
            weights, meta = output / "model.safetensors", output / "model.json"
        else:
            from netrazor.io import save_tensors, write_json

            weights, meta = output / "model.safetensors", output / "model.json"
            save_tensors(weights, tensors)
            write_json(meta, {"format": "netrazor-state-dict", "version": 1, "spec": None,
                              "tensors": {k: list(v.shape) for k, v in tensors.items()}, "extra": {"source": str(path)}})
        console.print(f"wrote {weights} and {meta}")

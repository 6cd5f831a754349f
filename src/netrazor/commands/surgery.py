"""`netrazor export CHECKPOINT --onnx out.onnx`: export a saved (possibly altered) model with a parity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()


def _parse_shape(option: str) -> tuple[int, ...]:
    from netrazor.errors import ConfigError

    try:
        shape = tuple(int(v) for v in option.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"--input-shape {option!r} is not C,H,W (or features); pass e.g. 3,32,32.")
    return shape


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        checkpoint: Path = typer.Argument(..., help="Model saved by netrazor (X, X.json or X.safetensors)."),
        onnx: Path = typer.Option(..., "--onnx", help="Where to write the ONNX file."),
        input_shape: Optional[str] = typer.Option(None, "--input-shape", help="C,H,W without batch; default from the checkpoint."),
        rtol: float = typer.Option(1e-4, help="Allowed relative difference torch vs onnxruntime."),
        trust_export: bool = typer.Option(False, "--trust-export", help="Allow torch.export archives (pickle risk)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Export CHECKPOINT to ONNX and check it against onnxruntime."""
        from netrazor.errors import ConfigError
        from netrazor.surgery import export_onnx, load_model
        from netrazor.surgery.serialize import stored_input_shape

        model = load_model(checkpoint, trust_export=trust_export)
        shape = _parse_shape(input_shape) if input_shape else stored_input_shape(checkpoint)
        if shape is None:
            raise ConfigError(f"{checkpoint} does not record its input shape; pass --input-shape C,H,W.")
        report = export_onnx(model, onnx, shape, rtol=rtol)
        if as_json:
            console.print_json(json.dumps(report))
        else:
            console.print(f"wrote {report['path']} ({report['bytes']} bytes); onnxruntime parity: "
                          f"max abs diff {report['max_abs_diff']:.3g} (relative {report['rel_diff']:.3g})")

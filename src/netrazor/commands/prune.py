"""`netrazor prune MODEL --method NAME`: run one compression method on a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from netrazor.errors import ConfigError

console = Console()


def parse_knobs(pairs: list[str]) -> dict:
    """``["kappa=0.5", "targets=0.1"]`` -> ``{"kappa": 0.5, "targets": 0.1}`` (values parsed as YAML)."""
    import yaml

    knobs = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r} (for example --set kappa=0.5).")
        key, value = pair.split("=", 1)
        knobs[key.strip()] = yaml.safe_load(value)
    return knobs


def register(app: typer.Typer) -> None:
    from netrazor.pipeline.stages import METHOD_STAGES

    methods = ", ".join(sorted(METHOD_STAGES))

    @app.command()
    def prune(
        model_path: Path = typer.Argument(..., metavar="MODEL", help="A saved model (X.safetensors + X.json, from `netrazor train` or a previous stage)."),
        method: str = typer.Option(..., "--method", "-m", help=f"One of: {methods}."),
        data: str = typer.Option(..., "--data", "-d", help="Data set the model was trained on (mnist, fashion-mnist, cifar10, or a path)."),
        knob: List[str] = typer.Option([], "--set", help="Method knob KEY=VALUE, repeatable (see docs/methods/)."),
        out: Path = typer.Option(Path("pruned/model"), "--out", "-o", help="Where to save the smaller model (without extension)."),
        epochs: Optional[int] = typer.Option(None, help="Override the training epochs the method uses through the recipe."),
        seed: int = typer.Option(0, help="Random seed."),
    ) -> None:
        """Compress a trained model with one method and save the physically smaller result."""
        import dataclasses

        import torch

        from netrazor.commands.progress import progress_renderer
        from netrazor.data import load_data
        from netrazor.measure import measure_model
        from netrazor.methods.base import Adapter
        from netrazor.pipeline.stages import METHOD_STAGES, method_class
        from netrazor.surgery import load_model, save_model
        from netrazor.train import default_config

        if method not in METHOD_STAGES:
            raise ConfigError(f"unknown method {method!r}; choose one of: {methods}.")
        knobs = parse_knobs(knob)
        try:
            runner = method_class(method)(**knobs)
        except (TypeError, ValueError, ConfigError) as exc:
            raise ConfigError(f"bad knob for {method}: {exc}") from exc
        torch.manual_seed(seed)
        model = load_model(model_path)
        bundle = load_data(data)
        spec = getattr(model, "netrazor_spec", {}) or {}
        config = dataclasses.replace(default_config(spec.get("name", "custom"), data), seed=seed)
        if epochs is not None:
            config = dataclasses.replace(config, epochs=epochs)
        before = measure_model(model, bundle.input_shape, data=bundle, split="val")
        with progress_renderer() as progress:
            adapter = Adapter(data=bundle, train_config=config, progress=progress, run_dir=out.parent / f"{out.name}-work")
            model, record = runner.run(model, adapter)
        after = measure_model(model, bundle.input_shape, data=bundle, split="val")
        save_model(model, out)
        table = Table(title=f"{method} on {model_path}")
        table.add_column("")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        table.add_column("ratio", justify="right")
        for key in ("params", "nonzero", "macs", "bytes", "latency_ms_b1", "latency_ms_b64", "val_error"):
            b, a = before.get(key), after.get(key)
            ratio = f"{b / a:.2f}×" if isinstance(b, (int, float)) and isinstance(a, (int, float)) and a and key != "val_error" else ""
            table.add_row(key, _cell(b), _cell(a), ratio)
        console.print(table)
        console.print(f"saved {out}.safetensors / {out}.json")


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}"

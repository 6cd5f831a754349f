"""`netrazor compress`, `netrazor report`, `netrazor recipes` and `netrazor demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()

DEMO_RECIPE = "mnist-lenet5-demo"


def _stage_table(stages: list[dict]) -> Table:
    table = Table(title="stages")
    table.add_column("stage", no_wrap=True)
    for col in ("params", "MACs", "bytes", "latency b1 ms", "val error", "seconds"):
        table.add_column(col, justify="right")
    if stages:
        b = stages[0]["before"]
        table.add_row("start", f"{b.get('params', 0):,}", f"{b.get('macs', 0):,}", f"{b.get('bytes', 0):,}",
                      _num(b.get("latency_ms_b1")), _pct(b.get("val_error")), "")
    for s in stages:
        a = s["after"]
        table.add_row(f"{s['index']}:{s['kind']}", f"{a.get('params', 0):,}", f"{a.get('macs', 0):,}",
                      f"{a.get('bytes', 0):,}", _num(a.get("latency_ms_b1")), _pct(a.get("val_error")), f"{s['seconds']:.1f}")
    return table


def _num(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def run_compress(recipe_name: str, run_dir: Optional[Path], latency: bool,
                 tensorboard: Optional[Path] = None, mlflow: Optional[str] = None,
                 fork_from: Optional[Path] = None, reuse: int = 0) -> Path:
    from netrazor.commands.progress import progress_renderer
    from netrazor.pipeline import compress, fork_run, load_recipe, write_report
    from netrazor.pipeline.runner import default_run_dir
    from netrazor.train.tracking import tracking_callbacks

    recipe = load_recipe(recipe_name)
    if fork_from is not None:
        run_dir = fork_run(fork_from, run_dir or default_run_dir(recipe), recipe, reuse)
        console.print(f"reusing stages 0-{reuse - 1} of {fork_from}")
    # built before any work so a missing package fails at once (ConfigError with the pip hint)
    loggers = tracking_callbacks(tensorboard=tensorboard, mlflow=mlflow, run_name=recipe.name)
    console.print(f"[bold]recipe[/] {recipe.name}: {recipe.description}")
    with progress_renderer(console) as progress:
        result = compress(recipe, run_dir, progress=progress, latency=latency, loggers=loggers,
                          on_stage=lambda e: console.print(f"  stage {e['index']} {e['kind']} done in {e['seconds']:.1f} s"))
    console.print(_stage_table(result.stages))
    s = result.summary
    if s.get("bytes") and s["dense"].get("bytes"):
        console.print(f"compressed from {s['dense']['bytes']:,} bytes to {s['bytes']:,} bytes "
                      f"({s['dense']['bytes'] / s['bytes']:.1f}×); artifact {s['artifact']}")
    console.print(f"test error of the final model: {100 * s['test_error']:.2f} %")
    html_path, md_path = write_report(result.run_dir)
    console.print(f"report: {html_path}  (markdown: {md_path})")
    return html_path


def register(app: typer.Typer) -> None:
    @app.command()
    def compress(
        recipe: str = typer.Argument(..., help="A recipe YAML path, or the name of a shipped recipe (see `netrazor recipes`)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where the run lives; re-running resumes it. Default runs/compress-<recipe>-seed<seed>."),
        latency: bool = typer.Option(True, "--latency/--no-latency", help="Measure CPU latency after each stage."),
        tensorboard: Optional[Path] = typer.Option(None, "--tensorboard",
                                                   help="Also log every stage's epochs and measured numbers to "
                                                        "TensorBoard in this folder (needs `pip install tensorboard`)."),
        mlflow: Optional[str] = typer.Option(None, "--mlflow",
                                             help="Also log them to MLflow at this tracking URI, e.g. "
                                                  "sqlite:///mlflow.db (needs `pip install mlflow`)."),
        fork_from: Optional[Path] = typer.Option(None, "--fork-from",
                                                 help="Start from a finished (or partial) run of a recipe that shares "
                                                      "this one's first stages: they are copied, not recomputed. "
                                                      "Needs --reuse."),
        reuse: int = typer.Option(0, "--reuse", help="With --fork-from: how many leading stages to reuse; each must "
                                                     "be identical in both recipes (checked)."),
    ) -> None:
        """Run a recipe end to end and hand back the smaller model, the .nrz artifact and a report.

        An interrupted run resumes from its last completed stage (and the last checkpoint inside it)
        when you run the same command again. With --tensorboard/--mlflow, epochs are logged as
        `stage-<i>-<kind>/<metric>` on one pipeline-wide step axis and each stage's params, MACs,
        bytes, val error and latency as `stage/<metric>` (step = stage number).

        To try another setting of the later stages (e.g. other evolution targets), write a variant
        recipe and fork: `netrazor compress variant.yaml --fork-from runs/compress-<recipe>-seed0 --reuse 1`
        copies stage 0 and runs the rest.
        """
        if (fork_from is None) != (reuse == 0):
            raise typer.BadParameter("--fork-from and --reuse go together: --fork-from RUN --reuse N.")
        run_compress(recipe, run_dir, latency, tensorboard, mlflow, fork_from, reuse)

    @app.command()
    def report(
        run: Path = typer.Argument(..., help="A run folder written by `netrazor compress`."),
        screenshot: Optional[Path] = typer.Option(None, "--screenshot",
                                                  help="Also save a PNG of the rendered page here (needs Chromium)."),
    ) -> None:
        """Write report.html (self-contained) and report.md for a compress run."""
        from netrazor.pipeline import write_report

        html_path, md_path = write_report(run)
        console.print(f"report: {html_path}  (markdown: {md_path})")
        if screenshot is not None:
            from netrazor.pipeline.screenshot import screenshot as take_screenshot

            console.print(f"screenshot: {take_screenshot(html_path, screenshot)}")

    @app.command()
    def recipes() -> None:
        """List the shipped recipes and what each is expected to give."""
        from netrazor.pipeline import load_recipe, shipped_recipes

        table = Table(title="shipped recipes")
        table.add_column("name")
        table.add_column("stages")
        table.add_column("expected")
        for name in shipped_recipes():
            r = load_recipe(name)
            table.add_row(name, " → ".join(s.kind for s in r.stages), ", ".join(f"{k}={v}" for k, v in r.expected.items()))
        console.print(table)

    @app.command()
    def demo(
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Where the demo run lives (re-running resumes it)."),
    ) -> None:
        """Fetch MNIST, then train, compress, quantise and pack LeNet-5 (the embedded default recipe)."""
        from netrazor.data import load_data

        with console.status("fetching MNIST (first run only)…"):
            load_data("mnist", fetch=True)
        run_compress(DEMO_RECIPE, run_dir, latency=True)

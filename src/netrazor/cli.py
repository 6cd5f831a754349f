"""The command line: argument parsing and rendering only; every command calls the library.

Each area registers its commands from ``netrazor.commands.<area>`` through a
``register(app)`` function, so modules do not edit one shared file. A
``NetrazorError`` is printed as one clear line (no traceback) with exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from netrazor.errors import NetrazorError

# Areas whose commands appear on the CLI; a missing module is skipped so the CLI
# works while an area is still being built.
COMMAND_MODULES = (
    "netrazor.commands.data",
    "netrazor.commands.train",
    "netrazor.commands.measure",
    "netrazor.commands.runs",
    "netrazor.commands.surgery",
    "netrazor.commands.prune",
    "netrazor.commands.ebcle",
    "netrazor.commands.codec",
    "netrazor.commands.pipeline",
)

console = Console(stderr=True)

app = typer.Typer(
    name="netrazor",
    help="Cut neural networks down to the depth, width, sparsity and bits their task needs — and measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``netrazor`` console script."""
    code = _run(argv)
    dist = sys.modules.get("torch.distributed")  # never imported -> never distributed (keeps the CLI light)
    if dist is not None and dist.is_available() and dist.is_initialized():  # a torchrun worker: skip the racy finalization
        from netrazor.train.distributed import exit_process

        exit_process(code)
    return code


def _run(argv: list[str] | None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except NetrazorError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the last checkpoint is kept; re-run with --resume to continue.")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:
        # Usage errors (click's, or typer's own since typer 0.2x): they know how to show themselves.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

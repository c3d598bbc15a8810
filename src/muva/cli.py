"""The ``muva`` command line (typer + rich).

Each concern keeps its commands beside its code, in ``muva/<concern>/commands.py``,
exposing ``register(app)``.  Command modules import nothing heavy at module level
(torch, open_clip, transformers, faiss, onnx are imported inside the commands), so
``muva --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from muva import __version__

# Command modules, in the order their commands appear in ``muva --help``.
COMMAND_MODULES = [
    "muva.data.commands",
    "muva.engine.commands",
    "muva.data.synth.commands",
    "muva.inference.commands",
    "muva.viz.commands",
    "muva.grounding.commands",
    "muva.evaluation.commands",
    "muva.models.commands",
]

app = typer.Typer(
    name="muva",
    help="Domain-generalised person re-identification with CLIP (MUVA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"muva {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Domain-generalised person re-identification with CLIP (MUVA)."""
    from muva.utils.memory import retain_freed_memory, tuning_enabled

    if tuning_enabled():  # faster CPU tensor work: no page-faulting of every batch (muva.utils.memory)
        retain_freed_memory()


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print an error in red to stderr and return the Exit to raise."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="muva")
    except SystemExit as exc:  # typer exits through SystemExit; keep its code
        if exc.code not in (None, 0):
            sys.exit(exc.code)

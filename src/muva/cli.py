"""The ``muva`` command line (typer + rich).

Each concern keeps its commands beside its code, in ``muva/<concern>/commands.py``,
exposing ``register(app)``.  Command modules import nothing heavy at module level
(torch, open_clip, transformers, faiss, onnx are imported inside the commands), so
``muva --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional

import typer

from muva._version import __version__
from muva.utils.console import is_secondary_rank as _is_secondary_rank

# Command modules, in the order their commands appear in ``muva --help``.
COMMAND_MODULES = [
    "muva.data.commands",
    "muva.engine.commands",
    "muva.data.synth.commands",
    "muva.inference.commands",
    "muva.viz.commands",
    "muva.serve.commands",
    "muva.grounding.commands",
    "muva.evaluation.commands",
    "muva.models.commands",
    "muva.engine.doctor",
    "muva.engine.sweep.commands",
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
    plugins: Optional[List[str]] = typer.Option(None, "--import", "-I", metavar="MODULE", help="Import a plugin module (name or .py file) that registers datasets, experts, ...; repeatable. Also $MUVA_PLUGINS and the 'muva.plugins' entry points (docs/extending.md)."),
) -> None:
    """Domain-generalised person re-identification with CLIP (MUVA)."""
    from muva.utils.memory import retain_freed_memory, tuning_enabled
    from muva.utils.plugins import load_plugins

    load_plugins(plugins or [])

    if tuning_enabled():  # faster CPU tensor work: no page-faulting of every batch (muva.utils.memory)
        retain_freed_memory()


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _translating(fn):
    """``fn`` with muva errors turned into their message and exit code (the one place that does it)."""
    import functools

    @functools.wraps(fn)  # typer reads the parameters through __wrapped__
    def command(*args, **kwargs):
        from muva.utils.errors import MuvaError

        try:
            return fn(*args, **kwargs)
        except MuvaError as exc:
            raise typer.Exit(report_error(exc)) from None

    return command


def _translate_all(group: typer.Typer) -> None:
    for info in group.registered_commands:
        if info.callback is not None and not hasattr(info.callback, "__wrapped__"):
            info.callback = _translating(info.callback)
    for sub in group.registered_groups:
        _translate_all(sub.typer_instance)


_translate_all(app)


def report_error(exc: BaseException) -> int:
    """Print the one-line message of an error reaching the command line; return its exit code.

    Only muva errors (:class:`muva.utils.errors.MuvaError`) and Ctrl-C are turned into
    messages; anything else is a bug and propagates with its traceback.
    """
    from rich.console import Console
    from rich.markup import escape

    from muva.utils.errors import EXIT_INTERRUPTED, MuvaError

    if isinstance(exc, KeyboardInterrupt):
        message, code = ("interrupted (Ctrl-C). What was written so far stays: commands that resume (train --resume, "
                         "extract, ground run) continue from it when run again"), EXIT_INTERRUPTED
    elif isinstance(exc, MuvaError):
        message, code = str(exc), exc.exit_code
    else:
        raise exc
    if not _is_secondary_rank():
        label = "[bold yellow]stopped:[/]" if code == EXIT_INTERRUPTED else "[bold red]error:[/]"
        Console(stderr=True).print(f"{label} {escape(message)}", highlight=False)
    _REPORTED.append(code)
    return code


_REPORTED: list[int] = []  # codes already reported in this process (a 130 said once, not twice)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every muva error becomes one message and an exit code here."""
    try:
        code = app(args=argv, prog_name="muva", standalone_mode=False)
        if code == 130 and not _REPORTED:  # typer returns a bare Ctrl-C inside a command as exit code 130: say so
            code = report_error(KeyboardInterrupt())
    except typer.Abort as exc:  # Ctrl-C inside the command-line parsing
        code = report_error(KeyboardInterrupt()) if isinstance(exc.__context__, KeyboardInterrupt) else 1
    except typer.TyperException as exc:  # usage errors: typer's own message and exit code (2)
        exc.show()
        code = getattr(exc, "exit_code", 2)
    except typer.Exit as exc:  # typer turns Ctrl-C into Exit(130): say so instead of exiting silently
        code = report_error(exc.__cause__) if isinstance(exc.__cause__, KeyboardInterrupt) else exc.exit_code
    except SystemExit as exc:
        code = exc.code
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - report_error re-raises what is not ours
        code = report_error(exc)
    if code not in (None, 0):
        sys.exit(code)

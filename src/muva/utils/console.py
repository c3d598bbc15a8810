"""Command-line messages shared by every command module (lowest layer: any package may use it).

:func:`fail` prints one red ``error:`` line on stderr and returns the ``typer.Exit`` to
raise.  Under torchrun only rank 0 speaks (:func:`is_secondary_rank`), so a message is
printed once per run, not once per process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typer is imported when a message is printed, not when this module is
    import typer

__all__ = ["fail", "is_secondary_rank"]


def is_secondary_rank() -> bool:
    """True in a torchrun process other than rank 0 (those exit with the same code, silently)."""
    try:
        return int(os.environ.get("RANK", "0") or 0) > 0
    except ValueError:
        return False


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print an error in red to stderr and return the Exit to raise."""
    import typer
    from rich.console import Console
    from rich.markup import escape

    if not is_secondary_rank():  # under torchrun the message is printed once, by rank 0
        Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)

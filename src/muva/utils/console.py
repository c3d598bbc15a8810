"""Who speaks on the command line under torchrun (lowest layer: any package may use it).

Errors are :class:`muva.utils.errors.MuvaError` subclasses, raised like any exception and
reported once, by :func:`muva.cli.main`.  Under torchrun only rank 0 prints them
(:func:`is_secondary_rank`), so a message is printed once per run, not once per process.
"""

from __future__ import annotations

import os

__all__ = ["is_secondary_rank"]


def is_secondary_rank() -> bool:
    """True in a torchrun process other than rank 0 (those exit with the same code, silently)."""
    try:
        return int(os.environ.get("RANK", "0") or 0) > 0
    except ValueError:
        return False

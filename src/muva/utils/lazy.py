"""Lazy package exports (PEP 562): a public name is imported from its module on first use.

Packages re-export their API this way so that ``import muva.<package>`` (and with it
``muva --help``) does not pay for NumPy, torch or SQLite until a name is used::

    __getattr__, __dir__ = lazy_exports(__name__, {"generate": ".generate", "SynthConfig": ".config"})

Module paths starting with ``.`` are relative to the package.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``names`` map each public name to its module."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(package + module if module.startswith(".") else module), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__

"""Loading a user's extension modules, so that a plugin needs no fork of muva.

A plugin is an ordinary Python module that registers what it adds when imported — a
dataset parser in ``muva.data.datasets.DATASETS``, a grounding expert in
``muva.grounding.experts.EXPERTS``, ... (see ``docs/extending.md``).  muva imports, in this
order:

* every ``muva --import MODULE`` (repeatable; a module name on ``sys.path`` or a ``.py`` file);
* the comma-separated modules of ``$MUVA_PLUGINS``;
* the entry points of the group ``muva.plugins`` of installed packages
  (``[project.entry-points."muva.plugins"] name = "package.module"`` in their pyproject).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable

from muva.utils.errors import MuvaError

__all__ = ["PluginError", "load_plugins", "ENTRY_POINT_GROUP", "ENV_VAR"]

ENTRY_POINT_GROUP = "muva.plugins"
ENV_VAR = "MUVA_PLUGINS"


class PluginError(MuvaError):
    """A plugin module that cannot be imported (the message names it and the cause)."""


def _import(spec: str):
    path = Path(spec).expanduser()
    if spec.endswith(".py"):
        if not path.is_file():
            raise PluginError(f"plugin file {spec} does not exist")
        name = f"muva_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def load_plugins(modules: Iterable[str] = (), *, environment: bool = True, entry_points: bool = True) -> list[str]:
    """Import the plugin modules (see module doc); returns their names in the order loaded."""
    wanted = [m for m in modules if m]
    if environment:
        wanted += [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    loaded: list[str] = []
    for spec in dict.fromkeys(wanted):
        try:
            _import(spec)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure inside the user's module
            raise PluginError(f"cannot import plugin {spec!r}: {type(exc).__name__}: {exc}") from exc
        loaded.append(spec)
    if entry_points:
        from importlib.metadata import entry_points as found

        for ep in found(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"cannot load the muva plugin {ep.name!r} ({ep.value}) of an installed package: "
                                  f"{type(exc).__name__}: {exc}") from exc
            loaded.append(ep.value)
    return loaded

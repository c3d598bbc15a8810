"""Name → constructor registries (datasets, models, losses, grounding experts, ...).

A registry maps a lower-case name (plus aliases) to a plain Python object, usually a
class or factory function.  Configs name components by string; the registry resolves
them at the edge, so the components themselves stay free of config plumbing.

    >>> from muva.registry import Registry
    >>> COLORS = Registry("color")
    >>> @COLORS.register("red", aliases=("rouge",))
    ... def red():
    ...     return (255, 0, 0)
    >>> COLORS.get("Rouge")()
    (255, 0, 0)
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, TypeVar

from muva.utils.errors import MuvaError

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(MuvaError, KeyError):
    """A name that is not registered (the message lists the close matches and every entry)."""


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class Registry:
    """A named mapping of components with helpful errors for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] | list[str] = ()) -> Callable[[F], F]:
        def deco(obj: F) -> F:
            self.add(name, obj, aliases=aliases)
            return obj

        return deco

    def add(self, name: str, obj: Any, *, aliases: tuple[str, ...] | list[str] = ()) -> None:
        key = _norm(name)
        if key in self._items or key in self._aliases:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._items[key] = obj
        for alias in aliases:
            a = _norm(alias)
            if a in self._items or a in self._aliases:
                raise KeyError(f"{self.kind} alias {alias!r} is already registered")
            self._aliases[a] = key

    def canonical(self, name: str) -> str:
        key = _norm(name)
        key = self._aliases.get(key, key)
        if key not in self._items:
            choices = sorted(self._items)
            close = difflib.get_close_matches(key, choices + sorted(self._aliases), n=3, cutoff=0.5)
            names = dict.fromkeys(self._aliases.get(c, c) for c in close)  # an entry once, however many aliases matched
            hint = f" Did you mean {', '.join(repr(n) for n in names)}?" if names else ""
            raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(choices)}")
        return key

    def get(self, name: str) -> Any:
        return self._items[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _norm(name)
        return key in self._items or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def aliases_of(self, name: str) -> list[str]:
        key = self.canonical(name)
        return sorted(a for a, k in self._aliases.items() if k == key)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

"""The error of the typed-config loader (a leaf, so that every part of :mod:`muva.config` can raise it)."""

from __future__ import annotations

from muva.utils.errors import MuvaError

__all__ = ["ConfigError"]


class ConfigError(MuvaError, ValueError):
    """A configuration file or override that does not fit the typed schema."""


ConfigError.__module__ = "muva.config"  # its public name (muva.config re-exports it)

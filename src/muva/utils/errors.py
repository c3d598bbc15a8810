"""The one exception family of muva.

Every error a user can cause (a wrong path, a dataset layout that does not parse, a corrupt
model file, a missing grounding cache, weights that cannot be obtained offline, ...) is a
:class:`MuvaError`.  Each concern keeps its own subclass beside its code (``DatasetError``
in ``muva.data``, ``ModelFileError`` in ``muva.models``, ...), and the command line turns any
of them into one red ``error:`` line and a non-zero exit code, once, at its edge
(:func:`muva.cli.main`) — a traceback shown to a user is a bug.

Subclasses keep a built-in base (``ValueError``, ``RuntimeError``, ``FileNotFoundError``)
where library callers may already catch that.
"""

from __future__ import annotations

__all__ = ["MuvaError", "UsageError", "RunInterrupted", "EXIT_USAGE", "EXIT_FAILURE", "EXIT_INTERRUPTED"]

EXIT_FAILURE = 1  # the work ran and failed (e.g. a numeric check did not hold)
EXIT_USAGE = 2  # bad input: config, paths, data, model files
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM (after saving what can be resumed)


class MuvaError(Exception):
    """Base of every user-facing muva error; ``str(exc)`` is the whole message shown."""

    exit_code: int = EXIT_USAGE

    def __str__(self) -> str:  # KeyError-style quoting (repr of the message) never reaches users
        if isinstance(self, KeyError) and len(self.args) == 1 and isinstance(self.args[0], str):
            return self.args[0]
        return super().__str__()


class RunInterrupted(MuvaError):
    """A long job stopped by SIGINT/SIGTERM after saving its state; the message says how to resume."""

    exit_code = EXIT_INTERRUPTED


class UsageError(MuvaError, ValueError):
    """A command-line value that cannot be used (a bad flag value, flags that exclude each other).

    Command modules raise it like any other error; the command line reports it once."""

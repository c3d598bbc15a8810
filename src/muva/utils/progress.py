"""Progress display with ETA for long work (rich), quiet when not on a terminal if asked."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def make_progress(transient: bool = False, disable: bool = False):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("•"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=transient,
        disable=disable,
    )


def track(iterable: Iterable[T], description: str = "working", total: int | None = None, disable: bool = False) -> Iterator[T]:
    """Iterate with a progress bar showing count, elapsed time and ETA."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with make_progress(disable=disable) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


@contextmanager
def progress_bar(description: str, total: int | None, disable: bool = False):
    """Context manager yielding ``advance(n=1)`` for loops that are not simple iterables."""
    with make_progress(disable=disable) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)

"""Checking image files before using them: one threaded checker for `muva data check
--verify-images` and for training's up-front scan (``data.check_images``)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from PIL import Image

from muva.utils.progress import progress_bar

__all__ = ["image_problem", "find_bad_images"]


def image_problem(path: str, *, decode: bool = True) -> str | None:
    """Why ``path`` is not a usable image, or ``None`` when it is.

    ``decode=True`` decodes every pixel (catches truncated files); ``False`` only checks
    the header and structure (``PIL.Image.verify``), which is much faster.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as im:
            if decode:
                im.load()
            else:
                im.verify()
            if im.width == 0 or im.height == 0:
                return "image of size 0"
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # PIL raises many types for broken files
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def find_bad_images(paths: Iterable[str], *, workers: int = 4, decode: bool = True, progress: bool = False,
                    description: str = "checking images") -> list[tuple[str, str]]:
    """``[(path, reason)]`` of the unusable files among ``paths`` (duplicates checked once, in order)."""
    unique = list(dict.fromkeys(paths))
    bad: list[tuple[str, str]] = []
    check = lambda p: image_problem(p, decode=decode)  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, progress_bar(description, len(unique), disable=not progress) as advance:
        for path, reason in zip(unique, pool.map(check, unique, chunksize=64)):
            if reason:
                bad.append((path, reason))
            advance()
    return bad

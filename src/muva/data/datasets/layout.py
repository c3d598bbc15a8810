"""Finding a dataset's folder among the nestings people actually have, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from muva.data.records import DatasetError


def _listing(folder: Path, limit: int = 12) -> str:
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    entries = sorted(folder.iterdir())
    if not entries:
        return f"{folder} is empty"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f", … ({len(entries) - limit} more)" if len(entries) > limit else ""
    return f"found in {folder}: {', '.join(names)}{more}"


def locate(root: Path, label: str, required: Sequence[str], nestings: Sequence[str]) -> Path:
    """Return the first of ``root/<nesting>`` that holds every path in ``required``.

    ``nestings`` are relative folder names tried in order ("" = ``root`` itself); a
    ``*`` component matches any single folder.  When none matches, the error names
    the expected entries, every place tried, and what was actually found.
    """
    root = Path(root)
    tried: list[Path] = []
    for nest in nestings:
        candidates = sorted(root.glob(nest)) if "*" in nest else [root / nest if nest else root]
        for cand in candidates:
            tried.append(cand)
            if cand.is_dir() and all((cand / r).exists() for r in required):
                return cand
    # Not found: report the closest candidate (the one with most of the required entries).
    best = max(tried, key=lambda c: sum((c / r).exists() for r in required), default=root)
    missing = [r for r in required if not (best / r).exists()]
    places = ", ".join(str(t) for t in dict.fromkeys(tried))
    msg = (
        f"{label}: expected {', '.join(r + '/' if '.' not in r else r for r in required)} "
        f"under one of: {places}. "
    )
    if best.exists() and missing and len(missing) < len(required):
        msg += f"Closest match {best} lacks {', '.join(missing)}; "
    msg += _listing(best if best.exists() else root) + "."
    raise DatasetError(msg)

"""Finding a dataset's folder among the nestings people actually have, with clear errors.

Archives unpack in many ways: ``ROOT/Market-1501-v15.09.15/``, ``ROOT/market1501/``,
``ROOT/market1501/Market-1501-v15.09.15/`` or the split folders directly in ``ROOT``.
:func:`nestings` builds that list from a dataset's known folder names and :func:`locate`
returns the first one holding the expected entries, or raises one :class:`DatasetError`
that names the expected entries, where they were looked for, and what was found instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from muva.data.records import DatasetError, is_image_file


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


def nestings(*names: str) -> tuple[str, ...]:
    """Relative folders to try for a dataset known under ``names``.

    ``""`` (the root itself) first, then each name, then each name inside each name
    (``market1501/Market-1501-v15.09.15``, ``DukeMTMC-reID/DukeMTMC-reID`` from zips that
    repeat their folder), duplicates removed, order kept.
    """
    out = ["", *names]
    out += [f"{a}/{b}" for a in names for b in names]
    return tuple(dict.fromkeys(out))


def _is_file_entry(entry: str) -> bool:
    """Required entries with a suffix (``list_train.txt``, ``*.mat``) are files, the others folders."""
    return "." in Path(entry).name


def _fmt_required(required: Sequence[str]) -> str:
    return ", ".join(r if _is_file_entry(r) else r + "/" for r in required)


def _wrong_kind(cand: Path, required: Sequence[str]) -> list[Path]:
    """Entries of ``cand`` that exist but are a file where a folder is expected (or the reverse)."""
    out = []
    for r in required:
        p = cand / r
        if p.exists() and (p.is_dir() if _is_file_entry(r) else not p.is_dir()):
            out.append(p)
    return out


def missing_root_message(root: str | Path) -> str:
    """``data root ./data does not exist (/abs/data); set --root DIR or $MUVA_DATA``, with where the root came from."""
    root = Path(root)
    shown = str(root)
    if not root.is_absolute() and not shown.startswith((".", "~")):
        shown = f".{os.sep}{shown}"
    resolved = root.expanduser().absolute()
    env = os.environ.get("MUVA_DATA")
    if env and Path(env).expanduser() == root:
        origin = "from $MUVA_DATA"
    elif root == Path("data") and not env:
        origin = "the default when neither --root nor $MUVA_DATA is set"
    else:
        origin = "given as --root"
    where = f"{resolved}, {origin}" if str(resolved) != shown else origin
    return f"data root {shown} does not exist ({where}); set --root DIR or $MUVA_DATA to the folder that holds the datasets"


def _fmt_nestings(nestings: Sequence[str], limit: int = 6) -> str:
    subs = [n + "/" for n in nestings if n]
    if len(subs) <= limit:
        return ", ".join(subs)
    return ", ".join(subs[:limit]) + f", … ({len(subs) - limit} more combinations of these names)"


def locate(root: Path, label: str, required: Sequence[str], nestings: Sequence[str]) -> Path:
    """Return the first of ``root/<nesting>`` that holds every path in ``required``.

    ``nestings`` are relative folder names tried in order (``""`` = ``root`` itself); a
    ``*`` component matches any single folder.  When none matches, the error names
    the expected entries, every place tried, and what was actually found.
    """
    root = Path(root)
    if not root.exists():
        where = f" or one of {_fmt_nestings(nestings)}" if any(nestings) else ""
        raise DatasetError(f"{label}: {missing_root_message(root)}; {label} is looked for there as {_fmt_required(required)}{where}.")
    if not root.is_dir():
        raise DatasetError(f"{label}: {root} is a file; expected the folder that holds {_fmt_required(required)}.")
    tried: list[Path] = []
    wrong: list[Path] = []
    for nest in nestings:
        candidates = sorted(root.glob(nest)) if "*" in nest else [root / nest if nest else root]
        for cand in candidates:
            tried.append(cand)
            if cand.is_dir() and all((cand / r).exists() for r in required):
                bad = _wrong_kind(cand, required)
                if not bad:
                    return cand
                wrong = wrong or bad
    if wrong:
        p = wrong[0]
        kind = "a folder" if p.is_dir() else "a file"
        expected = "a file" if p.is_dir() else "a folder (of images or sub-folders)"
        raise DatasetError(
            f"{label}: {p} is {kind}, but {expected} is expected there; "
            f"the dataset folder {p.parent} must hold {_fmt_required(required)}."
        )
    # Not found: report the closest candidate (the one with most of the required entries).
    existing = [t for t in dict.fromkeys(tried) if t.is_dir()]
    best = max(existing, key=lambda c: sum((c / r).exists() for r in required), default=root)
    if not any((best / r).exists() for r in required):
        # Nothing holds any expected entry: show the deepest existing folder on the way
        # (e.g. ``cuhk03-np/`` holding ``labeled/`` when ``detected/`` was asked for).
        ancestors = [a for t in tried for a in (t, *t.parents) if a.is_dir() and root in (a, *a.parents)]
        best = max(ancestors, key=lambda a: len(a.parts), default=root)
    missing = [r for r in required if not (best / r).exists()]
    msg = f"{label} not found: expected {_fmt_required(required)} in {root}"
    if any(nestings):
        msg += f" or in one of its sub-folders {_fmt_nestings(nestings)}"
    msg += ". "
    if best != root and missing and len(missing) < len(required):
        msg += f"Closest match {best} lacks {_fmt_required(missing)}; "
    elif missing and len(missing) < len(required):
        msg += f"{root} has only some of them (missing {_fmt_required(missing)}); "
    msg += _listing(best) + "."
    raise DatasetError(msg)


def image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` sorted by path (hidden and non-image files ignored).

    Non-recursive by default: stray sub-folders inside a split folder are not read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise DatasetError(f"expected a folder of images at {folder}, but it {what}")
    out: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for entry in it:
                if entry.is_dir():
                    if recursive and not entry.name.startswith("."):
                        stack.append(Path(entry.path))
                elif entry.is_file() and is_image_file(entry.name):
                    out.append(Path(entry.path))
    out.sort()
    return out


def require_dir(path: Path, label: str, hint: str = "") -> Path:
    """``path`` when it is a folder, else a :class:`DatasetError` listing its parent."""
    if not Path(path).is_dir():
        raise DatasetError(f"{label}: expected folder {path}{hint}; {_listing(Path(path).parent)}.")
    return Path(path)


def require_file(path: Path, label: str, hint: str = "") -> Path:
    """``path`` when it is a file, else a :class:`DatasetError` listing its parent."""
    if not Path(path).is_file():
        raise DatasetError(f"{label}: expected file {path}{hint}; {_listing(Path(path).parent)}.")
    return Path(path)


def first_existing(folder: Path, names: Iterable[str]) -> Path | None:
    """The first ``folder/name`` that exists, or None."""
    for name in names:
        if (Path(folder) / name).exists():
            return Path(folder) / name
    return None

"""A user's own dataset: a folder plus a file-name pattern, or a CSV.

**Folder + pattern** (``open_dataset("custom", path=FOLDER, pattern=REGEX)``): split
folders are taken from ``FOLDER`` — ``train/`` or ``bounding_box_train/``, ``query/``,
``gallery/`` or ``bounding_box_test/``; when none exists every image under ``FOLDER``
goes to ``train``.  Images are searched recursively; ``REGEX`` (Python ``re.search``) is
applied to each image's path relative to its split folder, with ``/`` separators, and
must have a named group ``pid`` and may have ``camid``.  Images the pattern does not
match are skipped and listed in ``info["skipped"]``.

**CSV** (``open_dataset("custom", csv=FILE)``): rows ``path,identity[,camera][,split]``
(an optional header row naming these columns is recognised); ``path`` relative to the
CSV's folder or absolute; ``split`` is ``train`` (default), ``query`` or ``gallery``.

Identities: integers are kept (``-1`` = junk, dropped; ``0`` = distractor, dropped from
``train``); any other text is numbered 1..N in sorted order (``info["identity_names"]``).
Cameras: any values, numbered 0..K-1 in sorted order.  **Without cameras** every record
gets ``camid = -1`` (unknown): evaluation then cannot drop same-camera matches, so for
each query it removes only the identical image (same file) from the gallery and every
other image of the identity counts as a true match.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import image_files
from muva.data.records import (
    DISTRACTOR_PID,
    JUNK_PID,
    SPLITS,
    UNKNOWN_CAMERA,
    DatasetError,
    ImageRecord,
    ReIDDataset,
)

SPLIT_FOLDERS = {
    "train": ("train", "bounding_box_train"),
    "query": ("query",),
    "gallery": ("gallery", "bounding_box_test"),
}
_HEADER_WORDS = {"path", "image", "file", "filename", "identity", "pid", "id", "camera", "camid", "cam", "split"}


def _number_ids(raw: list[tuple[str, str, str | None, str, str]]) -> tuple[list[ImageRecord], dict]:
    """raw rows (path, identity, camera, split, dataset) → records with numeric ids and cameras."""
    ids = [r[1] for r in raw]
    info: dict = {}
    try:
        pid_of = {v: int(v) for v in ids}
    except ValueError:
        names = sorted(set(ids))
        pid_of = {v: i + 1 for i, v in enumerate(names)}
        info["identity_names"] = {str(i + 1): v for i, v in enumerate(names)}
    cams = sorted({r[2] for r in raw if r[2] not in (None, "")}, key=lambda c: (len(c), c) if c.isdigit() else (0, c))
    cam_of = {c: i for i, c in enumerate(cams)}
    info["has_cameras"] = bool(cams)
    records = []
    for path, pid_raw, cam_raw, split, name in raw:
        pid = pid_of[pid_raw]
        if pid == JUNK_PID or (split == "train" and pid == DISTRACTOR_PID):
            continue
        cam = cam_of.get(cam_raw, UNKNOWN_CAMERA) if cam_raw not in (None, "") else UNKNOWN_CAMERA
        records.append((split, ImageRecord(path, pid, cam, name)))
    return records, info


def _build(name: str, root: Path, rows, info: dict) -> ReIDDataset:
    records, extra = _number_ids(rows)
    ds = ReIDDataset(name, root, info={**info, **extra})
    for split, rec in records:
        ds.split(split).append(rec)
    return ds


def read_pattern_folder(folder: Path, pattern: str, name: str = "custom") -> ReIDDataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"custom dataset: folder {folder} does not exist")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"custom dataset: invalid pattern {pattern!r}: {exc}") from None
    if "pid" not in regex.groupindex:
        raise DatasetError(f"custom dataset: pattern {pattern!r} needs a named group (?P<pid>…); (?P<camid>…) is optional")
    split_dirs = {s: next((folder / n for n in names if (folder / n).is_dir()), None) for s, names in SPLIT_FOLDERS.items()}
    if not any(split_dirs.values()):
        split_dirs = {"train": folder, "query": None, "gallery": None}
    rows, skipped = [], []
    for split, d in split_dirs.items():
        if d is None:
            continue
        for p in image_files(d, recursive=True):
            m = regex.search(p.relative_to(d).as_posix())
            if not m or m.group("pid") is None:
                skipped.append(str(p))
                continue
            cam = m.group("camid") if "camid" in regex.groupindex else None
            rows.append((str(p), m.group("pid"), cam, split, name))
    if not rows:
        examples = ", ".join(Path(s).name for s in skipped[:3]) or "no image files at all"
        raise DatasetError(f"custom dataset: pattern {pattern!r} matched no image in {folder} (examples: {examples})")
    info = {"source": "pattern", "pattern": pattern, "splits_from": {s: str(d) for s, d in split_dirs.items() if d}}
    if skipped:
        info["skipped"] = skipped
    return _build(name, folder, rows, info)


def read_csv(csv_file: Path, name: str = "custom") -> ReIDDataset:
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise DatasetError(f"custom dataset: CSV file {csv_file} does not exist")
    base = csv_file.parent
    rows = []
    with open(csv_file, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        columns = ["path", "identity", "camera", "split"]
        for lineno, row in enumerate(reader, 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and {c.lower() for c in row} <= _HEADER_WORDS:
                alias = {"image": "path", "file": "path", "filename": "path", "pid": "identity", "id": "identity",
                         "camid": "camera", "cam": "camera"}
                columns = [alias.get(c.lower(), c.lower()) for c in row]
                continue
            values = dict(zip(columns, row))
            if len(row) < 2 or not values.get("path") or values.get("identity", "") == "":
                raise DatasetError(f"{csv_file}:{lineno}: expected 'path,identity[,camera][,split]', got {','.join(row)!r}")
            split = values.get("split") or "train"
            if split not in SPLITS:
                raise DatasetError(f"{csv_file}:{lineno}: split {split!r} is not one of {', '.join(SPLITS)}")
            path = Path(values["path"])
            rows.append((str(path if path.is_absolute() else base / path), values["identity"], values.get("camera"), split, name))
    if not rows:
        raise DatasetError(f"custom dataset: {csv_file} holds no rows")
    return _build(name, base, rows, {"source": "csv", "csv": str(csv_file)})


@register_dataset("custom", aliases=("folder",))
def custom(
    root: Path,
    path: str | Path | None = None,
    pattern: str | None = None,
    csv: str | Path | None = None,
    name: str = "custom",
) -> ReIDDataset:
    """Your own data: ``path`` (default: the data root) + ``pattern``, or ``csv``; see the module doc."""
    if csv is not None:
        return read_csv(Path(csv), name)
    if pattern is None:
        raise DatasetError(
            "custom dataset: give pattern= (a regex with (?P<pid>…) and optionally (?P<camid>…), "
            r"e.g. '^(?P<pid>\d+)_c(?P<camid>\d+)') or csv= (rows path,identity[,camera][,split])"
        )
    return read_pattern_folder(Path(path) if path is not None else Path(root), pattern, name)

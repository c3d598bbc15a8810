"""Market-1501 and every dataset distributed in its folder layout.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` holding files named
``PPPP_cC...jpg`` (identity ``PPPP``, 1-based camera ``C``).  ``-1`` identities are junk
and dropped; ``0`` (distractors) stays in the gallery and is dropped from ``train``.

Files that are not images (``Thumbs.db``, ``.txt``), hidden files (``._0002_c1….jpg``
macOS forks) and sub-folders inside a split folder are ignored.  Images whose names do
not follow the pattern (a stray ``readme.jpg``) are skipped and listed in
``dataset.info["skipped"]`` so that ``muva data check`` can show them.
"""

from __future__ import annotations

import re
from pathlib import Path

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import image_files, locate, nestings
from muva.data.datasets.usable import MARKET_NAMING, require_usable
from muva.data.records import DISTRACTOR_PID, JUNK_PID, DatasetError, ImageRecord, ReIDDataset

MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


def parse_market_filename(name: str) -> tuple[int, int]:
    """``'0002_c1s1_000451_03.jpg'`` → ``(2, 0)`` (identity, 0-based camera)."""
    m = _MARKET_NAME.match(Path(name).name)
    if not m:
        raise DatasetError(f"file name {name!r} does not follow the Market-1501 pattern PPPP_cC…")
    return int(m.group(1)), int(m.group(2)) - 1


def parse_market_folder(
    folder: Path,
    dataset: str,
    *,
    keep_distractors: bool = True,
    skipped: list[str] | None = None,
    pid_offset: int = 0,
) -> list[ImageRecord]:
    """Records of one Market-style folder, sorted by path; junk (-1) dropped.

    Non-image and hidden files are ignored; images whose names do not parse are
    appended to ``skipped`` (when given) instead of becoming records.  ``pid_offset``
    is added to every real identity (used where a dataset numbers identities from 0).
    """
    records = []
    for path in image_files(folder):
        m = _MARKET_NAME.match(path.name)
        if not m:
            if skipped is not None:
                skipped.append(str(path))
            continue
        pid, cam = int(m.group(1)), int(m.group(2)) - 1
        if pid == JUNK_PID or (pid == DISTRACTOR_PID and not keep_distractors):
            continue
        if pid > 0:
            pid += pid_offset
        records.append(ImageRecord(str(path), pid, cam, dataset))
    return records


def read_market_layout(folder: Path, name: str, info: dict | None = None) -> ReIDDataset:
    """Parse a folder that directly holds the three Market-style split folders.

    Raises :class:`~muva.data.records.UnusableDatasetError` (carrying what was read) when
    a split is empty or none of its file names parses.
    """
    folder = Path(folder)
    folders = {split: folder / sub for split, sub in MARKET_FOLDERS.items()}
    unparsed: dict[str, list[str]] = {split: [] for split in MARKET_FOLDERS}
    records = {
        split: parse_market_folder(folders[split], name, keep_distractors=split != "train", skipped=unparsed[split])
        for split in MARKET_FOLDERS
    }
    ds = ReIDDataset(name=name, root=folder, **records, info=dict(info or {}))
    skipped = [p for split in MARKET_FOLDERS for p in unparsed[split]]
    if skipped:
        ds.info["skipped"] = skipped
    return require_usable(ds, tuple(MARKET_FOLDERS), folders=folders, unparsed=unparsed, naming=MARKET_NAMING)


MARKET_NAMES = ("Market-1501-v15.09.15", "market1501", "Market-1501", "market", "Market1501")
MARKET_NESTINGS = nestings(*MARKET_NAMES)


@register_dataset("market1501", aliases=("market", "market-1501", "ma"), standard=True)
def market1501(root: Path) -> ReIDDataset:
    """Market-1501 (Zheng et al. 2015): 751 train ids, 750 query ids, 6 cameras."""
    folder = locate(Path(root), "Market-1501", list(MARKET_FOLDERS.values()), MARKET_NESTINGS)
    return read_market_layout(folder, "market1501")

"""Market-1501 and every dataset distributed in its folder layout.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` holding files named
``PPPP_cC...jpg`` (identity ``PPPP``, 1-based camera ``C``).  ``-1`` identities are junk
and dropped; ``0`` (distractors) stays in the gallery.
"""

from __future__ import annotations

import re
from pathlib import Path

from muva.data.datasets import DATASETS
from muva.data.datasets.layout import locate
from muva.data.records import JUNK_PID, DatasetError, ImageRecord, ReIDDataset, is_image_file

MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


def parse_market_filename(name: str) -> tuple[int, int]:
    """``'0002_c1s1_000451_03.jpg'`` → ``(2, 0)`` (identity, 0-based camera)."""
    m = _MARKET_NAME.match(Path(name).name)
    if not m:
        raise DatasetError(f"file name {name!r} does not follow the Market-1501 pattern PPPP_cC…")
    return int(m.group(1)), int(m.group(2)) - 1


def parse_market_folder(folder: Path, dataset: str, *, keep_distractors: bool = True) -> list[ImageRecord]:
    """Records of one Market-style folder, sorted by path; junk (-1) dropped.

    Non-image files are ignored; an image whose name does not parse is an error that
    names it (a misplaced file would otherwise silently shift the statistics).
    """
    records = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or not is_image_file(path):
            continue
        pid, cam = parse_market_filename(path.name)
        if pid == JUNK_PID or (pid == 0 and not keep_distractors):
            continue
        records.append(ImageRecord(str(path), pid, cam, dataset))
    return records


def read_market_layout(folder: Path, name: str, info: dict | None = None) -> ReIDDataset:
    """Parse a folder that directly holds the three Market-style split folders."""
    folder = Path(folder)
    return ReIDDataset(
        name=name,
        root=folder,
        train=parse_market_folder(folder / MARKET_FOLDERS["train"], name, keep_distractors=False),
        query=parse_market_folder(folder / MARKET_FOLDERS["query"], name),
        gallery=parse_market_folder(folder / MARKET_FOLDERS["gallery"], name),
        info=dict(info or {}),
    )


MARKET_NESTINGS = ("", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501", "Market-1501", "market")


@DATASETS.register("market1501", aliases=("market", "market-1501", "ma"))
def market1501(root: Path) -> ReIDDataset:
    """Market-1501 (Zheng et al. 2015): 751 train ids, 750 query ids, 6 cameras."""
    folder = locate(Path(root), "Market-1501", list(MARKET_FOLDERS.values()), MARKET_NESTINGS)
    return read_market_layout(folder, "market1501")

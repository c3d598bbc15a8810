"""Official statistics of the standard datasets (as published with each dataset), for ``muva data check``.

Each split maps to ``(identities, images, cameras)``; ``None`` where the reference gives
no number (the check shows "—" and does not compare).  Distractor identity 0 counts as
an identity where it stays in the gallery (Market-1501, GRID); junk (−1) never counts.
"""

from __future__ import annotations

from typing import Optional

from muva.data.records import ReIDDataset

Triple = tuple[Optional[int], Optional[int], Optional[int]]

_MSMT_TEST = {"query": (3060, 11659, 15), "gallery": (3060, 82161, 15)}

OFFICIAL: dict[str, dict[str, Triple]] = {
    "market1501": {"train": (751, 12936, 6), "query": (750, 3368, 6), "gallery": (751, 15913, 6)},
    "dukemtmcreid": {"train": (702, 16522, 8), "query": (702, 2228, 8), "gallery": (1110, 17661, 8)},
    "msmt17/train": {"train": (1041, 30248, 15), **_MSMT_TEST},
    "msmt17/train+val": {"train": (1041, 32621, 15), **_MSMT_TEST},
    "cuhk03np/labeled": {"train": (767, 7368, 2), "query": (700, 1400, 2), "gallery": (700, 5328, 2)},
    "cuhk03np/detected": {"train": (767, 7365, 2), "query": (700, 1400, 2), "gallery": (700, 5332, 2)},
    "cuhk02": {"train": (1816, 7264, 10), "query": (0, 0, 0), "gallery": (0, 0, 0)},
    "cuhksysu": {"train": (11934, 34574, None), "query": (0, 0, 0), "gallery": (0, 0, 0)},
    # Per split (every split has the same sizes, except iLIDS's train images).
    "viper": {"train": (316, 632, 2), "query": (316, 316, 1), "gallery": (316, 316, 1)},
    "prid2011": {"train": (100, 200, 2), "query": (100, 100, 1), "gallery": (649, 649, 1)},
    "grid": {"train": (125, 250, None), "query": (125, 125, None), "gallery": (126, 900, None)},
    "ilids": {"train": (59, None, None), "query": (60, 60, 1), "gallery": (60, 60, 1)},
    # MARS frames: only the training part is comparable (query/gallery are built by muva).
    "mars": {"train": (625, 509914, 6), "query": (None, None, None), "gallery": (None, None, None)},
}


def official_key(ds: ReIDDataset) -> str | None:
    """The :data:`OFFICIAL` key matching a parsed dataset (its variant / train split), or None."""
    if ds.name == "msmt17":
        return f"msmt17/{ds.info.get('train_split', 'train')}"
    if ds.name == "cuhk03np":
        return f"cuhk03np/{ds.info.get('variant', 'detected')}"
    if ds.info.get("path"):  # opened by path: a custom copy, not the official release
        return None
    return ds.name if ds.name in OFFICIAL else None


def official_stats(ds: ReIDDataset) -> dict[str, Triple] | None:
    """Official ``{split: (ids, images, cams)}`` for ``ds``, or None when there is no reference."""
    key = official_key(ds)
    return OFFICIAL.get(key) if key else None

"""Refusing datasets that were found but cannot serve: empty splits, names that do not parse.

Every parser returns what it read; :func:`require_usable` then checks that each split the
dataset's layout provides holds at least one record, and raises one
:class:`~muva.data.records.UnusableDatasetError` naming each empty split, the folder it
was read from, and — when image files were there but none of their names parsed — an
example name and the naming pattern that was expected.  The error carries the parsed
dataset, so that ``muva data check`` can still show the found numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from muva.data.datasets.layout import image_files
from muva.data.records import SPLITS, ReIDDataset, SplitProblem, UnusableDatasetError

MARKET_NAMING = "Market-1501 names PPPP_cC… (identity, then 1-based camera), e.g. 0002_c1s1_000451_03.jpg"


def expected_splits(ds: ReIDDataset) -> tuple[str, ...]:
    """The splits a dataset's layout provides (and so must not be empty).

    Training-only sources (CUHK02, CUHK-SYSU) provide ``train`` only; a ``custom`` folder
    the split folders it has; a ``custom`` CSV the splits its rows name; every other
    layout all three.
    """
    if ds.info.get("all_in_train"):
        return ("train",)
    if ds.info.get("source") == "pattern":
        return tuple(s for s in SPLITS if s in ds.info.get("splits_from", {}))
    if ds.info.get("source") == "csv":
        return tuple(s for s in SPLITS if ds.split(s))
    return SPLITS


def _image_count(folder: Path, recursive: bool = False) -> int:
    try:
        return len(image_files(folder, recursive=recursive))
    except Exception:  # noqa: BLE001 - only used to word a message
        return 0


def split_problems(
    ds: ReIDDataset,
    splits: Sequence[str] | None = None,
    *,
    folders: Mapping[str, Path] | None = None,
    unparsed: Mapping[str, Sequence[str]] | None = None,
    naming: str | None = None,
    recursive: bool = False,
) -> list[SplitProblem]:
    """One :class:`SplitProblem` per split of ``splits`` (default: :func:`expected_splits`) that is empty.

    ``folders`` (split → folder it was read from), ``unparsed`` (split → image files whose
    names did not parse) and ``naming`` (the expected naming pattern) make the messages precise;
    ``recursive`` says that a split folder's images lie in sub-folders (MARS).
    """
    folders = folders or {}
    unparsed = unparsed or {}
    problems = []
    for split in splits if splits is not None else expected_splits(ds):
        if ds.split(split):
            continue
        folder = folders.get(split)
        where = f"{folder}/" if folder is not None else f"{ds.name} ({ds.root})"
        bad = list(unparsed.get(split, ()))
        count = _image_count(Path(folder), recursive) if folder is not None else len(bad)
        if bad and len(bad) >= count:
            example = Path(bad[0]).name
            msg = (f"{ds.name}: the {split} split is empty because no file name in {where} parses "
                   f"({len(bad)} image(s), e.g. {example!r}); expected {naming or 'the dataset naming pattern'}")
            problems.append(SplitProblem(split, "names unparsed", msg))
            continue
        if count and bad:
            msg = (f"{ds.name}: the {split} split is empty: of the {count} image(s) in {where}, {len(bad)} have names "
                   f"that do not parse (e.g. {Path(bad[0]).name!r}) and the others are junk (-1) or distractors (0)")
        elif count:
            msg = f"{ds.name}: the {split} split is empty: the {count} image(s) in {where} are all junk (-1) or distractors (0)"
        elif folder is not None:
            msg = f"{ds.name}: the {split} split is empty: {where} holds no image"
        else:
            msg = f"{ds.name}: the {split} split of {where} is empty"
        problems.append(SplitProblem(split, "empty", msg))
    return problems


def require_usable(ds: ReIDDataset, splits: Sequence[str] | None = None, **details) -> ReIDDataset:
    """``ds`` when every expected split holds records, else :class:`UnusableDatasetError` (see :func:`split_problems`)."""
    problems = split_problems(ds, splits, **details)
    if problems:
        raise UnusableDatasetError(problems, dataset=ds)
    return ds

"""The one resolver from "a dataset name or a folder" to its images: :func:`resolve_source`.

A spec is, in this order:

* a :class:`~muva.data.records.ReIDDataset` (taken as it is);
* a registered dataset name or alias (parsed under ``root`` / ``$MUVA_DATA`` with ``options``),
  a dataset folder (Market-1501 or MARS layout, a synthetic domain) or ``synth:PATH`` —
  all through :func:`muva.data.datasets.open_dataset`;
* else, when no dataset option is given, a plain folder of images (searched recursively,
  hidden files and folders left out): identity and camera are read from Market-style
  ``PPPP_cC…`` or MARS-style ``PPPPCcT…`` file names where they parse, else -1.

Dataset options mean the spec must be a dataset: a plain folder is then an error.  The
grounding (``muva ground run``), extraction (``muva extract``) and training (``data.sources``
/ ``data.targets``) code all resolve their specs here, so they agree on the images of a spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

# The package imports this module last, once its parsers and open_dataset exist.
from muva.data.datasets import open_dataset
from muva.data.datasets.market1501 import parse_market_filename
from muva.data.datasets.mars import parse_mars_filename
from muva.data.records import SPLITS, UNKNOWN_CAMERA, DatasetError, ImageRecord, ReIDDataset, UnusableDatasetError, is_image_file

DATASET = "dataset"
FOLDER = "folder"


def parse_identity(name: str) -> tuple[int, int]:
    """(pid, 0-based camid) from a Market- or MARS-style file name, else (-1, -1).

    >>> parse_identity("0002_c1s1_000451_03.jpg"), parse_identity("0003C4T0003F001.jpg"), parse_identity("cat.png")
    ((2, 0), (3, 3), (-1, -1))
    """
    base = os.path.basename(name)
    for parse in (parse_market_filename, lambda n: parse_mars_filename(n)[:2]):
        try:
            return parse(base)
        except DatasetError:
            continue
    return -1, UNKNOWN_CAMERA


def folder_records(folder: str | Path) -> list[ImageRecord]:
    """A record (absolute path, parsed pid/camid or -1) for every image under ``folder``, sorted."""
    folder = Path(folder).expanduser().resolve()
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or not is_image_file(f):
                continue
            pid, cam = parse_identity(f)
            out.append(ImageRecord(os.path.join(dirpath, f), pid, cam, ""))
    return out


def _check_splits(splits: Sequence[str]) -> list[str]:
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise DatasetError(f"unknown split(s) {', '.join(map(str, bad))}; choose from {', '.join(SPLITS)}")
    return list(splits)


@dataclass
class Source:
    """What a spec resolved to: a parsed dataset (``kind == "dataset"``) or a plain image folder.

    Attributes:
        spec: the spec as given.
        kind: ``"dataset"`` or ``"folder"``.
        name: the dataset's name, or the folder's name.
        root: the dataset's (or folder's) resolved folder; cache keys are relative to it.
        dataset: the parsed dataset (None for a folder).
        options: the dataset options it was opened with.
        problem: with ``keep_unusable``, the :class:`UnusableDatasetError` of a dataset
            that was read but cannot serve in full (its ``dataset`` is the one above).
        not_dataset: for a folder, why it was not read as a dataset (the parser's message).
    """

    spec: str
    kind: str
    name: str
    root: Path
    dataset: ReIDDataset | None = None
    options: dict = field(default_factory=dict)
    problem: UnusableDatasetError | None = None
    not_dataset: str = ""
    _folder: list[ImageRecord] = field(default_factory=list, repr=False)

    @property
    def is_dataset(self) -> bool:
        return self.kind == DATASET

    def records(self, splits: Sequence[str] = SPLITS) -> list[tuple[str, ImageRecord]]:
        """``(split, record)`` of ``splits`` for a dataset; every image (split ``""``) for a folder."""
        splits = _check_splits(splits)
        if self.dataset is None:
            return [("", r) for r in self._folder]
        return [(s, r) for s in splits for r in self.dataset.split(s)]

    def images(self, splits: Sequence[str] = SPLITS) -> list[str]:
        """The unique resolved image paths of ``splits`` (every image of a folder), in order."""
        return list(dict.fromkeys(str(Path(r.path).resolve()) for _, r in self.records(splits)))

    def rows(self, splits: Sequence[str] = SPLITS) -> list[dict]:
        """``{path, pid, camid, split, dataset}`` per record (``split``/``dataset`` empty for a folder)."""
        default = self.name if self.dataset is not None else ""
        return [{"path": str(r.path), "pid": r.pid, "camid": r.camid, "split": s, "dataset": r.dataset or default}
                for s, r in self.records(splits)]

    def describe(self, splits: Sequence[str] = SPLITS) -> dict:
        """Where the images came from, for metadata."""
        if self.dataset is None:
            return {"kind": FOLDER, "path": str(self.root)}
        out = {"kind": DATASET, "name": self.name, "root": str(self.dataset.root), "splits": list(splits)}
        if self.options:
            out["dataset_options"] = dict(self.options)
        return out


def _of_dataset(spec: str, ds: ReIDDataset, options: Mapping[str, Any], problem=None) -> Source:
    return Source(str(spec), DATASET, ds.name, Path(ds.root).expanduser().resolve(), ds, dict(options), problem)


def resolve_source(spec: str | Path | ReIDDataset, root: str | Path | None = None,
                   options: Mapping[str, Any] | None = None, *, keep_unusable: bool = False) -> Source:
    """Resolve ``spec`` (see the module doc) into a :class:`Source`.

    Raises :class:`DatasetError` when ``spec`` is neither a dataset nor a folder holding
    images (the parser's message: no such name, no such folder, no known layout and no
    image below it), and :class:`UnusableDatasetError` for a
    dataset that is found but cannot serve — unless ``keep_unusable``, which returns it
    with ``problem`` set when some images were read.
    """
    options = dict(options or {})
    if isinstance(spec, ReIDDataset):
        return _of_dataset(spec.name, spec, options)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        raise DatasetError(f"{text} is a file; pass a dataset name, a dataset folder or a folder of images")
    try:
        ds = open_dataset(spec, root, **options)
    except UnusableDatasetError as exc:
        if keep_unusable and exc.dataset is not None:
            return _of_dataset(text, exc.dataset, options, exc)
        raise
    except DatasetError as exc:
        tried = str(exc).strip('"')
        if options:  # dataset options: no plain-folder fallback
            raise
        if not path.is_dir():  # the message says what was tried (no such name, no such folder, ...)
            raise
        records = folder_records(path)
        if not records:
            raise DatasetError(f"no images found under {path} (read as a dataset folder: {tried}; as a plain "
                               "image folder: no image file below it)") from None
        return Source(text, FOLDER, path.resolve().name, path.resolve(), not_dataset=tried, _folder=records)
    return _of_dataset(text, ds, options)

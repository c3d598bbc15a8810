"""Dataset parsers, registered by name in :data:`DATASETS`.

Each entry is a callable ``parser(root: Path, **options) -> ReIDDataset``; ``root`` is the
data root (``--root`` or ``$MUVA_DATA``) under which the dataset's own folder lives.  A
dataset is added with :func:`register_dataset`, which also stores its
:class:`DatasetRecord` (whether it is a standard benchmark, how many fixed splits it has);
every consumer reads those facts from :func:`dataset_record`.

:func:`resolve_source` turns any spec (name, dataset folder, ``synth:PATH`` or a plain
folder of images) into a :class:`Source`; the grounding, extraction and training code use it.

:func:`open_dataset` is the one entry point for users: a registered name (``market1501``,
``dukemtmcreid``, ``msmt17``, ``cuhk03np``, ``cuhk02``, ``cuhksysu``, ``viper``,
``prid2011``, ``grid``, ``ilids``, ``mars``, ``custom``), or a path to a Market-layout
folder, a MARS-layout folder or a synthetic domain written by ``muva synth``
(``synth:/path`` also works).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import inspect
from dataclasses import dataclass
from typing import Callable

from muva.data.datasets.layout import locate
from muva.data.datasets.usable import require_usable
from muva.data.records import DatasetError, ReIDDataset, UnusableDatasetError
from muva.registry import Registry

DATASETS = Registry("dataset")


@dataclass(frozen=True)
class DatasetRecord:
    """What the code knows about a registered dataset besides its parser.

    Attributes:
        name: the canonical registered name.
        parser: ``parser(root, **options) -> ReIDDataset``.
        standard: an official benchmark release, shown by ``muva data check`` when no name is given.
        num_splits: fixed query/gallery splits (option ``split`` = 0..num_splits-1); 1 when none.
    """

    name: str
    parser: Callable[..., ReIDDataset]
    standard: bool = False
    num_splits: int = 1

    @property
    def options(self) -> tuple[str, ...]:
        """The option names the parser takes (its keywords but ``root``)."""
        return tuple(p for p in inspect.signature(self.parser).parameters if p != "root")

    @property
    def aliases(self) -> list[str]:
        return DATASETS.aliases_of(self.name)

    @property
    def summary(self) -> str:
        return (self.parser.__doc__ or "").strip().splitlines()[0] if self.parser.__doc__ else ""


_RECORDS: dict[str, DatasetRecord] = {}


def register_dataset(name: str, *, aliases: tuple[str, ...] = (), standard: bool = False, num_splits: int = 1):
    """Register a dataset parser under ``name`` with its :class:`DatasetRecord` (the one place to add a dataset)."""

    def deco(parser):
        DATASETS.add(name, parser, aliases=aliases)
        key = DATASETS.canonical(name)
        _RECORDS[key] = DatasetRecord(key, parser, standard=standard, num_splits=int(num_splits))
        return parser

    return deco


def dataset_record(name: str) -> DatasetRecord:
    """The :class:`DatasetRecord` of a registered name or alias (a :class:`DatasetError` otherwise)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise unknown_dataset_error(str(name))
    key = DATASETS.canonical(name)
    if key not in _RECORDS:  # registered with DATASETS.register directly: no record
        raise DatasetError(f"dataset {key!r} is registered without a record; register it with "
                           "muva.data.datasets.register_dataset")
    return _RECORDS[key]


def dataset_records() -> list[DatasetRecord]:
    """Every dataset's record, in registration order."""
    return [_RECORDS[n] for n in _RECORDS]

# Importing the modules registers their parsers.
from muva.data.datasets import market1501  # noqa: E402,F401
from muva.data.datasets import market_style  # noqa: E402,F401
from muva.data.datasets import msmt17  # noqa: E402,F401
from muva.data.datasets import image_sets  # noqa: E402,F401
from muva.data.datasets import small_targets  # noqa: E402,F401
from muva.data.datasets import mars  # noqa: E402,F401
from muva.data.datasets import custom  # noqa: E402,F401
from muva.data.datasets.market1501 import MARKET_FOLDERS, MARKET_NESTINGS, read_market_layout  # noqa: E402

# The official benchmark releases (what `muva data check` shows by default), from the records.
STANDARD_DATASETS = tuple(r.name for r in dataset_records() if r.standard)


def data_root(root: str | Path | None = None) -> Path:
    """The data root: the explicit argument, else ``$MUVA_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MUVA_DATA")
    return Path(env).expanduser() if env else Path("data")


def unknown_dataset_error(name: str, suffix: str = "") -> DatasetError:
    """The error for a name that is no registered dataset: close names (each once) and every name."""
    names = DATASETS.names()
    alias_of = {a: n for n in names for a in DATASETS.aliases_of(n)}
    key = str(name).strip().lower().replace("_", "-")
    close = difflib.get_close_matches(key, names + sorted(alias_of), n=8, cutoff=0.5)
    suggestions = list(dict.fromkeys(alias_of.get(c, c) for c in close))[:3]
    hint = f" Did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
    return DatasetError(f"unknown dataset {name!r}{suffix}.{hint} Registered: {', '.join(names)}.")


def load_dataset(name: str, root: str | Path | None = None, **options) -> ReIDDataset:
    """Parse a registered dataset by name (``DATASETS.names()`` lists them).

    Unknown options are an error naming the options the parser accepts.  A dataset that
    is found but has an empty split (or a split where no file name parses) is an
    :class:`~muva.data.records.UnusableDatasetError` naming the split.
    """
    record = dataset_record(name)
    parser = record.parser
    if options:
        unknown = [k for k in options if k not in record.options]
        if unknown:
            accepted = record.options
            raise DatasetError(
                f"dataset {DATASETS.canonical(name)!r} has no option {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(accepted) or 'none'}"
            )
    return require_usable(parser(data_root(root), **options))


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith((".", "~")) or Path(spec).expanduser().exists()


def open_path(path: str | Path, name: str | None = None) -> ReIDDataset:
    """A dataset given by its folder: a synthetic domain, a Market-layout or a MARS-layout folder.

    The dataset name is ``domain.json``'s ``name`` (prefixed ``synth-``) for a synthetic
    domain, else ``name`` or the folder's name, so that combined sets keep domains apart.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist")
    if (folder / "synth.json").is_file() and not (folder / "bounding_box_train").is_dir():
        domains = sorted(p.name for p in folder.iterdir() if (p / "domain.json").is_file() or (p / "bounding_box_train").is_dir())
        raise DatasetError(
            f"{folder} is a synthetic benchmark holding several domains ({', '.join(domains) or 'none found'}); "
            f"open one of them (e.g. {folder / (domains[0] if domains else 'domain_0')}) or combine several "
            "with muva.data.multisource.combine"
        )
    info: dict = {"path": str(folder)}
    if (folder / "domain.json").is_file():
        try:
            meta = json.loads((folder / "domain.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{folder / 'domain.json'} is not valid JSON: {exc}") from None
        dname = str(meta.get("name") or folder.name) if isinstance(meta, dict) else folder.name
        name = name or (dname if dname.startswith("synth") else f"synth-{dname}")
        info.update(synthetic=True, domain=meta if isinstance(meta, dict) else {})
        if (folder / "parts.jsonl").is_file():
            info["parts_jsonl"] = str(folder / "parts.jsonl")
    if (folder / "bbox_train").is_dir() and (folder / "bbox_test").is_dir():
        try:
            ds = DATASETS.get("mars")(folder)
        except UnusableDatasetError as exc:  # name it as the folder, as a parsed one would be
            if exc.dataset is not None:
                exc.dataset.name = name or folder.name
                exc.dataset.info.update(info)
            raise
        ds.name = name or folder.name
        ds.info.update(info)
        return ds
    market = locate(folder, f"dataset at {folder}", list(MARKET_FOLDERS.values()), MARKET_NESTINGS)
    return read_market_layout(market, name or folder.name, info=info)


def open_dataset(spec: str | Path | ReIDDataset, root: str | Path | None = None, **options) -> ReIDDataset:
    """Open a dataset from a name, a path, or ``synth:PATH``; returns a :class:`ReIDDataset`.

    * a registered name (or alias): parsed under ``root`` / ``$MUVA_DATA`` with ``options``
      (e.g. ``variant="labeled"`` for CUHK03-NP, ``train_split="train+val"`` for MSMT17,
      ``split=3`` for VIPeR/PRID/GRID/iLIDS, ``pattern=``/``csv=`` for ``custom``);
    * ``synth:PATH`` or a path: see :func:`open_path` (``name=`` overrides the name);
    * a :class:`ReIDDataset`: returned unchanged.
    """
    if isinstance(spec, ReIDDataset):
        return spec
    if not (isinstance(spec, str) and spec in DATASETS) and set(options) - {"name"}:
        raise DatasetError(
            f"a dataset given by path accepts only the option 'name' (got {', '.join(sorted(options))}); "
            "use a registered name (e.g. 'custom') for parser options"
        )
    if isinstance(spec, Path):
        return open_path(spec, **options)
    spec = str(spec)
    if spec.startswith("synth:"):
        return open_path(spec[len("synth:"):], **options)
    if spec in DATASETS:
        return load_dataset(spec, root, **options)
    if _looks_like_path(spec):
        return open_path(spec, **options)
    raise unknown_dataset_error(spec, " (and no folder of that name exists; give a registered name or a dataset folder)")


from muva.data.datasets.options import dataset_options_for, parse_dataset_options  # noqa: E402
from muva.data.datasets.resolve import Source, parse_identity, resolve_source  # noqa: E402

__all__ = [
    "DATASETS",
    "STANDARD_DATASETS",
    "DatasetError",
    "DatasetRecord",
    "Source",
    "UnusableDatasetError",
    "data_root",
    "dataset_options_for",
    "dataset_record",
    "dataset_records",
    "load_dataset",
    "open_dataset",
    "open_path",
    "parse_dataset_options",
    "parse_identity",
    "register_dataset",
    "resolve_source",
    "unknown_dataset_error",
]

"""Dataset parsers, registered by name in :data:`DATASETS`.

Each entry is a callable ``parser(root: Path, **options) -> ReIDDataset``; ``root`` is the
data root (``--root`` or ``$MUVA_DATA``) under which the dataset's own folder lives.
"""

from __future__ import annotations

import os
from pathlib import Path

from muva.data.records import DatasetError, ReIDDataset
from muva.registry import Registry

DATASETS = Registry("dataset")

# Importing the modules registers their parsers.
from muva.data.datasets import market1501  # noqa: E402,F401


def data_root(root: str | Path | None = None) -> Path:
    """The data root: the explicit argument, else ``$MUVA_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MUVA_DATA")
    return Path(env).expanduser() if env else Path("data")


def load_dataset(name: str, root: str | Path | None = None, **options) -> ReIDDataset:
    """Parse a registered dataset by name (``DATASETS.names()`` lists them)."""
    parser = DATASETS.get(name)
    return parser(data_root(root), **options)


__all__ = ["DATASETS", "DatasetError", "load_dataset", "data_root"]

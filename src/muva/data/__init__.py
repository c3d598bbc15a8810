"""Data: records, dataset parsers, samplers, transforms and the synthetic generator.

dataset name or folder → :func:`open_dataset` / :func:`load_dataset` → :class:`ReIDDataset` of :class:`ImageRecord` → loader.

``import muva.data`` (and importing one of its modules, such as :mod:`muva.data.parts`)
is light: the names below are imported from their modules on first use, so the dataset
parsers load only when a dataset name is used.
"""

from __future__ import annotations

from muva.utils.lazy import lazy_exports

__all__ = [
    "DATASETS",
    "DISTRACTOR_PID",
    "JUNK_PID",
    "UNKNOWN_CAMERA",
    "DatasetError",
    "ImageRecord",
    "ReIDDataset",
    "STANDARD_DATASETS",
    "SplitStats",
    "data_root",
    "load_dataset",
    "open_dataset",
    "relabel",
]

_LAZY = {
    **{name: ".datasets" for name in ("DATASETS", "STANDARD_DATASETS", "data_root", "load_dataset", "open_dataset")},
    **{name: ".records" for name in ("DISTRACTOR_PID", "JUNK_PID", "UNKNOWN_CAMERA", "DatasetError", "ImageRecord",
                                    "ReIDDataset", "SplitStats", "relabel")},
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

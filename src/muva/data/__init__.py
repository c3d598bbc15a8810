"""Data: records, dataset parsers, samplers, transforms and the synthetic generator.

dataset name or folder → :func:`open_dataset` / :func:`load_dataset` → :class:`ReIDDataset` of :class:`ImageRecord` → loader.
"""

from muva.data.datasets import DATASETS, STANDARD_DATASETS, data_root, load_dataset, open_dataset
from muva.data.records import (
    DISTRACTOR_PID,
    JUNK_PID,
    UNKNOWN_CAMERA,
    DatasetError,
    ImageRecord,
    ReIDDataset,
    SplitStats,
    relabel,
)

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

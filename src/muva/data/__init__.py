"""Data: records, dataset parsers, samplers, transforms and the synthetic generator.

dataset folder → :func:`load_dataset` → :class:`ReIDDataset` of :class:`ImageRecord` → loader.
"""

from muva.data.datasets import DATASETS, data_root, load_dataset
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
    "SplitStats",
    "data_root",
    "load_dataset",
    "relabel",
]

"""Image files in batches for the extractor, decoded ahead of the forward pass.

:func:`file_batches` yields collated ``(images N×3×H×W, indices, errors)`` batches of an
:class:`~muva.inference.images.ImageFiles` dataset in order: decoded in the calling
thread (``workers=0``), a few batches ahead by background threads (the default: PIL and
numpy release the GIL, and threads add no start-up cost and no copy-on-write page faults
to the process holding the model), or by DataLoader worker processes
(``worker_type="process"``).  :class:`FileFeatures` is what
:meth:`~muva.inference.FeatureExtractor.extract_files` returns.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch.utils.data import DataLoader

from muva.inference.images import ImageFiles, collate_files

__all__ = ["FileFeatures", "file_batches", "prefetch_batches"]


@dataclass
class FileFeatures:
    """Result of :meth:`FeatureExtractor.extract_files`: features of the readable files, and why the others failed."""

    paths: list[str]
    indices: list[int]
    features: Any
    masks: Any = None
    failed: dict = field(default_factory=dict)
    seconds: float = 0.0


def file_batches(dataset: ImageFiles, batch_size: int, workers: int, worker_type: str = "thread") -> Iterator[tuple]:
    """Collated batches of ``dataset`` in order, decoded by ``workers`` threads or processes."""
    if worker_type == "process" and workers > 0:
        return iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                               collate_fn=collate_files, prefetch_factor=4))
    return prefetch_batches(dataset, batch_size, workers)


def prefetch_batches(dataset: ImageFiles, batch_size: int, workers: int, prefetch: int = 4) -> Iterator[tuple]:
    """Collated batches of ``dataset`` in order, decoded ``prefetch`` batches ahead by threads."""
    starts = iter(range(0, len(dataset), batch_size))

    def load(start: int):
        return collate_files([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])

    if workers <= 0:
        for start in starts:
            yield load(start)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="muva-decode") as pool:
        pending: deque = deque()
        for start in starts:
            pending.append(pool.submit(load, start))
            if len(pending) >= prefetch:
                break
        while pending:
            batch = pending.popleft().result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield batch

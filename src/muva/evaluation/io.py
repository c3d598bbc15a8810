"""Feature files for ``muva evaluate-features``: writing one, and the query / gallery rows to rank.

The files are read by the one feature reader, :func:`muva.utils.featurefiles.load_features`
(its module docstring documents the formats): a ``muva extract`` folder, or a single
``.npz`` (written by :func:`save_features` or by plain ``numpy.savez``), ``.safetensors``
or ``.pt`` / ``.pth`` file with the keys

==========  ===========================  =========================================
key         shape / dtype                meaning
==========  ===========================  =========================================
features    N × D, float16/32/64         one row per image (any scale; cosine
                                         distance normalises them)
pids        N, integer                   identity of each row
camids      N, integer (optional)        0-based camera; omit or -1 = unknown
images      N, str (optional)            image identifiers (paths); used for
                                         same-image removal when there are no cameras
==========  ===========================  =========================================

:func:`load_query_gallery` turns what the reader returns into :class:`FeatureFile` rows:
identities required, cameras ``None`` when unknown, a ``muva extract`` folder's
``query`` / ``gallery`` split chosen by default.

The per-query result file (:func:`save_per_query` / :func:`load_per_query`, one ``.npz``
of per-query AP / INP / first-match ranks) lives in :mod:`muva.evaluation.perquery` and is
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from muva.evaluation.distances import EvaluationError, to_numpy
from muva.evaluation.perquery import PerQuery, load_per_query, save_per_query
from muva.utils import featurefiles  # the module, not the function: one reader, looked up when called
from muva.utils.featurefiles import FeatureFileError, FeatureSet, check_feature_arrays
from muva.utils.io import atomic_write

__all__ = ["FeatureFile", "PerQuery", "load_per_query", "load_query_gallery", "save_features", "save_per_query"]


@dataclass
class FeatureFile:
    """Rows of features with their identities, cameras (or ``None``) and image ids (or ``None``)."""

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray | None = None
    images: list[str] | None = None
    path: str = ""

    def __len__(self) -> int:
        return len(self.pids)


def save_features(path: str | Path, features: Any, pids: Any, camids: Any = None, images: Sequence[str] | None = None) -> Path:
    """Write a ``.npz`` feature file in the documented format."""
    path = Path(path)
    if path.suffix != ".npz":
        raise EvaluationError(f"feature files are .npz; got {path.name}")
    feats = to_numpy(features, name="features")
    arrays: dict[str, np.ndarray] = {"features": feats, "pids": to_numpy(pids, name="pids").astype(np.int64)}
    if camids is not None:
        arrays["camids"] = to_numpy(camids, name="camids").astype(np.int64)
    if images is not None:
        arrays["images"] = np.asarray([str(p) for p in images])
    check_feature_arrays(arrays, str(path))  # the reader's own check: what is written reads back
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _rows(fs: FeatureSet, path: Path, split: str | None, split_if_present: str | None) -> FeatureFile:
    """The evaluation's view of what the reader returned for ``path``.

    ``split`` keeps the rows of one split (an error when there are none);
    ``split_if_present`` does so only when the rows carry that split.
    """
    if "pids" in fs.missing:
        raise EvaluationError(
            f"{path}: a feature file needs the keys 'features' (N × D) and 'pids' (N); it has no 'pids' "
            "(see docs/evaluation.md, 'Feature files')"
        )
    if split is None and split_if_present is not None and split_if_present in set(fs.splits):  # type: ignore[arg-type]
        split = split_if_present
    if split is not None:
        if not path.is_dir() and not any(fs.splits):  # type: ignore[arg-type]
            raise EvaluationError(f"{path}: only `muva extract` outputs carry splits; drop the split option for this file")
        try:
            fs = fs.split(split)
        except FeatureFileError as exc:  # say which of the two inputs has no such rows
            raise EvaluationError(f"{path}: {exc}") from exc
    cams = np.asarray(fs.camids, dtype=np.int64)
    return FeatureFile(
        features=fs.features,
        pids=np.asarray(fs.pids, dtype=np.int64),
        camids=None if "camids" in fs.missing or np.all(cams == -1) else cams,
        images=None if "paths" in fs.missing else list(fs.paths),
        path=str(path),
    )


def load_query_gallery(query: str | Path, gallery: str | Path, query_split: str | None = None,
                       gallery_split: str | None = None) -> tuple[FeatureFile, FeatureFile]:
    """Query and gallery rows: a ``muva extract`` output gives its ``query`` / ``gallery`` rows
    unless ``query_split`` / ``gallery_split`` name others; one path given for both is read once."""
    q, g = Path(query), Path(gallery)
    q_set = featurefiles.load_features(q)
    g_set = q_set if q.resolve() == g.resolve() else featurefiles.load_features(g)
    return _rows(q_set, q, query_split, "query"), _rows(g_set, g, gallery_split, "gallery")

"""Feature files for ``muva evaluate-features`` (features + identities + cameras).

The format (``.npz``, written by :func:`save_features` or by plain ``numpy.savez``):

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

``.pt`` / ``.pth`` files holding a dict with the same keys (``torch.save``) are read too,
and so are the feature folders / files of ``muva extract`` (``features.json`` manifest,
``.safetensors`` + CSV), with their reader :mod:`muva.utils.featurefiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from muva.evaluation.distances import EvaluationError, to_numpy


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
    from muva.utils.io import atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        raise EvaluationError(f"feature files are .npz; got {path.name}")
    feats = to_numpy(features, name="features")
    arrays: dict[str, np.ndarray] = {"features": feats, "pids": to_numpy(pids, name="pids").astype(np.int64)}
    if camids is not None:
        arrays["camids"] = to_numpy(camids, name="camids").astype(np.int64)
    if images is not None:
        arrays["images"] = np.asarray([str(p) for p in images])
    _validate(arrays, str(path))
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _validate(arrays: dict, where: str) -> None:
    if "features" not in arrays or "pids" not in arrays:
        raise EvaluationError(
            f"{where}: a feature file needs the keys 'features' (N × D) and 'pids' (N); found {sorted(arrays)} "
            "(see docs/evaluation.md, 'Feature files')"
        )
    f = arrays["features"]
    n = len(arrays["pids"])
    if f.ndim != 2 or f.shape[0] != n:
        raise EvaluationError(f"{where}: features have shape {f.shape} but there are {n} pids")
    for key in ("camids", "images"):
        if key in arrays and arrays[key] is not None and len(arrays[key]) != n:
            raise EvaluationError(f"{where}: '{key}' has {len(arrays[key])} entries for {n} rows")


def load_features(path: str | Path, split: str | None = None, *, split_if_present: str | None = None) -> FeatureFile:
    """Read a feature file (``.npz``, ``.pt``/``.pth``, or a ``muva extract`` output).

    ``muva extract`` outputs label each row with its split (``query``, ``gallery``,
    ``train``): ``split`` keeps the rows of one split (an error when it has none);
    ``split_if_present`` does the same only when the output has rows of that split,
    and keeps all rows otherwise (e.g. a folder of images without splits).
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"feature file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    elif path.suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict):
            raise EvaluationError(f"{path}: expected a dict with 'features' and 'pids', got {type(obj).__name__}")
        arrays = {k: (list(v) if k == "images" else to_numpy(v, name=k)) for k, v in obj.items()}
    elif path.is_dir() or path.suffix == ".safetensors":
        return _load_extracted(path, split, split_if_present)
    else:
        raise EvaluationError(f"{path}: unknown feature file type {path.suffix!r} (use .npz, .pt, or a `muva extract` folder)")
    if split is not None:
        raise EvaluationError(f"{path}: only `muva extract` outputs carry splits; drop the split option for this file")
    _validate(arrays, str(path))
    cams = arrays.get("camids")
    images = arrays.get("images")
    return FeatureFile(
        features=arrays["features"],
        pids=np.asarray(arrays["pids"]).astype(np.int64),
        camids=None if cams is None else np.asarray(cams).astype(np.int64),
        images=None if images is None else [str(x) for x in images],
        path=str(path),
    )


def _read_extracted(path: Path):
    from muva.utils import featurefiles  # the reader of `muva extract` folders, shared with muva.inference

    return featurefiles.load_features(path)


def _load_extracted(path: Path, split: str | None = None, split_if_present: str | None = None, fs=None) -> FeatureFile:
    """Rows of a ``muva extract`` output as a FeatureFile (``fs``: the already read FeatureSet)."""
    if fs is None:
        fs = _read_extracted(path)
    if split is None and split_if_present is not None and split_if_present in set(fs.splits):
        split = split_if_present
    if split is not None:
        from muva.utils.featurefiles import FeatureFileError

        try:
            fs = fs.split(split)
        except FeatureFileError as exc:
            raise EvaluationError(f"{path}: {exc}") from exc
    pids = np.asarray(fs.pids, dtype=np.int64)
    cams = np.asarray(fs.camids, dtype=np.int64)
    return FeatureFile(features=fs.features, pids=pids, camids=None if np.all(cams == -1) else cams,
                       images=list(fs.paths), path=str(path))


def load_query_gallery(query: str | Path, gallery: str | Path, query_split: str | None = None,
                       gallery_split: str | None = None) -> tuple[FeatureFile, FeatureFile]:
    """Query and gallery rows, as :func:`load_features` reads them with ``split_if_present``
    ``"query"`` / ``"gallery"``; one ``muva extract`` folder given for both is read once."""
    q, g = Path(query), Path(gallery)
    if (q.is_dir() or q.suffix == ".safetensors") and q.resolve() == g.resolve():
        fs = _read_extracted(q)
        return (_load_extracted(q, query_split, "query", fs=fs), _load_extracted(g, gallery_split, "gallery", fs=fs))
    return (load_features(q, query_split, split_if_present="query"),
            load_features(g, gallery_split, split_if_present="gallery"))

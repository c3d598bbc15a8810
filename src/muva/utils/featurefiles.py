"""Extracted features on disk, and their one reader: :func:`load_features` → :class:`FeatureSet`.

A feature folder (what ``muva extract ... -o OUT`` writes, with
:class:`~muva.utils.featurewriter.FeatureWriter`)::

    OUT/
      features.json            manifest: format, version, dim, dtype, extractor and source
                               description, shards with row counts, complete flag
      features-00000.safetensors   tensor "features": rows × dim float32, L2-normalised
      features-00001.safetensors   ... (``shard_size`` rows each, the last may be shorter)
      metadata.csv             one line per feature row, in row order:
                               row,path,pid,camid,split,dataset
      failed.csv               unreadable images: path,error (only when there were some)

While extraction runs, each finished shard also has ``metadata-NNNNN.csv``; a shard
counts only once the manifest lists it, so an interrupted run resumes after the last
listed shard.  ``pid`` and ``camid`` are -1 when unknown (plain folders).

A single feature file — ``.npz`` (``numpy.savez``, :func:`muva.evaluation.io.save_features`),
``.safetensors``, or ``.pt`` / ``.pth`` (``torch.save`` of a dict) — holds:

==========  ===========================  =========================================
key         shape / dtype                meaning
==========  ===========================  =========================================
features    N × D, float (or D)          one row per image (read as float32)
pids        N, integer (optional)        identity of each row
camids      N, integer (optional)        0-based camera; omit or -1 = unknown
images      N, str (optional)            image identifiers (paths)
==========  ===========================  =========================================

Without ``pids``, the rows' metadata comes from ``<stem>.csv`` beside the file (columns
as in ``metadata.csv``) when there is one, else the rows are named ``0, 1, ...``.
:attr:`FeatureSet.missing` names what the file did not hold.

A low-level module (numpy and safetensors only): :mod:`muva.inference` (``muva extract``,
``muva search``), :mod:`muva.viz` and :mod:`muva.evaluation` (``muva evaluate-features``)
all read features with :func:`load_features`.  A set saved as a folder loads back row
for row:

    >>> import tempfile
    >>> fs = FeatureSet(np.eye(3, dtype=np.float32), ["q/a.jpg", "g/b.jpg", "g/c.jpg"], pids=[1, 1, 2],
    ...                 splits=["query", "gallery", "gallery"])
    >>> tmp = tempfile.TemporaryDirectory()
    >>> again = load_features(fs.save(tmp.name + "/feats"))
    >>> len(again), again.names, again.split("gallery").pids.tolist()
    (3, ['a.jpg', 'b.jpg', 'c.jpg'], [1, 2])
    >>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from safetensors.numpy import load_file as read_safetensors_file

from muva.utils.featurewriter import (
    COLUMNS,
    FAILED,
    FORMAT,
    MANIFEST,
    METADATA,
    VERSION,
    FeatureFileError,
    FeatureWriter,
    read_json_file,
)
from muva.utils.tensorfiles import safetensors_problem

__all__ = [
    "COLUMNS",
    "FAILED",
    "FORMAT",
    "MANIFEST",
    "METADATA",
    "VERSION",
    "FeatureFileError",
    "FeatureSet",
    "FeatureWriter",
    "check_feature_arrays",
    "iter_feature_shards",
    "load_features",
    "read_manifest",
    "read_safetensors",
]

#: the columns a single file may lack (see :attr:`FeatureSet.missing`)
OPTIONAL_COLUMNS = ("paths", "pids", "camids")


@dataclass
class FeatureSet:
    """Features with their metadata, row-aligned.

    ``missing`` names the columns (``paths``, ``pids``, ``camids``) that the file read
    did not hold: their values are placeholders (row numbers, -1).

    >>> fs = FeatureSet(np.eye(2, dtype=np.float32), ["a.jpg", "b.jpg"], pids=[1, 2], camids=[0, 1])
    >>> len(fs), fs.dim, fs.names
    (2, 2, ['a.jpg', 'b.jpg'])
    """

    features: np.ndarray
    paths: list[str]
    pids: np.ndarray | Sequence[int] | None = None
    camids: np.ndarray | Sequence[int] | None = None
    splits: list[str] | None = None
    datasets: list[str] | None = None
    meta: dict = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        n = len(self.paths)
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise FeatureFileError(f"features of shape {self.features.shape} do not match {n} paths")
        self.pids = np.full(n, -1, dtype=np.int64) if self.pids is None else np.asarray(self.pids, dtype=np.int64)
        self.camids = np.full(n, -1, dtype=np.int64) if self.camids is None else np.asarray(self.camids, dtype=np.int64)
        self.splits = [""] * n if self.splits is None else list(self.splits)
        self.datasets = [""] * n if self.datasets is None else list(self.datasets)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def names(self) -> list[str]:
        """File names (without folders)."""
        return [os.path.basename(p) for p in self.paths]

    def select(self, index: Sequence[int] | np.ndarray) -> "FeatureSet":
        index = np.asarray(index, dtype=np.int64)
        return FeatureSet(
            self.features[index],
            [self.paths[i] for i in index],
            self.pids[index],  # type: ignore[index]
            self.camids[index],  # type: ignore[index]
            [self.splits[i] for i in index],  # type: ignore[index]
            [self.datasets[i] for i in index],  # type: ignore[index]
            dict(self.meta),
            self.missing,
        )

    def split(self, name: str) -> "FeatureSet":
        """Rows of one split (``query``, ``gallery``, ``train``, or ``""`` for folders)."""
        idx = [i for i, s in enumerate(self.splits) if s == name]  # type: ignore[union-attr]
        if not idx:
            have = sorted(set(self.splits))  # type: ignore[arg-type]
            hint = " (rows extracted from a plain folder have split '': pass '' to use them all)" if have == [""] else ""
            raise FeatureFileError(f"no rows of split {name!r}; this feature set has {', '.join(map(repr, have))}{hint}")
        return self.select(idx)

    def rows(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield {
                "row": i,
                "path": self.paths[i],
                "pid": int(self.pids[i]),  # type: ignore[index]
                "camid": int(self.camids[i]),  # type: ignore[index]
                "split": self.splits[i],  # type: ignore[index]
                "dataset": self.datasets[i],  # type: ignore[index]
            }

    def save(self, out_dir: str | Path, *, shard_size: int = 65536) -> Path:
        """Write this set as a feature folder (see the module docstring)."""
        writer = FeatureWriter(out_dir, dim=self.dim, shard_size=shard_size, resume=False, meta=self.meta)
        writer.add(list(self.rows()), self.features)
        writer.close()
        return Path(out_dir)


# ----------------------------------------------------------------------------- folders
def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise FeatureFileError(f"{folder} is not a feature folder (no {MANIFEST}); create one with `muva extract CHECKPOINT DATA -o {folder}`")
    manifest = read_json_file(path)
    if manifest.get("format") != FORMAT:
        raise FeatureFileError(f"{path} is not a muva feature manifest")
    return manifest


def read_safetensors(path: str | Path, where: str = "") -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` feature file; a missing, truncated or corrupt one is a :class:`FeatureFileError`."""
    path = Path(path)
    fix = f"copy the folder again, or extract afresh with `muva extract ... -o {where} --overwrite`" if where else "copy it again"
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} is missing{f' (listed in {where}/{MANIFEST})' if where else ''}; {fix}")
    try:
        return read_safetensors_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        problem = safetensors_problem(path) or f"corrupt ({str(exc)[:200]})"
        raise FeatureFileError(f"{path} is not a readable feature file: {problem}. It was probably cut short while "
                               f"being copied or written; {fix}") from None


def iter_feature_shards(folder: str | Path) -> Iterator[np.ndarray]:
    """Yield the feature matrix of each shard in row order (bounded memory for big sets)."""
    folder = Path(folder)
    for s in read_manifest(folder)["shards"]:
        arrays = read_safetensors(folder / s["file"], where=str(folder))
        feats = arrays.get("features")
        if feats is None or feats.ndim != 2 or len(feats) != int(s["rows"]):
            got = "no 'features' array" if feats is None else f"an array of shape {tuple(feats.shape)}"
            raise FeatureFileError(f"{folder / s['file']} holds {got}, the manifest lists {s['rows']} rows; the folder "
                                   f"is inconsistent: extract afresh with `muva extract ... -o {folder} --overwrite`")
        yield feats


def _read_rows(csv_path: Path) -> list[dict]:
    try:
        with open(csv_path, newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FeatureFileError(f"cannot read the feature metadata {csv_path} ({exc}); copy it again") from None


def _from_rows(features: np.ndarray, rows: list[dict], meta: dict, source: Path, missing: tuple[str, ...] = ()) -> FeatureSet:
    if len(rows) != len(features):
        raise FeatureFileError(f"{source}: {len(features)} feature rows but {len(rows)} metadata rows")
    return FeatureSet(
        features,
        [r["path"] for r in rows],
        [int(r.get("pid", -1) or -1) for r in rows],
        [int(r.get("camid", -1) or -1) for r in rows],
        [r.get("split", "") or "" for r in rows],
        [r.get("dataset", "") or "" for r in rows],
        meta,
        missing,
    )


def _load_folder(path: Path, allow_incomplete: bool) -> FeatureSet:
    manifest = read_manifest(path)
    if not manifest.get("complete") and not allow_incomplete:
        raise FeatureFileError(f"{path} is an unfinished extraction ({manifest['num_rows']} rows so far); rerun the same `muva extract` command to resume it")
    chunks = list(iter_feature_shards(path))
    feats = np.concatenate(chunks) if chunks else np.zeros((0, int(manifest["dim"])), dtype=np.float32)
    if manifest.get("complete"):
        rows = _read_rows(path / METADATA)
    else:
        rows = [r for s in manifest["shards"] for r in _read_rows(path / s["metadata"])]
    return _from_rows(feats, rows, manifest.get("meta", {}), path)


# ----------------------------------------------------------------------------- single files
def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FeatureFileError(f"{path} is not a readable .npz file (truncated or corrupt: {str(exc)[:150]}); copy it again") from None


def _read_torch(path: Path) -> dict:
    import torch  # only .pt files need torch: folders, .npz and .safetensors are read without importing it

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds (pickle, zip, runtime)
        raise FeatureFileError(f"{path} is not a readable .pt feature file ({str(exc).splitlines()[0][:150]}): save a dict "
                               "of tensors with torch.save, or copy the file again if it was cut short") from None
    if not isinstance(obj, dict):
        raise FeatureFileError(f"{path}: expected a dict with 'features' and 'pids', got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if k == "images":
            out[k] = [str(x) for x in v]
        elif isinstance(v, torch.Tensor):
            out[k] = (v.detach().float() if v.is_floating_point() else v.detach()).cpu().numpy()
        else:
            out[k] = np.asarray(v)
    return out


def _from_arrays(path: Path, arrays: dict) -> FeatureSet:
    """Rows of a single file: identities from its arrays, else from ``<stem>.csv``, else numbered."""
    if "features" not in arrays:
        raise FeatureFileError(
            f"{path} has no 'features' array (found {sorted(arrays)}): a feature file holds 'features' (N × D) and "
            "'pids' (N), optionally 'camids' and 'images' (see docs/evaluation.md, 'Feature files')"
        )
    feats = np.asarray(arrays["features"], dtype=np.float32)
    if feats.ndim == 1:
        feats = feats[None]
    if "pids" not in arrays:
        side = path.with_suffix(".csv")
        if not side.exists():
            return _from_rows(feats, [{"path": str(i)} for i in range(len(feats))], {}, path, OPTIONAL_COLUMNS)
        rows = _read_rows(side)
        header = set(rows[0]) if rows else set()
        if rows and "path" not in header:
            raise FeatureFileError(f"{side} has no 'path' column (columns: {', '.join(sorted(header))}); see the columns of {METADATA}")
        missing = tuple(name for name, col in (("pids", "pid"), ("camids", "camid")) if col not in header)
        return _from_rows(feats, rows, {}, path, missing)
    check_feature_arrays({**arrays, "features": feats}, str(path))
    images = arrays.get("images")
    missing = (("paths",) if images is None else ()) + (("camids",) if "camids" not in arrays else ())
    return FeatureSet(
        feats,
        [str(i) for i in range(len(feats))] if images is None else [str(x) for x in images],
        np.asarray(arrays["pids"]).astype(np.int64),
        None if "camids" not in arrays else np.asarray(arrays["camids"]).astype(np.int64),
        missing=missing,
    )


def check_feature_arrays(arrays: Mapping[str, Any], where: str) -> None:
    """The rows of a single-file feature set agree: one ``pids`` (and ``camids`` / ``images``) entry per feature row."""
    feats, n = arrays["features"], len(arrays["pids"])
    if feats.ndim != 2 or feats.shape[0] != n:
        raise FeatureFileError(f"{where}: features have shape {feats.shape} but there are {n} pids")
    for key in ("camids", "images"):
        if key in arrays and len(arrays[key]) != n:
            raise FeatureFileError(f"{where}: '{key}' has {len(arrays[key])} entries for {n} rows")


def load_features(path: str | Path, *, allow_incomplete: bool = False) -> FeatureSet:
    """Read features: a feature folder, or a ``.npz`` / ``.safetensors`` / ``.pt`` file (see the module docstring).

    ``allow_incomplete`` reads the shards an unfinished extraction has written so far.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, allow_incomplete)
    if not path.exists():
        raise FeatureFileError(f"feature file not found: {path}")
    if path.suffix == ".safetensors":
        arrays: dict = read_safetensors(path)
    elif path.suffix == ".npz":
        arrays = _read_npz(path)
    elif path.suffix in (".pt", ".pth"):
        arrays = _read_torch(path)
    else:
        raise FeatureFileError(f"{path}: unknown feature file type {path.suffix!r} (use a `muva extract` folder, "
                               ".npz, .safetensors or .pt)")
    return _from_arrays(path, arrays)

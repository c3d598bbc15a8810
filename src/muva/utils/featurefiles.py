"""The on-disk format of extracted features, written resumably, and its reader.

A feature folder (what ``muva extract ... -o OUT`` writes)::

    OUT/
      features.json            manifest: format, version, dim, dtype, extractor and source
                               description, shards with row counts, complete flag
      features-00000.safetensors   tensor "features": rows × dim float32, L2-normalised
      features-00001.safetensors   ... (``shard_size`` rows each, the last may be shorter)
      metadata.csv             one line per feature row, in row order:
                               row,path,pid,camid,split,dataset
      failed.csv               unreadable images: path,error (only when there were some)

While extraction runs, each finished shard also has ``metadata-NNNNN.csv``; a shard
counts only once the manifest lists it (the manifest is rewritten atomically after the
shard's two files are on disk), so an interrupted run resumes after the last listed
shard and never reads a half-written one.  On completion the shard CSVs are merged
into ``metadata.csv`` and the manifest gets ``"complete": true``.

``pid`` is -1 and ``camid`` -1 when unknown (plain folders).  Plain ``.safetensors`` /
``.npz`` files holding a ``features`` array (with an optional ``<stem>.csv`` beside
them) can be loaded too.

A low-level module (numpy and safetensors only): ``muva extract`` writes folders through
:mod:`muva.inference.features` (which re-exports this module), and :mod:`muva.evaluation`
reads them with the same reader.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from muva.utils.io import atomic_write, atomic_write_text
from muva.utils.errors import MuvaError

FORMAT = "muva-features"
VERSION = 1
MANIFEST = "features.json"
METADATA = "metadata.csv"
FAILED = "failed.csv"
COLUMNS = ("row", "path", "pid", "camid", "split", "dataset")


class FeatureFileError(MuvaError, ValueError):
    """A feature file or folder that cannot be read (says what was expected)."""


@dataclass
class FeatureSet:
    """Features with their metadata, row-aligned.

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


# ----------------------------------------------------------------------------- writing
def _shard_name(i: int) -> str:
    return f"features-{i:05d}.safetensors"


def _meta_name(i: int) -> str:
    return f"metadata-{i:05d}.csv"


def _csv_text(rows: Iterable[dict], columns: Sequence[str] = COLUMNS, header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


class FeatureWriter:
    """Append features shard by shard into a feature folder; resumable.

    Args:
        out_dir: the feature folder.
        dim: feature dimension.
        shard_size: rows per shard file.
        resume: keep the shards of an earlier, interrupted run with the same ``dim``
            (``done_paths`` says which images they cover); ``False`` starts afresh.
        meta: JSON-ready description stored in the manifest (extractor, source, ...).
    """

    def __init__(self, out_dir: str | Path, *, dim: int, shard_size: int = 8192, resume: bool = True, meta: dict | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.shard_size = int(shard_size)
        self.meta = dict(meta or {})
        self.manifest: dict = {}
        self.failed: dict[str, str] = {}
        self.done_paths: set[str] = set()
        self._rows = 0
        self._buf_rows: list[dict] = []
        self._buf_feats: list[np.ndarray] = []
        manifest_path = self.dir / MANIFEST
        if resume and manifest_path.exists():
            self._resume(_json_file(manifest_path))
        else:
            self._clear()
            self.manifest = {"format": FORMAT, "version": VERSION, "dim": self.dim, "dtype": "float32", "normalized": True,
                             "meta": self.meta, "shards": [], "num_rows": 0, "num_failed": 0, "complete": False}

    def _clear(self) -> None:
        for p in self.dir.iterdir():
            if re.fullmatch(r"(features-\d+\.safetensors|metadata-\d+\.csv|features\.json|metadata\.csv|failed\.csv)", p.name):
                p.unlink()

    def _resume(self, manifest: dict) -> None:
        if manifest.get("format") != FORMAT:
            raise FeatureFileError(f"{self.dir} holds a {MANIFEST} that is not a muva feature manifest; choose another -o folder")
        if int(manifest["dim"]) != self.dim:
            raise FeatureFileError(
                f"{self.dir} holds {manifest['dim']}-d features but this model gives {self.dim}-d; use another -o folder or --overwrite"
            )
        self.manifest = manifest
        self.manifest["complete"] = False
        listed = {s["file"] for s in manifest["shards"]} | {s["metadata"] for s in manifest["shards"]}
        for p in self.dir.iterdir():  # files of a shard that never made it into the manifest
            if re.fullmatch(r"(features-\d+\.safetensors|metadata-\d+\.csv)", p.name) and p.name not in listed:
                p.unlink()
        if (self.dir / METADATA).exists() and all(not (self.dir / s["metadata"]).exists() for s in manifest["shards"]):
            self._split_merged_metadata()
        for s in manifest["shards"]:
            with open(self.dir / s["metadata"], newline="") as fh:
                for r in csv.DictReader(fh):
                    self.done_paths.add(r["path"])
        self._rows = int(manifest["num_rows"])
        if (self.dir / FAILED).exists():
            with open(self.dir / FAILED, newline="") as fh:
                self.failed = {r["path"]: r["error"] for r in csv.DictReader(fh)}
        self.done_paths |= set(self.failed)

    def _split_merged_metadata(self) -> None:
        """A completed folder being extended: recreate the per-shard CSVs from metadata.csv."""
        with open(self.dir / METADATA, newline="") as fh:
            rows = list(csv.DictReader(fh))
        start = 0
        for s in self.manifest["shards"]:
            atomic_write_text(self.dir / s["metadata"], _csv_text(rows[start : start + s["rows"]]))
            start += s["rows"]

    def add(self, rows: list[dict], features: np.ndarray) -> None:
        """Queue rows (dicts with path, pid, camid, split, dataset) and their features."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape != (len(rows), self.dim):
            raise FeatureFileError(f"got {features.shape} features for {len(rows)} rows of dim {self.dim}")
        self._buf_rows.extend(rows)
        self._buf_feats.append(features)
        while len(self._buf_rows) >= self.shard_size:
            self._flush(self.shard_size)

    def add_failed(self, path: str, error: str) -> None:
        self.failed[str(path)] = error

    def _flush(self, n: int) -> None:
        from safetensors.numpy import save as st_save

        if n == 0:
            return
        feats = np.concatenate(self._buf_feats) if len(self._buf_feats) > 1 else self._buf_feats[0]
        rows, self._buf_rows = self._buf_rows[:n], self._buf_rows[n:]
        chunk, rest = feats[:n], feats[n:]
        self._buf_feats = [rest] if len(rest) else []
        for j, r in enumerate(rows):
            r["row"] = self._rows + j
        i = len(self.manifest["shards"])
        with atomic_write(self.dir / _shard_name(i)) as fh:
            fh.write(st_save({"features": np.ascontiguousarray(chunk)}))
        atomic_write_text(self.dir / _meta_name(i), _csv_text(rows))
        self._rows += n
        self.done_paths.update(r["path"] for r in rows)
        self.manifest["shards"].append({"file": _shard_name(i), "metadata": _meta_name(i), "rows": n})
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.manifest["num_rows"] = self._rows
        self.manifest["num_failed"] = len(self.failed)
        if self.meta:
            self.manifest["meta"] = {**self.manifest.get("meta", {}), **self.meta}
        if self.failed:
            atomic_write_text(self.dir / FAILED, _csv_text(({"path": p, "error": e} for p, e in self.failed.items()), ("path", "error")))
        atomic_write_text(self.dir / MANIFEST, json.dumps(self.manifest, indent=2))

    def checkpoint(self) -> None:
        """Persist the failed-image list (shards persist themselves as they fill)."""
        self._write_manifest()

    def close(self) -> Path:
        """Flush the last partial shard, merge the metadata CSVs, mark the folder complete."""
        self._flush(len(self._buf_rows))
        parts = []
        for k, s in enumerate(self.manifest["shards"]):
            text = (self.dir / s["metadata"]).read_text()
            parts.append(text if k == 0 else text.split("\n", 1)[1])
        atomic_write_text(self.dir / METADATA, "".join(parts) if parts else _csv_text([]))
        self.manifest["complete"] = True
        self._write_manifest()
        for s in self.manifest["shards"]:
            (self.dir / s["metadata"]).unlink(missing_ok=True)
        return self.dir


# ----------------------------------------------------------------------------- reading
def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FeatureFileError(f"{path} is unreadable ({str(exc)[:150]}): the manifest is truncated or corrupt. Copy the "
                               "folder again, or extract afresh with `muva extract ... --overwrite`") from None
    return data if isinstance(data, dict) else {}


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise FeatureFileError(f"{folder} is not a feature folder (no {MANIFEST}); create one with `muva extract CHECKPOINT DATA -o {folder}`")
    manifest = _json_file(path)
    if manifest.get("format") != FORMAT:
        raise FeatureFileError(f"{path} is not a muva feature manifest")
    return manifest


def read_safetensors(path: str | Path, where: str = "") -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` feature file; a missing, truncated or corrupt one is a :class:`FeatureFileError`."""
    from safetensors.numpy import load_file

    path = Path(path)
    fix = f"copy the folder again, or extract afresh with `muva extract ... -o {where} --overwrite`" if where else "copy it again"
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} is missing{f' (listed in {where}/{MANIFEST})' if where else ''}; {fix}")
    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        from muva.utils.tensorfiles import safetensors_problem  # only now: it says what exactly is wrong

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


def _from_rows(features: np.ndarray, rows: list[dict], meta: dict, source: Path) -> FeatureSet:
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
    )


def load_features(path: str | Path, *, allow_incomplete: bool = False) -> FeatureSet:
    """Load a feature folder, or a ``.safetensors`` / ``.npz`` file with a ``features`` array.

    For single files, metadata comes from ``<stem>.csv`` beside the file when present
    (columns as in ``metadata.csv``), else the rows are named ``0, 1, ...``.
    """
    path = Path(path)
    if path.is_dir():
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
    if not path.exists():
        raise FeatureFileError(f"feature file {path} does not exist")
    if path.suffix == ".safetensors":
        arrays = read_safetensors(path)
    elif path.suffix == ".npz":
        import zipfile

        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise FeatureFileError(f"{path} is not a readable .npz file (truncated or corrupt: {str(exc)[:150]}); copy it again") from None
    else:
        raise FeatureFileError(f"{path}: expected a feature folder, a .safetensors or a .npz file")
    if "features" not in arrays:
        raise FeatureFileError(f"{path} has no 'features' array (has: {', '.join(arrays) or 'nothing'})")
    feats = np.asarray(arrays["features"], dtype=np.float32)
    if feats.ndim == 1:
        feats = feats[None]
    side = path.with_suffix(".csv")
    rows = _read_rows(side) if side.exists() else [{"path": str(i)} for i in range(len(feats))]
    return _from_rows(feats, rows, {}, path)


__all__ = [
    "FeatureFileError",
    "FeatureSet",
    "FeatureWriter",
    "iter_feature_shards",
    "load_features",
    "read_manifest",
    "read_safetensors",
]

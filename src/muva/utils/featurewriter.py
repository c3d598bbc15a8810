"""Writing feature folders (``muva extract ... -o OUT``), shard by shard and resumably.

This module defines the folder's names (:data:`MANIFEST`, :data:`METADATA`,
:data:`FAILED`, the shard files), its metadata columns and its error,
:class:`FeatureFileError`; :mod:`muva.utils.featurefiles` describes the format and reads
it back (and re-exports everything here).

Each finished shard has its ``features-NNNNN.safetensors`` and ``metadata-NNNNN.csv``
on disk before the manifest, rewritten atomically, lists it; an interrupted run
therefore resumes after the last listed shard and never reads a half-written one.
:meth:`FeatureWriter.close` merges the shard CSVs into ``metadata.csv`` and marks the
manifest ``"complete": true``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from safetensors.numpy import save as safetensors_bytes

from muva.utils.errors import MuvaError
from muva.utils.io import atomic_write, atomic_write_text

__all__ = ["COLUMNS", "FAILED", "FORMAT", "MANIFEST", "METADATA", "VERSION", "FeatureFileError", "FeatureWriter",
           "read_json_file"]

FORMAT = "muva-features"
VERSION = 1
MANIFEST = "features.json"
METADATA = "metadata.csv"
FAILED = "failed.csv"
COLUMNS = ("row", "path", "pid", "camid", "split", "dataset")


class FeatureFileError(MuvaError, ValueError):
    """A feature file or folder that cannot be read (says what was expected)."""


def shard_name(i: int) -> str:
    return f"features-{i:05d}.safetensors"


def shard_metadata_name(i: int) -> str:
    return f"metadata-{i:05d}.csv"


def csv_text(rows: Iterable[dict], columns: Sequence[str] = COLUMNS, header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def read_json_file(path: Path) -> dict:
    """A manifest's JSON; a truncated or corrupt one is a :class:`FeatureFileError` saying how to recover."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FeatureFileError(f"{path} is unreadable ({str(exc)[:150]}): the manifest is truncated or corrupt. Copy the "
                               "folder again, or extract afresh with `muva extract ... --overwrite`") from None
    return data if isinstance(data, dict) else {}


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
            self._resume(read_json_file(manifest_path))
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
            atomic_write_text(self.dir / s["metadata"], csv_text(rows[start : start + s["rows"]]))
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
        if n == 0:
            return
        feats = np.concatenate(self._buf_feats) if len(self._buf_feats) > 1 else self._buf_feats[0]
        rows, self._buf_rows = self._buf_rows[:n], self._buf_rows[n:]
        chunk, rest = feats[:n], feats[n:]
        self._buf_feats = [rest] if len(rest) else []
        for j, r in enumerate(rows):
            r["row"] = self._rows + j
        i = len(self.manifest["shards"])
        with atomic_write(self.dir / shard_name(i)) as fh:
            fh.write(safetensors_bytes({"features": np.ascontiguousarray(chunk)}))
        atomic_write_text(self.dir / shard_metadata_name(i), csv_text(rows))
        self._rows += n
        self.done_paths.update(r["path"] for r in rows)
        self.manifest["shards"].append({"file": shard_name(i), "metadata": shard_metadata_name(i), "rows": n})
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.manifest["num_rows"] = self._rows
        self.manifest["num_failed"] = len(self.failed)
        if self.meta:
            self.manifest["meta"] = {**self.manifest.get("meta", {}), **self.meta}
        if self.failed:
            atomic_write_text(self.dir / FAILED, csv_text(({"path": p, "error": e} for p, e in self.failed.items()), ("path", "error")))
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
        atomic_write_text(self.dir / METADATA, "".join(parts) if parts else csv_text([]))
        self.manifest["complete"] = True
        self._write_manifest()
        for s in self.manifest["shards"]:
            (self.dir / s["metadata"]).unlink(missing_ok=True)
        return self.dir

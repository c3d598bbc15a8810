"""The persistent, editable gallery of ``muva serve``: features, metadata, a journal, a faiss index.

A gallery has a *base* (a feature folder written by ``muva extract``; read-only here) and a
*state* folder that records what the service changed::

    STATE/journal.jsonl        one JSON line per acknowledged change, fsync'd before the reply
    STATE/images/<id>.<ext>    images added through the service (gallery-owned copies)
    STATE/vectors/<id>.npz     their feature vector and predicted part masks

An add writes the image and the vectors first (atomic writes: temporary file, fsync, rename),
then appends ``{"op": "add", "items": [...]}`` to the journal and fsyncs it; only then is it
acknowledged.  A delete appends ``{"op": "delete", "id": ...}``.  On start the journal is
replayed over the base.  A crash (``kill -9``) before the journal line is complete leaves at
most files no line names (removed at the next start) and a torn last line (dropped, and cut
off the journal): nothing acknowledged is lost, nothing half-written is used.  One request is
one line, so a multi-image add is all or nothing.

Ids: base rows are ``g<row>`` (the row of the feature folder), added images 16 hex digits.
The in-memory index grows by ``add``; deletions are tombstones filtered out of results (the
index is rebuilt when they pile up), which works for every faiss kind (HNSW cannot remove).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from muva.inference.search import GalleryIndex, factory_string
from muva.utils.featurefiles import MANIFEST, load_features, read_manifest
from muva.utils.errors import MuvaError
from muva.utils.io import atomic_write

__all__ = ["Gallery", "GalleryError", "INDEX_KINDS", "Hit"]

log = logging.getLogger("muva.serve")

INDEX_KINDS = {"exact": "flat", "ivf": "ivf", "hnsw": "hnsw"}  # --index → muva.inference.search kind
JOURNAL = "journal.jsonl"


class GalleryError(MuvaError, ValueError):
    """A gallery state that cannot be used (a journal line that names a missing file, ...)."""


class Hit(dict):
    """One search result: id, pid, camid, distance."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Gallery:
    """Gallery vectors + metadata in memory, a faiss index over them, changes journaled to ``state``."""

    def __init__(self, base: str | Path | None, state: str | Path, *, index: str = "exact", dim: int | None = None,
                 mask_cache: int = 4096):
        if index not in INDEX_KINDS:
            raise GalleryError(f"unknown index {index!r}; choose from {', '.join(INDEX_KINDS)}")
        self.kind = index
        self.state = Path(state)
        (self.state / "images").mkdir(parents=True, exist_ok=True)
        (self.state / "vectors").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.ids: list[str] = []
        self.pids: list[int] = []
        self.camids: list[int] = []
        self.paths: list[str] = []  # image file of each row
        self.names: list[str] = []  # the file name shown to users
        self.row_of: dict[str, int] = {}
        self.deleted: set[int] = set()
        self.masks: OrderedDict[str, np.ndarray] = OrderedDict()  # id → (parts, patches) uint8, LRU
        self.mask_cache = int(mask_cache)
        self.stored_masks: dict[str, np.ndarray] = {}  # masks of added images (kept with their vectors)
        chunks: list[np.ndarray] = []
        if base is not None:
            fs = load_features(base)
            chunks.append(fs.features)
            for i, p in enumerate(fs.paths):
                self._append_meta(f"g{i}", int(fs.pids[i]), int(fs.camids[i]), str(p), Path(str(p)).name)
            dim = fs.dim
        self.dim = dim
        self.features = np.concatenate(chunks) if chunks else np.zeros((0, dim or 0), np.float32)
        self._replay()
        self.index: GalleryIndex | None = None
        self._index_rows = np.zeros(0, dtype=np.int64)  # index position → row
        self._rebuild()

    # ------------------------------------------------------------------ rows
    def _append_meta(self, gid: str, pid: int, camid: int, path: str, name: str) -> None:
        self.row_of[gid] = len(self.ids)
        self.ids.append(gid)
        self.pids.append(pid)
        self.camids.append(camid)
        self.paths.append(path)
        self.names.append(name)

    def __len__(self) -> int:
        return len(self.ids) - len(self.deleted)

    def __contains__(self, gid: str) -> bool:
        row = self.row_of.get(gid)
        return row is not None and row not in self.deleted

    def item(self, gid: str) -> dict:
        row = self.row_of[gid]
        return {"id": gid, "pid": self.pids[row], "camid": self.camids[row], "path": self.paths[row], "filename": self.names[row]}

    # ------------------------------------------------------------------ journal
    def _replay(self) -> None:
        path = self.state / JOURNAL
        live_files: set[str] = set()
        if path.exists():
            data = path.read_bytes()
            good = 0
            entries = []
            for raw in data.splitlines(keepends=True):
                if not raw.endswith(b"\n"):
                    break  # a torn last line: never acknowledged
                try:
                    entries.append(json.loads(raw))
                except ValueError:
                    break
                good += len(raw)
            gone = {e["id"] for e in entries if e.get("op") == "delete"}  # ids are never reused
            added_vecs: list[np.ndarray] = []
            for entry in entries:
                if entry.get("op") == "add":
                    for it in entry["items"]:
                        if it["id"] in gone:
                            continue  # added, then deleted: its files are removed below
                        vec_file = self.state / it["vectors"]
                        if not vec_file.is_file() or not (self.state / it["image"]).is_file():
                            raise GalleryError(f"{path} names {it['vectors']} and {it['image']}, but they are missing: "
                                               "the state folder was changed by hand")
                        with np.load(vec_file) as z:
                            added_vecs.append(np.asarray(z["feature"], np.float32)[None])
                            if "masks" in z.files:
                                self.stored_masks[it["id"]] = np.asarray(z["masks"], np.uint8)
                        self._append_meta(it["id"], int(it["pid"]), int(it["camid"]), str(self.state / it["image"]), it["filename"])
                        live_files |= {it["vectors"], it["image"]}
                elif entry.get("op") == "delete":
                    row = self.row_of.get(entry["id"])
                    if row is not None:
                        self.deleted.add(row)
            if good < len(data):
                log.warning("journal %s: dropped a torn last line (%d bytes, never acknowledged)", path, len(data) - good)
                with open(path, "r+b") as fh:
                    fh.truncate(good)
                    fh.flush()
                    os.fsync(fh.fileno())
            if added_vecs:
                vecs = np.concatenate(added_vecs)
                if self.dim is None:
                    self.dim = vecs.shape[1]
                    self.features = np.zeros((0, self.dim), np.float32)
                self.features = np.concatenate([self.features, vecs])
        for sub in ("images", "vectors"):  # files of adds that crashed before their journal line
            for f in (self.state / sub).iterdir():
                if f"{sub}/{f.name}" not in live_files:
                    f.unlink(missing_ok=True)

    def _journal(self, entry: dict) -> None:
        path = self.state / JOURNAL
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        new = not path.exists()
        with open(path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.state)

    # ------------------------------------------------------------------ changes
    def add(self, items: list[dict], features: np.ndarray, masks: np.ndarray | None) -> list[str]:
        """Add images: ``items`` of ``{"data": bytes, "ext": ".jpg", "filename", "pid", "camid"}``."""
        features = np.ascontiguousarray(features, dtype=np.float32).reshape(len(items), -1)
        if self.dim is not None and features.shape[1] != self.dim:
            raise GalleryError(f"features are {features.shape[1]}-d but the gallery holds {self.dim}-d ones")
        records = []
        for n, it in enumerate(items):
            gid = uuid.uuid4().hex[:16]
            image, vectors = f"images/{gid}{it['ext']}", f"vectors/{gid}.npz"
            with atomic_write(self.state / image) as fh:
                fh.write(it["data"])
            with atomic_write(self.state / vectors) as fh:
                arrays = {"feature": features[n]}
                if masks is not None:
                    arrays["masks"] = masks[n].astype(np.uint8)
                np.savez(fh, **arrays)
            records.append({"id": gid, "pid": int(it["pid"]), "camid": int(it["camid"]), "filename": it["filename"],
                            "image": image, "vectors": vectors})
        for sub in ("images", "vectors"):
            _fsync_dir(self.state / sub)
        with self.lock:
            self._journal({"op": "add", "items": records})  # the acknowledgement point
            start = len(self.ids)
            for n, r in enumerate(records):
                self._append_meta(r["id"], r["pid"], r["camid"], str(self.state / r["image"]), r["filename"])
                if masks is not None:
                    self.stored_masks[r["id"]] = masks[n].astype(np.uint8)
            if self.dim is None:
                self.dim = features.shape[1]
                self.features = np.zeros((0, self.dim), np.float32)
            self.features = np.concatenate([self.features, features])
            if self.index is None:
                self._rebuild()
            else:
                self.index.index.add(features)  # type: ignore[attr-defined]
                rows = np.concatenate([self._index_rows, np.arange(start, len(self.ids), dtype=np.int64)])
                self._index_rows = rows
                self.index.paths = np.asarray([self.ids[r] for r in rows], dtype=object)
                self.index.pids = np.asarray(self.pids, dtype=np.int64)[rows]
                self.index.camids = np.asarray(self.camids, dtype=np.int64)[rows]
        return [r["id"] for r in records]

    def delete(self, gid: str) -> None:
        with self.lock:
            if gid not in self:
                raise KeyError(gid)
            self._journal({"op": "delete", "id": gid})
            row = self.row_of[gid]
            self.deleted.add(row)
            self.masks.pop(gid, None)
            self.stored_masks.pop(gid, None)
            if len(self.deleted) > max(64, len(self.ids) // 5):
                self._rebuild()
        # the owned files of an added image go at the next start (orphans), not now: the journal decides

    # ------------------------------------------------------------------ index
    def _rebuild(self) -> None:
        """A fresh index over the live rows (the rows of deleted ones stay in the arrays, unindexed)."""
        live = np.asarray([r for r in range(len(self.ids)) if r not in self.deleted], dtype=np.int64)
        self._index_rows = live
        if len(live) == 0:
            self.index = None
            return
        feats = self.features[live]
        self.index = GalleryIndex.build(feats, [self.ids[r] for r in live], [self.pids[r] for r in live],
                                        [self.camids[r] for r in live], kind=INDEX_KINDS[self.kind])

    @property
    def factory(self) -> str:
        return self.index.info["factory"] if self.index is not None else factory_string(INDEX_KINDS[self.kind], n=max(len(self), 1))

    def search(self, queries: np.ndarray, k: int, *, cameras: set[int] | None = None, exclude_camera: int | None = None) -> list[list[Hit]]:
        """Top-``k`` live gallery items per query, filtered by camera; over-fetches until ``k`` survive."""
        with self.lock:
            if self.index is None:
                return [[] for _ in range(len(queries))]
            total = len(self.index)
            want = min(total, k + len(self.deleted) if cameras is None and exclude_camera is None else max(4 * k, 64))
            while True:
                res = self.index.search(queries, want)
                out, short = [], False
                for qi in range(res.indices.shape[0]):
                    hits: list[Hit] = []
                    for j, sim in zip(res.indices[qi], res.similarities[qi]):
                        if j < 0:
                            continue
                        row = int(self._index_rows[j])
                        if row in self.deleted:
                            continue
                        cam = self.camids[row]
                        if (cameras is not None and cam not in cameras) or (exclude_camera is not None and cam == exclude_camera):
                            continue
                        hits.append(Hit(id=self.ids[row], pid=self.pids[row], camid=cam, distance=float(1.0 - sim)))
                        if len(hits) == k:
                            break
                    short |= len(hits) < k
                    out.append(hits)
                if not short or want >= total:
                    return out
                want = min(total, want * 4)

    # ------------------------------------------------------------------ masks
    def cached_masks(self, gid: str) -> np.ndarray | None:
        if gid in self.stored_masks:
            return self.stored_masks[gid]
        m = self.masks.get(gid)
        if m is not None:
            self.masks.move_to_end(gid)
        return m

    def cache_masks(self, gid: str, masks: np.ndarray) -> None:
        self.masks[gid] = masks.astype(np.uint8)
        while len(self.masks) > self.mask_cache:
            self.masks.popitem(last=False)


def is_feature_folder(path: str | Path) -> bool:
    """Whether ``path`` is a feature folder written by ``muva extract`` (it holds the manifest)."""
    return (Path(path) / MANIFEST).is_file()


def feature_folder_complete(path: str | Path) -> bool:
    return bool(read_manifest(path).get("complete"))

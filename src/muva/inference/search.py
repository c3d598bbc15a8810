"""Gallery search with faiss: build an index from features, save it, query it.

Features are L2-normalised, so inner product = cosine similarity; results report the
cosine distance ``1 - similarity`` (the evaluation's metric) beside the file names.

Index kinds (``kind``) and their memory per gallery vector of dimension ``d``:

==========  ==========================================  ================================
kind        faiss factory                               bytes per vector (index only)
==========  ==========================================  ================================
flat        ``Flat`` (exact, default)                   ``4d``  (2048-d: 8,192)
ivf         ``IVF{nlist},Flat``                         ``4d + 8``
hnsw        ``HNSW{m},Flat``                            ``4d + 8m + ~16``  (m=32: 8,464)
flat-sq8    ``SQ8`` (8-bit scalar quantiser, exact scan) ``d``
ivf-sq8     ``IVF{nlist},SQ8``                          ``d + 8``   (2048-d: 2,056)
hnsw-sq8    ``HNSW{m},SQ8``                             ``d + 8m + ~16``
==========  ==========================================  ================================

Any other faiss factory string can be passed as ``factory=``.  The gallery metadata
(paths, identities, cameras) adds about the path length in bytes per vector.  A 1M
gallery of 2048-d features therefore needs ~8.2 GB as ``flat`` and ~2.1 GB as ``ivf-sq8``.

On disk an index folder holds ``index.faiss``, ``gallery.csv`` (row, path, pid, camid,
split, dataset) and ``index.json`` (kind, factory, dimension, size, search parameters).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> g = rng.normal(size=(100, 16)).astype("float32"); g /= np.linalg.norm(g, axis=1, keepdims=True)
>>> index = GalleryIndex.build(g, [f"g{i}.jpg" for i in range(100)])
>>> res = index.search(g[[7, 42]], k=3)
>>> [row[0] for row in res.names], bool(res.distances[0, 0] < 1e-5)
(['g7.jpg', 'g42.jpg'], True)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from muva.utils.errors import MuvaError
from muva.utils.featurefiles import FeatureSet, iter_feature_shards, load_features, read_manifest
from muva.utils.io import atomic_write_text
from muva.utils.progress import progress_bar

KINDS = ("flat", "ivf", "hnsw", "flat-sq8", "ivf-sq8", "hnsw-sq8")
INDEX_FILE = "index.faiss"
GALLERY_FILE = "gallery.csv"
INFO_FILE = "index.json"


class SearchError(MuvaError, ValueError):
    """An index or query that cannot be used (with what to do about it)."""


def _faiss():
    try:
        import faiss  # optional (muva[search]): only building, loading and saving an index need it
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise SearchError("gallery search needs faiss: pip install 'muva[search]' (faiss-cpu)") from exc
    return faiss


def default_nlist(n: int) -> int:
    """IVF cell count: about 4·√n, at least 1, at most n/39 (faiss' training minimum)."""
    return int(max(1, min(4 * math.sqrt(max(n, 1)), max(1, n // 39))))


def factory_string(kind: str, *, n: int, nlist: int | None = None, m: int = 32) -> str:
    """The faiss factory string of an index kind (see the module table)."""
    if kind not in KINDS:
        raise SearchError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)} (or pass a faiss factory string)")
    nlist = nlist or default_nlist(n)
    base, _, quant = kind.partition("-")
    code = "SQ8" if quant == "sq8" else "Flat"
    if base == "flat":
        return code
    if base == "ivf":
        return f"IVF{nlist},{code}"
    return f"HNSW{m},{code}"


def bytes_per_vector(factory: str, dim: int) -> float:
    """Estimated index memory per vector for a factory string (see the module table)."""
    f = factory.upper()
    code = dim if "SQ8" in f else (2 * dim if "SQFP16" in f else 4 * dim)
    if "PQ" in f:
        m = re.search(r"PQ(\d+)", f)
        code = int(m.group(1)) if m else code
    extra = 0.0
    if f.startswith("IVF"):
        extra += 8  # stored id per vector
    if f.startswith("HNSW"):
        m = int(re.match(r"HNSW(\d+)", f).group(1))  # type: ignore[union-attr]
        extra += 2 * m * 4 + 4 * m / max(m - 1, 1) + 12  # level-0 links, upper levels, level + offset
    return float(code + extra)


@dataclass
class SearchResult:
    """Top-k results of a batch of queries (row i = query i)."""

    indices: np.ndarray  # (nq, k) gallery rows, -1 where fewer than k were found
    similarities: np.ndarray  # (nq, k) inner products
    names: list[list[str]]  # (nq, k) gallery file paths
    pids: np.ndarray  # (nq, k)
    camids: np.ndarray  # (nq, k)
    seconds: float = 0.0

    @property
    def distances(self) -> np.ndarray:
        """Cosine distance ``1 - similarity`` (lower is closer)."""
        return 1.0 - self.similarities

    def to_rows(self, query_names: Sequence[str] | None = None) -> list[dict]:
        rows = []
        for qi in range(self.indices.shape[0]):
            for r in range(self.indices.shape[1]):
                if self.indices[qi, r] < 0:
                    continue
                rows.append({
                    "query": query_names[qi] if query_names is not None else qi,
                    "rank": r + 1,
                    "gallery": self.names[qi][r],
                    "distance": float(self.distances[qi, r]),
                    "pid": int(self.pids[qi, r]),
                    "camid": int(self.camids[qi, r]),
                })
        return rows


@dataclass
class GalleryIndex:
    """A faiss index over gallery features plus the gallery's paths, identities, cameras."""

    index: object
    paths: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    info: dict = field(default_factory=dict)
    splits: np.ndarray | None = None
    datasets: np.ndarray | None = None

    # ---------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        features: np.ndarray | Iterable[np.ndarray],
        paths: Sequence[str],
        pids: Sequence[int] | None = None,
        camids: Sequence[int] | None = None,
        *,
        kind: str = "flat",
        factory: str | None = None,
        nlist: int | None = None,
        m: int = 32,
        nprobe: int | None = None,
        ef_search: int = 128,
        ef_construction: int = 80,
        train_size: int | None = None,
        seed: int = 0,
        progress: bool = False,
        total: int | None = None,
        splits: Sequence[str] | None = None,
        datasets: Sequence[str] | None = None,
    ) -> "GalleryIndex":
        """Build an index from a feature matrix or an iterable of row chunks.

        Chunks (e.g. the shards of a feature folder) keep memory bounded: only the
        index itself and, for IVF, a training sample are held.  ``train_size``
        defaults to ``max(50·nlist, 20000)`` rows sampled evenly over the chunks.
        """
        faiss = _faiss()
        n = len(paths)
        chunks = [np.asarray(features, dtype=np.float32)] if isinstance(features, np.ndarray) else features
        if n == 0:
            raise SearchError("cannot build an index over an empty gallery")
        factory = factory or factory_string(kind, n=n, nlist=nlist, m=m)
        chunks_iter = iter(chunks)
        first = next(chunks_iter)
        dim = int(first.shape[1])
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise SearchError(f"faiss cannot build {factory!r}: {str(exc).splitlines()[-1]}") from exc
        hnsw = getattr(index, "hnsw", None)
        if hnsw is not None:
            hnsw.efConstruction = ef_construction
        t0 = time.perf_counter()
        chunk_list = None
        if not index.is_trained:
            # Training (IVF centroids, scalar-quantiser ranges) needs a sample drawn over
            # the whole gallery, so the chunks are kept for a second pass.
            chunk_list = [first, *chunks_iter]
            ivf = faiss.try_extract_index_ivf(index)
            cells = ivf.nlist if ivf is not None else 0
            want = train_size or max(50 * cells, 20000)
            rng = np.random.default_rng(seed)
            frac = min(1.0, want / n)
            sample = np.concatenate([c[rng.random(len(c)) < frac] if frac < 1 else c for c in chunk_list])
            if len(sample) < max(cells, 1):
                raise SearchError(f"{len(sample)} training vectors for {cells} IVF cells; lower --nlist")
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
            del sample
        added = 0
        with progress_bar("indexing", total=total or n, disable=not progress) as advance:
            stream = chunk_list if chunk_list is not None else _chain(first, chunks_iter)
            for c in stream:
                c = np.ascontiguousarray(c, dtype=np.float32)
                if c.shape[1] != dim:
                    raise SearchError(f"feature chunks differ in dimension ({c.shape[1]} vs {dim})")
                index.add(c)
                added += len(c)
                advance(len(c))
        if added != n:
            raise SearchError(f"{added} feature rows but {n} gallery names")
        info = {
            "format": "muva-index",
            "version": 1,
            "factory": factory,
            "kind": kind if factory == factory_string(kind, n=n, nlist=nlist, m=m) else "custom",
            "metric": "inner_product",
            "dim": dim,
            "ntotal": int(index.ntotal),
            "bytes_per_vector": bytes_per_vector(factory, dim),
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        out = cls(
            index,
            np.asarray(list(paths), dtype=object),
            np.asarray(pids if pids is not None else [-1] * n, dtype=np.int64),
            np.asarray(camids if camids is not None else [-1] * n, dtype=np.int64),
            info,
            np.asarray(list(splits), dtype=object) if splits is not None else None,
            np.asarray(list(datasets), dtype=object) if datasets is not None else None,
        )
        out.set_search_params(nprobe=nprobe, ef_search=ef_search)
        return out

    @classmethod
    def from_features(cls, source, *, split: str | None = None, progress: bool = True, **kwargs) -> "GalleryIndex":
        """Build from a feature folder (streamed shard by shard), file, or ``FeatureSet``.

        ``split`` keeps only the rows of one split (e.g. ``gallery`` of a dataset).
        """
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and split is None:
            folder = Path(source)
            manifest = read_manifest(folder)
            if not manifest.get("complete"):
                raise SearchError(f"{folder} is an unfinished extraction; rerun `muva extract` to complete it")
            cols = _read_columns(folder / "metadata.csv")  # columns, not row dicts: 1M rows stay small
            idx = cls.build(
                iter_feature_shards(folder),
                cols["path"],
                np.asarray(cols["pid"], dtype=np.int64),
                np.asarray(cols["camid"], dtype=np.int64),
                splits=cols["split"],
                datasets=cols["dataset"],
                progress=progress,
                total=len(cols["path"]),
                **kwargs,
            )
            idx.info["source"] = str(folder)
            return idx
        fs = source if isinstance(source, FeatureSet) else load_features(source)
        if split is not None:
            fs = fs.split(split)
        idx = cls.build(fs.features, fs.paths, fs.pids, fs.camids, splits=fs.splits, datasets=fs.datasets, progress=progress, **kwargs)  # type: ignore[arg-type]
        if not isinstance(source, FeatureSet):
            idx.info["source"] = str(source)
        if split is not None:
            idx.info["split"] = split
        return idx

    # ---------------------------------------------------------------- parameters
    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """IVF cells probed per query (default: nlist/32, at least 8) and HNSW ``efSearch``."""
        faiss = _faiss()
        if self.info["factory"].upper().startswith("IVF"):
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = int(nprobe or self.info.get("nprobe") or max(8, ivf.nlist // 32))
            self.info["nprobe"] = int(ivf.nprobe)
            self.info["nlist"] = int(ivf.nlist)
        hnsw = getattr(self.index, "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = int(ef_search or self.info.get("ef_search") or 128)
            self.info["ef_search"] = int(hnsw.efSearch)

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def __len__(self) -> int:
        return int(self.index.ntotal)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- querying
    def search(self, queries: np.ndarray, k: int = 10) -> SearchResult:
        """Top-``k`` gallery items per query row (queries must be L2-normalised)."""
        q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise SearchError(f"queries are {q.shape[1]}-d but the index holds {self.dim}-d features; use the model that built the gallery")
        k = int(min(k, len(self)))
        t0 = time.perf_counter()
        sims, ids = self.index.search(q, k)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - t0
        safe = np.where(ids >= 0, ids, 0)
        names = [[self.paths[j] if j >= 0 else "" for j in row] for row in ids]
        pids = np.where(ids >= 0, self.pids[safe], -1)
        camids = np.where(ids >= 0, self.camids[safe], -1)
        return SearchResult(ids, sims, names, pids, camids, seconds)

    # ---------------------------------------------------------------- disk
    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``gallery.csv`` and ``index.json`` into ``folder``."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (INDEX_FILE + ".tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, folder / INDEX_FILE)
        tmp_csv = folder / (GALLERY_FILE + ".tmp")
        n = len(self.paths)
        with open(tmp_csv, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["row", "path", "pid", "camid", "split", "dataset"])
            for i in range(n):
                w.writerow([i, self.paths[i], int(self.pids[i]), int(self.camids[i]),
                            self.splits[i] if self.splits is not None else "",
                            self.datasets[i] if self.datasets is not None else ""])
        os.replace(tmp_csv, folder / GALLERY_FILE)
        info = dict(self.info)
        info["file_bytes"] = (folder / INDEX_FILE).stat().st_size
        info["file_bytes_per_vector"] = round(info["file_bytes"] / max(n, 1), 1)
        atomic_write_text(folder / INFO_FILE, json.dumps(info, indent=2))
        self.info = info
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, nprobe: int | None = None, ef_search: int | None = None, mmap: bool = False) -> "GalleryIndex":
        """Read an index folder written by :meth:`save` (``mmap`` maps it read-only)."""
        faiss = _faiss()
        folder = Path(folder)
        if not (folder / INFO_FILE).exists() or not (folder / INDEX_FILE).exists():
            raise SearchError(f"{folder} is not an index folder (needs {INDEX_FILE} and {INFO_FILE}); build one with `muva search build FEATURES -o {folder}`")
        info = json.loads((folder / INFO_FILE).read_text())
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(folder / INDEX_FILE), flags)
        paths, pids, camids, splits, datasets = [], [], [], [], []
        with open(folder / GALLERY_FILE, newline="") as fh:
            for r in csv.DictReader(fh):
                paths.append(r["path"])
                pids.append(int(r["pid"]))
                camids.append(int(r["camid"]))
                splits.append(r.get("split", ""))
                datasets.append(r.get("dataset", ""))
        if len(paths) != index.ntotal:
            raise SearchError(f"{folder}: {GALLERY_FILE} has {len(paths)} rows but the index {index.ntotal} vectors")
        out = cls(index, np.asarray(paths, dtype=object), np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64),
                  info, np.asarray(splits, dtype=object), np.asarray(datasets, dtype=object))
        out.set_search_params(nprobe=nprobe, ef_search=ef_search)
        return out


def _read_columns(path: Path) -> dict[str, list]:
    """A metadata CSV as lists per column (path, pid, camid, split, dataset)."""
    out: dict[str, list] = {"path": [], "pid": [], "camid": [], "split": [], "dataset": []}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        pos = {name: header.index(name) for name in out if name in header}
        for row in reader:
            for name, i in pos.items():
                out[name].append(int(row[i]) if name in ("pid", "camid") else row[i])
    n = len(out["path"])
    for name in ("split", "dataset"):
        if not out[name]:
            out[name] = [""] * n
    return out


def _chain(first, rest):
    yield first
    yield from rest


__all__ = ["GalleryIndex", "KINDS", "SearchError", "SearchResult", "bytes_per_vector", "default_nlist", "factory_string"]

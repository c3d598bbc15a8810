"""The per-dataset grounding cache: one SQLite file, one row per image, resumable.

Why SQLite: each batch of results is written in one transaction, so killing the run at
any moment (Ctrl-C, ``kill -9``, power loss) leaves every batch either fully written or
absent — never a half entry — and the image path is the primary key, so a resumed run
can neither duplicate nor lose an entry.  The file is a single self-contained database
(rollback journal, no WAL side files) that can be copied between machines.

Keys are image paths relative to the dataset root recorded in the metadata (absolute
when an image lies outside it); :meth:`GroundingCache.get` accepts relative or absolute
paths, and falls back to a unique file-name match when the dataset has moved.

``--shard i/n`` runs take the images whose key hashes to ``i`` (CRC-32 mod n) and write
their own file; :func:`merge_caches` joins shard files into one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from muva.grounding.boxes import PartBox
from muva.utils.errors import MuvaError, UsageError

SCHEMA_VERSION = 1
STATUSES = ("ok", "unreadable")


class GroundingCacheError(MuvaError, RuntimeError):
    """A cache that is missing, incompatible with the request, or corrupt."""


class MissingPartsError(GroundingCacheError):
    """A cache without some of the parts asked for; ``have`` and ``lacking`` name them."""

    def __init__(self, message: str, have: list[str], lacking: list[str]):
        super().__init__(message)
        self.have, self.lacking = have, lacking


@dataclass
class CacheEntry:
    """The grounding result of one image.

    Attributes:
        path: key of the image (relative to the dataset root, POSIX separators).
        status: ``ok`` or ``unreadable`` (then ``error`` says why and ``boxes`` is empty).
        width, height: image size in pixels (0 when unreadable).
        boxes: part → :class:`PartBox`.
        masks: exact patch masks for entries imported from mask pickles: part → bool [L].
        grid: (rows, cols) of ``masks``.
    """

    path: str
    status: str = "ok"
    width: int = 0
    height: int = 0
    boxes: dict[str, PartBox] = field(default_factory=dict)
    error: str | None = None
    masks: dict[str, np.ndarray] | None = None
    grid: tuple[int, int] | None = None

    def to_json(self) -> str:
        obj: dict = {"parts": {p: b.to_json() for p, b in self.boxes.items()}}
        if self.error:
            obj["error"] = self.error
        if self.masks is not None and self.grid is not None:
            obj["grid"] = list(self.grid)
            obj["masks"] = {p: np.packbits(np.asarray(m, dtype=bool)).tobytes().hex() for p, m in self.masks.items()}
        return json.dumps(obj, separators=(",", ":"))

    @classmethod
    def from_row(cls, path: str, status: str, width: int, height: int, data: str) -> "CacheEntry":
        obj = json.loads(data) if data else {}
        boxes = {p: PartBox.from_json(b) for p, b in obj.get("parts", {}).items()}
        masks = grid = None
        if "masks" in obj:
            grid = tuple(obj["grid"])
            n = grid[0] * grid[1]
            masks = {p: np.unpackbits(np.frombuffer(bytes.fromhex(h), dtype=np.uint8))[:n].astype(bool) for p, h in obj["masks"].items()}
        return cls(path, status, int(width or 0), int(height or 0), boxes, obj.get("error"), masks, grid)

    def patch_masks(self, parts: Sequence[str], grid: tuple[int, int]) -> np.ndarray | None:
        """The exact imported masks as ``bool [R, L]`` when they exist for ``grid``; else None."""
        if self.masks is None or self.grid is None or tuple(self.grid) != tuple(grid):
            return None
        if any(p not in self.masks for p in parts):
            return None
        return np.stack([self.masks[p] for p in parts])


def shard_of(key: str, num_shards: int) -> int:
    """Shard index of an image key (stable across machines and Python runs)."""
    return zlib.crc32(key.encode("utf-8")) % num_shards


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) → (i, n); None stays None; anything else is a :class:`~muva.utils.errors.UsageError`."""
    if spec is None or spec == "":
        return None
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/n (e.g. 0/4), not {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {spec}: need 0 <= i < n")
    return i, n


def shard_path(out: str | Path, shard: tuple[int, int]) -> Path:
    """Default file of one shard: ``name.sqlite`` → ``name.shard-i-of-n.sqlite``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{shard[0]}-of-{shard[1]}{out.suffix or '.sqlite'}")


class GroundingCache:
    """A grounding cache file (see the module doc).  Use :meth:`open` as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool):
        self.path = path
        self._conn = conn
        self.readonly = readonly
        self._meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        self.widened_now: list[str] | None = None  # the parts before this opening added some (widen_parts)
        root = self._meta.get("root")
        self.root = Path(root) if root else None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False, meta: dict | None = None,
             widen_parts: bool = False) -> "GroundingCache":
        """Open (or create, unless ``readonly``) a cache; ``meta`` must agree with a stored one.

        ``meta`` keys checked against an existing file: ``root``, ``parts``, ``expert``.  With
        ``widen_parts``, ``meta["parts"]`` may be a superset of the stored parts: the cache then
        records the new parts, and the entries written before lack the added ones (see
        :meth:`keys_covering`; ``muva ground run`` grounds those images again).
        """
        path = Path(path)
        if readonly:
            if not path.is_file():
                raise GroundingCacheError(f"grounding cache {path} does not exist")
            journal = path.with_name(path.name + "-journal")
            if journal.exists() and os.access(path.parent, os.W_OK):
                # A run killed mid-transaction leaves a hot journal; a read-only connection
                # cannot roll it back, so let a short read-write one do it.
                rw = sqlite3.connect(str(path), timeout=60.0)
                try:
                    rw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                finally:
                    rw.close()
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=60.0)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
            with conn:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, "
                    "width INTEGER, height INTEGER, data TEXT NOT NULL, written REAL NOT NULL)"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS entries_name ON entries(name)")
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (json.dumps(SCHEMA_VERSION),))
        try:
            conn.execute("SELECT 1 FROM entries LIMIT 1")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise GroundingCacheError(f"{path} is not a muva grounding cache ({exc})") from None
        cache = cls(path, conn, readonly)
        if meta:
            cache._check_and_store_meta(meta, widen_parts)
        return cache

    def _check_and_store_meta(self, meta: dict, widen_parts: bool = False) -> None:
        stored = self._meta.get("parts")
        widen = (widen_parts and not self.readonly and "parts" in meta and stored is not None and stored != meta["parts"]
                 and set(stored) <= set(meta["parts"]))
        for key in ("root", "parts", "expert"):
            if key == "parts" and widen:
                continue
            if key in meta and key in self._meta and self._meta[key] != meta[key]:
                hint = "use another --out file (or delete this one to start over)"
                if key == "parts":
                    union = [p for p in meta["parts"] if p not in stored]
                    hint = (f"ground with --parts {','.join([*stored, *union])} to add the missing part(s) to this cache "
                            f"(its images are grounded again), or {hint}")
                raise GroundingCacheError(
                    f"{self.path} was written with {key}={self._meta[key]!r}, this run has {key}={meta[key]!r}; {hint}"
                )
        if self.readonly:
            return
        if widen:
            with self._conn:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('parts', ?)", (json.dumps(list(meta["parts"])),))
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('widened_from', ?)", (json.dumps(list(stored)),))
            self._meta["parts"], self._meta["widened_from"] = list(meta["parts"]), list(stored)
            self.widened_now = list(stored)
        with self._conn:
            for key, value in meta.items():
                if key not in self._meta:
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
                    self._meta[key] = value
        if self._meta.get("root"):
            self.root = Path(self._meta["root"])

    def __enter__(self) -> "GroundingCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ metadata
    @property
    def meta(self) -> dict:
        return dict(self._meta)

    def parts(self) -> list[str]:
        return list(self._meta.get("parts", []))

    # ------------------------------------------------------------------ keys
    def key(self, path: str | Path) -> str:
        """The cache key of an image path (relative to the root when under it)."""
        p = Path(path)
        if p.is_absolute() and self.root is not None:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                try:
                    return p.resolve().relative_to(self.root.resolve()).as_posix()
                except ValueError:
                    return p.as_posix()
        return p.as_posix()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def keys(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT path FROM entries")}

    def keys_covering(self, parts: Sequence[str]) -> set[str]:
        """Keys whose entry is final for ``parts``: a box for each of them, or an unreadable image.

        After the cache's parts were widened, the entries written before lack the added parts
        and are left out, so a run grounds them again (and resumes where it stopped).
        """
        if "widened_from" not in self._meta:
            return self.keys()
        want = set(parts)
        out = set()
        for path, status, data in self._conn.execute("SELECT path, status, data FROM entries"):
            obj = json.loads(data) if data else {}
            if status != "ok" or want <= set(obj.get("parts", {})) | set(obj.get("masks", {})):
                out.add(path)
        return out

    def counts(self) -> dict[str, int]:
        """Number of entries per status."""
        return dict(self._conn.execute("SELECT status, COUNT(*) FROM entries GROUP BY status").fetchall())

    def get(self, path: str | Path) -> CacheEntry | None:
        """The entry of an image (relative or absolute path), or None when absent."""
        key = self.key(path)
        row = self._conn.execute("SELECT path, status, width, height, data FROM entries WHERE path = ?", (key,)).fetchone()
        if row is None:
            rows = self._conn.execute(
                "SELECT path, status, width, height, data FROM entries WHERE name = ? LIMIT 2", (Path(key).name,)
            ).fetchall()
            row = rows[0] if len(rows) == 1 else None
        return CacheEntry.from_row(*row) if row else None

    def __iter__(self) -> Iterator[CacheEntry]:
        for row in self._conn.execute("SELECT path, status, width, height, data FROM entries ORDER BY path"):
            yield CacheEntry.from_row(*row)

    # ------------------------------------------------------------------ writing
    def add_many(self, entries: Iterable[CacheEntry], *, replace: bool = True) -> int:
        """Write entries in one transaction (all or nothing); returns how many were written.

        With ``replace=False`` an existing key is left alone (used by merges).
        """
        if self.readonly:
            raise GroundingCacheError(f"{self.path} is open read-only")
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        now = time.time()
        rows = [(e.path, Path(e.path).name, e.status, e.width, e.height, e.to_json(), now) for e in entries]
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany(f"{verb} INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            return self._conn.total_changes - before

    def add(self, entry: CacheEntry) -> None:
        self.add_many([entry])

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict:
        """Counts per status, and per part: boxes per source expert, fallback reasons and the way asked (``via``)."""
        per_part: dict[str, Counter] = {}
        reasons: dict[str, Counter] = {}
        ways: dict[str, Counter] = {}
        statuses: Counter = Counter()
        errors: Counter = Counter()
        for entry in self:
            statuses[entry.status] += 1
            if entry.status != "ok":
                errors[(entry.error or "?").split(":")[0]] += 1
                continue
            for part, box in entry.boxes.items():
                per_part.setdefault(part, Counter())[box.source] += 1
                if box.reason:
                    reasons.setdefault(part, Counter())[box.reason] += 1
                if box.via:
                    ways.setdefault(part, Counter())[box.via] += 1
        return {
            "entries": sum(statuses.values()),
            "statuses": dict(statuses),
            "errors": dict(errors),
            "sources": {p: dict(c) for p, c in per_part.items()},
            "reasons": {p: dict(c) for p, c in reasons.items()},
            "via": {p: dict(c) for p, c in ways.items()},
        }


def merge_caches(out: str | Path, inputs: Sequence[str | Path]) -> dict:
    """Join shard caches into ``out`` (created if absent).

    The shards must agree on root, parts and expert.  An image present in several inputs
    is kept once (an ``ok`` entry wins over ``unreadable``).  Returns counts.
    """
    out = Path(out)
    if not inputs:
        raise GroundingCacheError("nothing to merge: give at least one shard file")
    added = duplicates = upgraded = 0
    metas = []
    for src in inputs:
        with GroundingCache.open(src, readonly=True) as shard:
            metas.append(shard.meta)
    base = {k: metas[0][k] for k in ("root", "parts", "expert", "dataset") if k in metas[0]}
    for src, m in zip(inputs, metas):
        for key in ("root", "parts", "expert"):
            if m.get(key) != base.get(key):
                raise GroundingCacheError(f"cannot merge {src}: its {key} is {m.get(key)!r}, {inputs[0]} has {base.get(key)!r}")
    with GroundingCache.open(out, meta={**{k: v for k, v in metas[0].items() if k != "shard"}}) as dst:
        existing = {row[0]: row[1] for row in dst._conn.execute("SELECT path, status FROM entries")}
        for src in inputs:
            with GroundingCache.open(src, readonly=True) as shard:
                batch_new, batch_up = [], []
                for entry in shard:
                    status = existing.get(entry.path)
                    if status is None:
                        batch_new.append(entry)
                        existing[entry.path] = entry.status
                    elif status != "ok" and entry.status == "ok":
                        batch_up.append(entry)
                        existing[entry.path] = "ok"
                    else:
                        duplicates += 1
                added += dst.add_many(batch_new, replace=False)
                upgraded += dst.add_many(batch_up, replace=True)
        total = len(dst)
    return {"inputs": len(inputs), "added": added, "upgraded": upgraded, "duplicates": duplicates, "total": total}


def default_cache_path(dataset_name: str, expert: str, base: str | Path | None = None) -> Path:
    """Where ``muva ground`` writes by default: ``runs/grounding/<dataset>/<expert>.sqlite``."""
    base = Path(base) if base else Path(os.environ.get("MUVA_RUNS", "runs"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset_name) or "dataset"
    return base / "grounding" / safe / f"{expert}.sqlite"

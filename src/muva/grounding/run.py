"""Running an expert over a dataset into a cache: resumable, sharded, batched, with progress.

    records → (skip keys already cached, keep this shard) → decode in threads →
    expert.entries(keys, images) → one SQLite transaction per batch
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from PIL import Image

from muva.data.datasets import DatasetError, resolve_source
from muva.data.datasets.resolve import folder_records
from muva.data.parts import PART_NAMES
from muva.utils.errors import UsageError
from muva.utils.progress import progress_bar
from muva.grounding.cache import CacheEntry, GroundingCache, GroundingCacheError, shard_of

SPLIT_NAMES = ("train", "query", "gallery")


@dataclass
class ImageSet:
    """The images to ground: a name, the root keys are relative to, and absolute paths."""

    name: str
    root: Path
    paths: list[str]


def _image_folder(folder: Path) -> list[str]:
    """Every image under ``folder`` (resolved paths, hidden entries left out)."""
    return [str(Path(r.path).resolve()) for r in folder_records(folder)]


def resolve_images(spec: str, root: str | Path | None = None, splits: Sequence[str] = SPLIT_NAMES) -> ImageSet:
    """Find the images of ``spec``: a registered dataset name (with ``root``), a dataset folder,
    ``synth:PATH`` or a plain image folder (all images below it).

    A thin user of :func:`muva.data.datasets.resolve_source`; an unknown split is a
    ``ValueError``, a spec that is neither a dataset nor an image folder a ``DatasetError``.
    """
    bad = [s for s in splits if s not in SPLIT_NAMES]
    if bad:
        raise ValueError(f"unknown split(s) {', '.join(bad)}; choose from {', '.join(SPLIT_NAMES)}")
    try:
        source = resolve_source(spec, root, keep_unusable=True)  # a partly readable dataset: the images read
    except DatasetError as exc:
        raise DatasetError(f"cannot read {spec!r} as a dataset or image folder: {exc}") from None
    return ImageSet(source.name, source.root, source.images(splits))


def image_sets(specs: Sequence[str], root: str | Path | None, splits: Sequence[str], options: Sequence[dict],
               note: Callable[[str], None] = lambda text: None) -> list[ImageSet]:
    """The images to ground of each spec (a dataset, with its options, or a plain image folder).

    A dataset whose layout is found but cannot serve in full (an empty split, names that
    do not parse) gives the images that were read, after ``note(problem)``; one with no
    image at all in ``splits`` is a :class:`DatasetError`, as is an empty folder.
    """
    bad = [s for s in splits if s not in SPLIT_NAMES]
    if bad or not splits:
        raise UsageError(f"--splits: unknown split(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SPLIT_NAMES)}")
    sets = []
    for spec, opts in zip(specs, options):
        try:
            src = resolve_source(spec, root, opts or None, keep_unusable=True)
        except DatasetError as exc:
            raise DatasetError(f"cannot read {spec!r} as a dataset or image folder: {exc}") from None
        if src.problem is not None:
            if not src.images(splits):
                raise DatasetError(f"nothing to ground in {spec}: {src.problem}")
            note(str(src.problem))
        paths = src.images(splits)
        if not paths:
            raise DatasetError(f"nothing to ground in {spec}: its split(s) {', '.join(splits)} hold no image")
        sets.append(ImageSet(src.name, src.root, paths))
    return sets


def load_image(path: str):
    """Decode an image to RGB; returns ``(image, None)`` or ``(None, "unreadable: why")``."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
        if rgb.size[0] < 1 or rgb.size[1] < 1:
            return None, "unreadable: empty image"
        return rgb, None
    except Exception as exc:  # corrupt, truncated, missing, permission denied, ...
        return None, f"unreadable: {type(exc).__name__}: {str(exc)[:160]}"


def _batched(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def cached_parts(cache_path: str | Path) -> list[str]:
    """The parts the cache at ``cache_path`` holds (``[]`` when there is no file or it is not a cache)."""
    if not Path(cache_path).is_file():
        return []
    try:
        with GroundingCache.open(cache_path, readonly=True) as cache:
            return list(cache.parts())
    except GroundingCacheError:
        return []  # not a cache: opening it for writing reports that


def parts_to_ground(requested: Sequence[str], cache_path: str | Path) -> tuple[str, ...]:
    """The parts a run writes into ``cache_path``: ``requested`` plus those the cache already holds.

    A cache only ever gains parts, so every part a cache served before is still served; the
    result is in the part table's order.
    """
    wanted = set(requested) | set(cached_parts(cache_path))
    return tuple(p for p in PART_NAMES if p in wanted)


@dataclass
class RunSummary:
    total: int
    in_shard: int
    already_done: int
    processed: int
    unreadable: int
    seconds: float
    widened_from: list[str] | None = None  # the cache's parts before this run added some

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def ground_images(
    images: ImageSet,
    expert,
    out: str | Path,
    *,
    shard: tuple[int, int] | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    limit: int | None = None,
    redo: bool = False,
    progress: bool = True,
    extra_meta: dict | None = None,
) -> RunSummary:
    """Ground every image of ``images`` not yet in the cache ``out``; returns counts.

    Args:
        expert: a :class:`~muva.grounding.experts.base.GroundingExpert`.
        shard: (i, n) to process only the keys with ``crc32(key) % n == i``.
        batch_size: images per expert call and per transaction (default: the expert's).
        workers: threads decoding images ahead of the expert.
        limit: stop after this many new images (for trials).
        redo: recompute images already in the cache.
    """
    meta = {"root": str(images.root), "parts": list(expert.parts), "expert": expert.name, "dataset": images.name, "settings": expert.describe()}
    if shard:
        meta["shard"] = f"{shard[0]}/{shard[1]}"
    meta.update(extra_meta or {})
    bs = max(1, batch_size or getattr(expert, "batch_size", 8))
    t0 = time.perf_counter()
    with GroundingCache.open(out, meta=meta, widen_parts=True) as cache:
        widened = cache.widened_now
        keyed = [(cache.key(p), p) for p in images.paths]
        if shard:
            keyed = [kp for kp in keyed if shard_of(kp[0], shard[1]) == shard[0]]
        done = set() if redo else cache.keys_covering(expert.parts)
        todo = [kp for kp in keyed if kp[0] not in done]
        already = len(keyed) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        processed = unreadable = 0
        desc = f"{expert.name} on {images.name}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, progress_bar(desc, total=len(todo), disable=not progress) as advance:
            # Decode up to two batches ahead of the expert.
            batches = list(_batched(todo, bs))
            decode = lambda b: [load_image(p) for _, p in b]  # noqa: E731
            futures = [pool.submit(decode, b) for b in batches[:2]]
            for i, batch in enumerate(batches):
                decoded = futures[i].result()
                futures[i] = None  # free the decoded images
                if i + 2 < len(batches):
                    futures.append(pool.submit(decode, batches[i + 2]))
                entries = _entries_for(expert, batch, decoded)
                cache.add_many(entries)
                processed += len(entries)
                unreadable += sum(e.status != "ok" for e in entries)
                advance(len(entries))
    return RunSummary(len(images.paths), len(keyed), already, processed, unreadable, time.perf_counter() - t0, widened)


def _entries_for(expert, batch: Sequence[tuple[str, str]], decoded: Sequence[tuple]) -> list[CacheEntry]:
    good = [(k, img) for (k, _), (img, err) in zip(batch, decoded) if img is not None]
    results = dict(zip((k for k, _ in good), expert.entries([k for k, _ in good], [img for _, img in good]))) if good else {}
    out = []
    for (key, _), (img, err) in zip(batch, decoded):
        out.append(results[key] if img is not None else CacheEntry(key, "unreadable", 0, 0, {}, err))
    return out


def iter_sizes(paths: Iterable[str]) -> Iterator[tuple[int, int] | None]:
    """Image sizes from file headers (no decoding); None for unreadable files."""
    for p in paths:
        try:
            with Image.open(p) as im:
                yield im.size
        except Exception:
            yield None

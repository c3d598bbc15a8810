"""Running an expert over a dataset into a cache: resumable, sharded, batched, with progress.

    records → (skip keys already cached, keep this shard) → decode in threads →
    expert.entries(keys, images) → one SQLite transaction per batch

:func:`estimate_run` grounds a small sample into a temporary cache and projects the time of
the whole run (``muva ground run --estimate``); :mod:`muva.grounding.distributed` runs
:func:`ground_images` once per torchrun rank, on that rank's shard.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Sequence

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


def covered_keys(cache_path: str | Path, parts: Sequence[str]) -> set[str]:
    """Keys of the cache at ``cache_path`` whose entry is final for ``parts`` (read only; ``set()`` without a file).

    As :meth:`GroundingCache.keys_covering` after a run opened the cache with ``parts``: when
    the cache lacks some of them, only the entries that hold every part (or are unreadable) count.
    """
    if not Path(cache_path).is_file():
        return set()
    with GroundingCache.open(cache_path, readonly=True) as cache:
        if set(parts) <= set(cache.parts()):
            return cache.keys_covering(parts)
        want = set(parts)
        return {e.path for e in cache if e.status != "ok" or want <= set(e.boxes) | set(e.masks or {})}


def check_cache_fits(cache_path: str | Path, images: ImageSet, expert) -> None:
    """Raise the run's own :class:`GroundingCacheError` now when the cache at ``cache_path`` was written
    for another dataset root or expert (nothing is written; no file is fine)."""
    if Path(cache_path).is_file():
        GroundingCache.open(cache_path, readonly=True, meta={"root": str(images.root), "expert": expert.name}).close()


@dataclass
class RunSummary:
    total: int
    in_shard: int
    already_done: int
    processed: int
    unreadable: int
    seconds: float
    widened_from: list[str] | None = None  # the cache's parts before this run added some
    entries: int = 0  # entries in the cache file when the run ended

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
    skip: Collection[str] = frozenset(),
    desc: str | None = None,
) -> RunSummary:
    """Ground every image of ``images`` not yet in the cache ``out``; returns counts.

    Args:
        expert: a :class:`~muva.grounding.experts.base.GroundingExpert`.
        shard: (i, n) to process only the keys with ``crc32(key) % n == i``.
        batch_size: images per expert call and per transaction (default: the expert's).
        workers: threads decoding images ahead of the expert.
        limit: stop after this many new images (for trials).
        redo: recompute images already in the cache.
        skip: keys to leave out as if cached (those already final in the merged cache of a
            sharded run, see :mod:`muva.grounding.distributed`); ignored with ``redo``.
        desc: the progress bar's label (default: expert, dataset and shard).
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
        done = set() if redo else cache.keys_covering(expert.parts) | set(skip)
        todo = [kp for kp in keyed if kp[0] not in done]
        already = len(keyed) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        processed = unreadable = 0
        desc = desc or f"{expert.name} on {images.name}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
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
        entries_now = len(cache)
    return RunSummary(len(images.paths), len(keyed), already, processed, unreadable, time.perf_counter() - t0, widened, entries_now)


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


# ---------------------------------------------------------------------- cost estimate
@dataclass
class EstimateRow:
    """One cache of an estimated run: images in scope, already final in the cache, left to ground."""

    name: str
    target: Path
    in_scope: int
    cached: int
    todo: int


@dataclass
class Estimate:
    """What :func:`estimate_run` measured: the rate after warm-up, and what is left to ground."""

    rows: list[EstimateRow]
    sampled: int  # images timed (after the warm-up)
    warmup: int  # images of the untimed warm-up batch
    sample_seconds: float
    warmup_seconds: float
    load_seconds: float  # building the expert(s): model files, interpreters
    batch_size: int
    workers: int
    unreadable: int = 0  # unreadable images met in the sample and warm-up

    @property
    def todo(self) -> int:
        return sum(r.todo for r in self.rows)

    @property
    def rate_includes_warmup(self) -> bool:
        """Too few images left for a timed sample after the warm-up: the rate is the warm-up's."""
        return self.sampled == 0 and self.warmup > 0

    @property
    def rate(self) -> float:
        """Images (crops) per second."""
        if self.sampled:
            return self.sampled / self.sample_seconds if self.sample_seconds > 0 else float("inf")
        if self.warmup:
            return self.warmup / self.warmup_seconds if self.warmup_seconds > 0 else float("inf")
        return 0.0

    @property
    def projected_seconds(self) -> float | None:
        """Time to ground what is left in this one process (None when nothing could be measured)."""
        if not self.todo:
            return 0.0
        return self.todo / self.rate if self.rate > 0 else None


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices of ``range(n)`` spread evenly (all of them when ``k >= n``)."""
    if k >= n:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


def estimate_run(
    jobs: Sequence[tuple[ImageSet, str | Path, Sequence[str]]],
    expert_for: Callable[[tuple[str, ...]], object],
    *,
    sample: int = 32,
    shard: tuple[int, int] | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    limit: int | None = None,
    redo: bool = False,
) -> Estimate:
    """Ground a sample of what a run would ground into a temporary cache and project the whole run's time.

    ``jobs`` are ``(images, cache path, parts)`` as the run would write them; ``expert_for(parts)``
    builds (or returns) the expert of those parts — its build time is reported apart.  The images
    left are those of the scope (``shard``) not final in their cache (unless ``redo``), at most
    ``limit`` per cache.  One untimed batch (at most ``sample`` images) warms the expert up;
    the next ``sample`` images, picked evenly over everything left, are timed.  The real caches
    are only read (a cache written for another root or expert is the run's own error); the
    temporary cache is deleted on return.
    """
    rows: list[EstimateRow] = []
    left: list[tuple[int, str]] = []  # (job index, image path) of every image left to ground
    load_s = 0.0
    experts: dict[tuple[str, ...], object] = {}
    with tempfile.TemporaryDirectory(prefix="muva-estimate-") as tmp:
        scratch = [Path(tmp) / f"sample-{i}.sqlite" for i in range(len(jobs))]
        for i, (images, target, parts) in enumerate(jobs):
            parts = tuple(parts)
            if parts not in experts:
                t0 = time.perf_counter()
                experts[parts] = expert_for(parts)
                load_s += time.perf_counter() - t0
            expert = experts[parts]
            check_cache_fits(target, images, expert)
            done = set() if redo else covered_keys(target, expert.parts)
            with GroundingCache.open(scratch[i], meta={"root": str(images.root)}) as cache:  # keys as the run makes them
                keyed = [(cache.key(p), p) for p in images.paths]
            if shard:
                keyed = [kp for kp in keyed if shard_of(kp[0], shard[1]) == shard[0]]
            remaining = [p for k, p in keyed if k not in done]
            todo = remaining if limit is None else remaining[:limit]
            rows.append(EstimateRow(images.name, Path(target), len(keyed), len(keyed) - len(remaining), len(todo)))
            left.extend((i, p) for p in todo)
        bs = max(1, batch_size or max(getattr(e, "batch_size", 8) for e in experts.values()))
        warm_n = min(bs, sample, max(1, len(left) // 2), len(left))  # leaves images for a timed sample when there are 2+
        picked = [left[j] for j in _spread(len(left), warm_n + sample)]
        warm, timed = picked[:warm_n], picked[warm_n:]

        def ground(chosen: list[tuple[int, str]]) -> tuple[float, int]:
            seconds, unreadable = 0.0, 0
            for i, (images, _, parts) in enumerate(jobs):
                paths = [p for j, p in chosen if j == i]
                if paths:
                    s = ground_images(ImageSet(images.name, images.root, paths), experts[tuple(parts)], scratch[i], batch_size=batch_size,
                                      workers=workers, redo=True, progress=False)
                    seconds += s.seconds
                    unreadable += s.unreadable
            return seconds, unreadable

        warm_s, bad_warm = ground(warm)
        timed_s, bad_timed = ground(timed)
    return Estimate(rows, len(timed), len(warm), timed_s, warm_s, load_s, bs, max(1, workers), bad_warm + bad_timed)

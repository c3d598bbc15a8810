"""``muva ground run`` on many devices and nodes: one shard of the images per torchrun rank, merged by rank 0.

``torchrun --nproc_per_node N [--nnodes M --node_rank K --rdzv_endpoint HOST:PORT] -m muva
ground run ...`` starts ``N × M`` processes.  Each one (a *rank*):

1. takes the images whose key hashes to its global rank (``crc32(key) % WORLD_SIZE``, the
   split of ``--shard RANK/WORLD_SIZE``), leaves out those already final in the merged
   cache, and grounds the rest on its own device (``cuda:LOCAL_RANK`` when the expert runs
   on CUDA) into its own shard file, ``<cache>.shard-RANK-of-WORLD_SIZE.sqlite`` — a
   resumable cache like any other (one transaction per batch);
2. waits for the others (the gather of the ranks' reports is the barrier);
3. rank 0 checks that it sees every rank's shard file as that rank wrote it (a missing file,
   or one with another entry count, means the output folder is not shared between the
   nodes: the error says so and gives the ``muva ground merge`` command to run by hand),
   folds all shards into the cache (:func:`fold_shards`: the shards' entries win, so the
   result equals a single-process run's), and then deletes the shard files — only after
   the merged cache is committed, so a run killed during the merge still has its shards
   and the same command finishes it.  ``--keep-shards`` keeps them.

Rerunning the same command after a crash resumes every shard where it stopped.  The process
group is NCCL on GPU and gloo on CPU (:func:`muva.utils.distributed.init_distributed`); the
reports travel over a gloo group in both cases (they are small Python objects, and gloo
notices a rank that died instead of waiting for it).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape

from muva.data.parts import PART_NAMES
from muva.grounding.cache import GroundingCache, GroundingCacheError, shard_path
from muva.grounding.run import ImageSet, RunSummary, cached_parts, check_cache_fits, covered_keys, ground_images
from muva.utils.distributed import DeviceError, all_gather_object, cleanup, init_distributed, is_distributed
from muva.utils.errors import EXIT_FAILURE, MuvaError, RunInterrupted

__all__ = ["BARRIER_TIMEOUT_S", "GroundingRunError", "ShardsNotSharedError", "Ranks", "torchrun_ranks", "rank_device",
           "ranked_options", "shard_files", "sharded_parts", "fold_shards", "remove_shards", "ShardReport", "MergedJob",
           "RankSession"]

# Ranks that finish their shard early wait at the barrier for the slowest one: up to this long.
BARRIER_TIMEOUT_S = 7 * 24 * 3600
_FOLD_CHUNK = 5000  # entries per transaction when folding a shard into the cache


class GroundingRunError(MuvaError, RuntimeError):
    """A sharded run that could not finish (another rank stopped); rerunning it resumes."""

    exit_code = EXIT_FAILURE


class ShardsNotSharedError(GroundingRunError):
    """Rank 0 does not see every rank's shard file as it was written: the output folder is not shared."""


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun launch: global rank, world size, rank on its node."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_ranks() -> Ranks | None:
    """This process's :class:`Ranks` under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), else None.

    A world of one process is no sharded run (None).
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        raise DeviceError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK must be integers, not {os.environ.get('RANK')!r}/"
                          f"{os.environ.get('WORLD_SIZE')!r}/{os.environ.get('LOCAL_RANK')!r}") from None
    if world <= 1:
        return None
    return Ranks(rank, world, local)


def rank_device(device: str, ranks: Ranks) -> str:
    """The device a rank's expert runs on: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` when CUDA is available.

    ``cpu`` is kept; ``cuda`` without CUDA, an explicit ``cuda:N`` (every process on one GPU)
    and a local rank without a GPU of its own are a :class:`DeviceError`.
    """
    if device.startswith("cuda:"):
        raise DeviceError(f"device {device!r} would put all {ranks.world_size} processes on one GPU; under torchrun leave "
                          "the device at auto (or cuda): each process takes cuda:LOCAL_RANK (CUDA_VISIBLE_DEVICES picks the GPUs)")
    if device not in ("auto", "cuda"):
        return device
    if not torch.cuda.is_available():
        if device == "cuda":
            raise DeviceError("device 'cuda' asked for but CUDA is not available here; use -X device=cpu (or auto)")
        return "cpu"
    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise DeviceError(f"local rank {ranks.local_rank} has no GPU of its own: this node shows {count}; "
                          f"start at most {count} process(es) per node (torchrun --nproc_per_node {count})")
    return f"cuda:{ranks.local_rank}"


def shard_files(out: str | Path, world_size: int) -> list[Path]:
    """The shard file of every rank of a ``world_size``-process run writing ``out``."""
    return [shard_path(out, (i, world_size)) for i in range(world_size)]


def sharded_parts(requested: Sequence[str], out: str | Path, world_size: int) -> tuple[str, ...]:
    """The parts every rank writes: ``requested`` plus those the cache or any visible shard file already holds.

    (:func:`muva.grounding.run.parts_to_ground` for a sharded run: the ranks agree, so the
    shards can be merged.)
    """
    wanted = set(requested) | set(cached_parts(out))
    for f in shard_files(out, world_size):
        wanted |= set(cached_parts(f))
    return tuple(p for p in PART_NAMES if p in wanted)


def fold_shards(out: str | Path, shards: Sequence[str | Path]) -> dict:
    """Write every entry of ``shards`` into the cache ``out`` (created, or widened to the shards' parts).

    Unlike :func:`muva.grounding.cache.merge_caches`, an entry of a shard replaces the one the
    cache holds: a sharded run grounds only what the cache lacked (or everything, with
    ``--redo``), so its entries are the newer ones, and the result equals a single-process
    run's.  Folding again gives the same cache, so a fold killed part way is finished by
    running it again.  Returns counts: ``added``, ``replaced``, ``total`` and
    ``widened_from`` (the cache's parts before, when the fold added parts).
    """
    if not shards:
        raise GroundingCacheError("nothing to merge: give at least one shard file")
    metas = []
    for src in shards:
        with GroundingCache.open(src, readonly=True) as shard:
            metas.append(shard.meta)
    for src, m in zip(shards, metas):
        for key in ("root", "parts", "expert"):
            if m.get(key) != metas[0].get(key):
                raise GroundingCacheError(f"cannot merge {src}: its {key} is {m.get(key)!r}, {shards[0]} has {metas[0].get(key)!r}; "
                                          f"delete the shard files written by the other run and ground again")
    meta = {k: v for k, v in metas[0].items() if k not in ("shard", "widened_from", "schema")}
    added = replaced = 0
    with GroundingCache.open(out, meta=meta, widen_parts=True) as dst:
        widened = dst.widened_now
        have = dst.keys()
        for src in shards:
            with GroundingCache.open(src, readonly=True) as shard:
                chunk = []
                for entry in shard:
                    chunk.append(entry)
                    if len(chunk) >= _FOLD_CHUNK:
                        dst.add_many(chunk)
                        chunk = []
                dst.add_many(chunk)
                keys = shard.keys()
            added += len(keys - have)
            replaced += len(keys & have)
            have |= keys
        total = len(dst)
    return {"inputs": len(shards), "added": added, "replaced": replaced, "total": total, "widened_from": widened}


def remove_shards(shards: Sequence[str | Path]) -> None:
    """Delete shard files (and a journal a killed writer left); files already gone are fine."""
    for f in shards:
        f = Path(f)
        for p in (f, f.with_name(f.name + "-journal")):
            p.unlink(missing_ok=True)


@dataclass
class ShardReport:
    """What a rank tells rank 0 about one cache: its shard file, the entries in it, its run summary."""

    rank: int
    host: str
    path: str
    entries: int
    summary: dict


@dataclass
class MergedJob:
    """Rank 0's account of one cache after the merge: the summary of all ranks together."""

    images: ImageSet
    target: Path
    parts: tuple[str, ...]
    summary: RunSummary
    merged: dict
    shards: list[Path]
    removed: bool


def _merge_command(out: Path, shards: Sequence[Path]) -> str:
    return "muva ground merge " + " ".join(str(p) for p in [out, *shards])


class RankSession:
    """One rank of a sharded ``muva ground run``: the process group, its share of each cache, the merge.

    Use as a context manager around the whole run: it joins the process group (``device``
    decides NCCL or gloo), turns torchrun's SIGTERM (sent to every rank when one fails) into
    a :class:`~muva.utils.errors.RunInterrupted` that says how to resume, and leaves the group
    on exit.
    """

    def __init__(self, ranks: Ranks, device: str = "cpu"):
        self.ranks = ranks
        self.device = device
        self.group = None
        self._reports: list[tuple[ImageSet, Path, tuple[str, ...], ShardReport]] = []
        self._experts: list = []
        self._old_term = None
        self.notes: list[str] = []  # (rank 0, after finish) the experts' notes of every rank, "process R: ..."

    # ------------------------------------------------------------------ process group
    def __enter__(self) -> "RankSession":
        try:
            self._old_term = signal.signal(signal.SIGTERM, self._terminated)
        except ValueError:  # not the main thread: leave the signals alone
            self._old_term = None
        try:
            info = init_distributed(self.device, timeout_s=BARRIER_TIMEOUT_S)
            if info.backend == "nccl":  # the reports are Python objects: gloo carries them without GPU memory, and sees dead peers
                self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=BARRIER_TIMEOUT_S))
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._old_term is not None:
            # On an error torchrun is about to SIGTERM this process too: ignore that, so that the error is printed
            signal.signal(signal.SIGTERM, self._old_term if exc_type is None else signal.SIG_IGN)
        if is_distributed():
            cleanup()

    def _terminated(self, signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        r = self.ranks
        raise RunInterrupted(
            f"process {r.rank} of {r.world_size} was stopped (SIGTERM): torchrun stops every process when one of them fails "
            "(its report names which). Every batch written so far stays in the .shard-RANK-of-N.sqlite files beside the "
            "cache: run the same command again to resume"
        )

    # ------------------------------------------------------------------ this rank's share
    def limit_share(self, limit: int | None) -> int | None:
        """This rank's part of ``--limit`` (new images in all): an even split."""
        if limit is None:
            return None
        r = self.ranks
        return limit // r.world_size + (1 if r.rank < limit % r.world_size else 0)

    def ground(self, images: ImageSet, expert, out: str | Path, *, redo: bool = False, limit: int | None = None,
               progress: bool = True, **kwargs) -> RunSummary:
        """Ground this rank's shard of ``images`` into its shard file of ``out``, leaving out what ``out`` already holds.

        ``kwargs`` go to :func:`muva.grounding.run.ground_images` (batch size, workers).
        """
        out = Path(out)
        r = self.ranks
        check_cache_fits(out, images, expert)  # the same on every rank: rank 0 reports it
        skip = set() if redo else covered_keys(out, expert.parts)
        shard = (r.rank, r.world_size)
        target = shard_path(out, shard)
        try:
            summary = ground_images(images, expert, target, shard=shard, redo=redo, limit=self.limit_share(limit), skip=skip,
                                    progress=progress and r.is_main, desc=f"{expert.name} on {images.name} (rank 0 of {r.world_size})",
                                    **kwargs)
        except MuvaError as exc:
            if not r.is_main:  # an error of this rank alone: the command line prints only rank 0's
                Console(stderr=True).print(f"[bold red]error (process {r.rank} of {r.world_size}):[/] {escape(str(exc))}", highlight=False)
            raise
        if not any(e is expert for e in self._experts):
            self._experts.append(expert)
        report = ShardReport(r.rank, socket.gethostname(), str(target), summary.entries, dataclasses.asdict(summary))
        self._reports.append((images, out, tuple(expert.parts), report))
        return summary

    # ------------------------------------------------------------------ the merge
    def finish(self, keep_shards: bool = False) -> list[MergedJob]:
        """Wait for every rank, then (rank 0) merge each cache's shards; returns rank 0's :class:`MergedJob` list.

        The other ranks return ``[]``.  A rank that stopped before this point is a
        :class:`GroundingRunError`; shard files rank 0 cannot see (as written) are a
        :class:`ShardsNotSharedError` naming them, with the ``muva ground merge`` command —
        the caches whose shards it does see are merged first.
        """
        r = self.ranks
        mine = ([rep for *_, rep in self._reports], [line for e in self._experts for line in e.notes()])
        try:
            gathered = all_gather_object(mine, group=self.group)  # the barrier: every rank's reports, in rank order
        except RuntimeError:
            raise GroundingRunError(
                f"another process of this {r.world_size}-process run stopped before its shard was done (torchrun's report "
                "names it). Every batch written so far stays in the .shard-RANK-of-N.sqlite files beside the cache: "
                "run the same command again to resume"
            ) from None
        if not r.is_main:
            return []
        self.notes = [f"process {rank}: {line}" for rank, (_, notes) in enumerate(gathered) for line in notes]
        merged, problems = [], []
        for j, (images, out, parts, _) in enumerate(self._reports):
            reports = [ranks_reports[j] for ranks_reports, _ in gathered]
            shards = [Path(rep.path) for rep in reports]
            unseen = self._unseen(reports)
            if unseen:
                problems.append((out, shards, unseen))
                continue
            counts = fold_shards(out, shards)
            if not keep_shards:
                remove_shards(shards)
            merged.append(MergedJob(images, out, parts, _combined(reports, images, counts["widened_from"]), counts, shards,
                                    not keep_shards))
        if problems:
            lines = []
            for out, shards, unseen in problems:
                lines.append(f"{'; '.join(unseen)}. Nothing was merged into {out}: copy the shard files to one machine "
                             f"and run: {_merge_command(out, shards)}")
            done = f" (merged: {', '.join(str(m.target) for m in merged)})" if merged else ""
            raise ShardsNotSharedError(
                f"process 0 on {socket.gethostname()} cannot see every shard file as its process wrote it — the output "
                f"folder must be on a filesystem all nodes share{done}. " + " ".join(lines)
            )
        return merged

    @staticmethod
    def _unseen(reports: Sequence[ShardReport]) -> list[str]:
        """What is wrong with the shard files as rank 0 sees them (``[]``: each is there, as its rank wrote it)."""
        out = []
        for rep in reports:
            path = Path(rep.path)
            if not path.is_file():
                out.append(f"{path} (written by process {rep.rank} on {rep.host}) is missing here")
                continue
            try:
                with GroundingCache.open(path, readonly=True) as cache:
                    n = len(cache)
            except GroundingCacheError as exc:
                out.append(f"{path} (process {rep.rank} on {rep.host}) cannot be read here: {exc}")
                continue
            if n != rep.entries:
                out.append(f"{path} holds {n} entries here, process {rep.rank} on {rep.host} wrote {rep.entries} "
                           "(another file of the same name)")
        return out


def _combined(reports: Sequence[ShardReport], images: ImageSet, widened: list[str] | None) -> RunSummary:
    """The run summary of all ranks together: counts summed, time of the slowest rank."""
    s = [RunSummary(**rep.summary) for rep in reports]
    return RunSummary(len(images.paths), sum(x.in_shard for x in s), sum(x.already_done for x in s), sum(x.processed for x in s),
                      sum(x.unreadable for x in s), max(x.seconds for x in s), widened, 0)


def ranked_options(options, ranks: Ranks):
    """``options`` (an expert's ``Options``) with its ``device`` set for this rank (:func:`rank_device`), if it has one."""
    if not any(f.name == "device" for f in dataclasses.fields(options)):
        return options
    return dataclasses.replace(options, device=rank_device(str(options.device), ranks))

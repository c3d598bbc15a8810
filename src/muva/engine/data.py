"""From an experiment's ``data`` and ``grounding`` sections to training and evaluation data.

* :func:`build_sources` opens and combines the source datasets (identities relabelled
  0..N-1, dataset-prefixed, cameras made unique across sources);
* :func:`build_pseudo_masks` reads each source's grounding cache into patch masks (a
  missing cache is an error printing the ``muva ground`` command to run);
* :func:`build_targets` opens the evaluation targets;
* :func:`train_loader` / :func:`eval_loader` make the torch loaders.
"""

from __future__ import annotations

import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import DataLoader

from muva.data.datasets import DATASETS, open_dataset, resolve_source
from muva.data.loader import collate, scan_images
from muva.data.multisource import combine
from muva.data.records import DatasetError, ImageRecord, ReIDDataset
from muva.data.samplers import SequentialShardSampler
from muva.engine.config import DataConfig
from muva.grounding.cache import GroundingCacheError, MissingPartsError, default_cache_path
from muva.grounding.config import GroundingConfig
from muva.grounding.masks import load_pseudo_masks
from muva.grounding.run import cached_parts, parts_to_ground

__all__ = ["TrainData", "build_sources", "build_targets", "build_pseudo_masks", "grounding_cache_for",
           "ground_command", "train_loader", "eval_loader", "open_spec", "spec_options"]


@dataclass
class TrainData:
    """Combined training records with labels 0..N-1 and (optionally) pseudo masks."""

    records: list[ImageRecord]
    num_classes: int
    num_cams: int
    sources: list[ReIDDataset]
    pid_names: list[str] = field(default_factory=list)
    masks: dict | None = None
    bad_images: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[int]:
        return [r.pid for r in self.records]


def spec_options(spec: str, cfg: DataConfig) -> dict[str, Any]:
    """``data.dataset_options`` of one spec: under the spec as written or its registered name."""
    options: dict[str, Any] = dict(cfg.dataset_options.get(spec, {}))
    if not options:
        if spec in DATASETS:
            options = dict(cfg.dataset_options.get(DATASETS.canonical(spec), {}))
    return options


def open_spec(spec: str, cfg: DataConfig) -> ReIDDataset:
    """Open one dataset spec (a registered name, a folder, or ``synth:PATH``) with its options.

    Resolved by :func:`muva.data.datasets.resolve_source`; training and evaluation need
    identities, so a plain image folder (no dataset layout) is an error here.
    """

    source = resolve_source(spec, cfg.root, spec_options(spec, cfg))
    if source.dataset is None:
        raise DatasetError(f"{source.not_dataset} ({spec} is a plain folder of {len(source.images())} image(s); training "
                           "and evaluation need a dataset: a registered name, a Market-1501 or MARS layout folder, "
                           "a synthetic domain, or 'custom' with -O path=... -O pattern=...)")
    return source.dataset


def build_sources(cfg: DataConfig, check_images: bool | None = None, progress: bool = False) -> TrainData:
    """Open, combine and (optionally) scan the source datasets."""

    if not cfg.sources:
        raise DatasetError("data.sources is empty: name at least one training dataset (name or folder)")
    datasets = [open_spec(s, cfg) for s in cfg.sources]
    combined = combine([(d, cfg.source_split) for d in datasets])
    records = list(combined.train)
    bad: dict[str, str] = {}
    if cfg.check_images if check_images is None else check_images:
        bad = scan_images(records, progress=progress)
        if bad:
            if cfg.on_bad_image == "raise":
                first = next(iter(bad.items()))
                raise DatasetError(f"{len(bad)} unreadable training image(s), e.g. {first[0]} ({first[1]}); "
                                   "fix or remove them, or set data.on_bad_image=skip")
            records = [r for r in records if r.path not in bad]
    return TrainData(records=records, num_classes=combined.num_pids, num_cams=combined.num_cams,
                     sources=datasets, pid_names=list(combined.pid_names), bad_images=bad)


def build_targets(cfg: DataConfig, specs: Sequence[str] | None = None, check_images: bool | None = None,
                  progress: bool = False) -> list[tuple[str, list[ReIDDataset]]]:
    """``[(label, [dataset per split])]`` of the targets to evaluate (``specs`` overrides ``cfg.targets``).

    A target with ``data.target_splits[spec] = n > 1`` is opened ``n`` times with ``split=k``
    (VIPeR, PRID, GRID, iLIDS); its metrics are the mean over the splits.  Query and gallery
    images are scanned like the sources' (``data.check_images``): unreadable ones are listed
    in ``dataset.info["unreadable_images"]`` (``{path: reason}``), which the evaluation leaves
    out and reports; with ``data.on_bad_image=raise`` they are an error here.
    """

    out = []
    for spec in (cfg.targets if specs is None else specs):
        n = int(cfg.target_splits.get(spec, 1))
        if n > 1:
            splits = [open_dataset(spec, cfg.root, **{**spec_options(spec, cfg), "split": k}) for k in range(n)]
        else:
            splits = [open_spec(spec, cfg)]
        for ds in splits:  # (datasets opened from folders already refuse empty splits)
            if not ds.query or not ds.gallery:
                raise DatasetError(f"target {spec!r} has no query/gallery images to evaluate on")
        if cfg.check_images if check_images is None else check_images:
            _scan_target(spec, splits, cfg.on_bad_image, progress)
        out.append((splits[0].name, splits))
    return out


def _scan_target(spec: str, splits: list[ReIDDataset], on_bad_image: str, progress: bool) -> None:
    records = list({r.path: r for ds in splits for r in ds.query + ds.gallery}.values())
    bad = scan_images(records, progress=progress)
    if bad and on_bad_image == "raise":
        first = next(iter(bad.items()))
        raise DatasetError(f"target {spec!r}: {len(bad)} unreadable query/gallery image(s), e.g. {first[0]} "
                           f"({first[1]}); fix or remove them, or set data.on_bad_image=skip to leave them out "
                           "of the evaluation (they are listed in the results)")
    for ds in splits:
        mine = {r.path: bad[r.path] for r in ds.query + ds.gallery if r.path in bad}
        if mine:
            ds.info["unreadable_images"] = mine


def grounding_cache_for(spec: str, dataset_name: str, grounding: GroundingConfig) -> Path:
    """The grounding cache of a source: ``grounding.caches[spec]`` (or ``[dataset_name]``), else the default location."""
    for key in (spec, dataset_name):
        if key in grounding.caches:
            return Path(grounding.caches[key])
    return Path(default_cache_path(dataset_name, grounding.expert, grounding.dir))


def ground_command(spec: str, data: DataConfig, grounding: GroundingConfig, cache: str | Path,
                   parts: Sequence[str] = ()) -> str:
    """The ``muva ground run ...`` line that writes the grounding cache a source needs
    (its train split, or every split with ``data.source_split=all``).

    The expert and its options come from the ``grounding`` section; ``--parts`` is named only
    when ``cache`` exists without some of ``parts`` (a new cache gets every part the expert
    can ground, which serves any model)."""
    cmd = ["muva", "ground", "run", spec, "--expert", grounding.expert, "--out", str(cache)]
    if data.source_split == "train":  # training reads the train split only
        cmd += ["--splits", "train"]
    if data.root:
        cmd += ["--root", str(data.root)]
    if parts and Path(cache).is_file():
        cmd += ["--parts", ",".join(parts_to_ground(parts, cache))]
    for key, value in spec_options(spec, data).items():
        cmd += ["-O", f"{key}={value}"]
    for key, value in grounding.options.items():
        cmd += ["-X", f"{key}={value}"]
    return shlex.join(cmd)


def grounding_to_do(data: DataConfig, grounding: GroundingConfig, parts: Sequence[str]) -> list[tuple[str, Path, str]]:
    """``(source, cache, command)`` for every source whose cache is missing or lacks some of ``parts``
    (nothing for a model without parts); running each command makes the training's caches complete."""
    if not parts:
        return []
    out = []
    for spec in data.sources:
        cache = grounding_cache_for(spec, open_spec(spec, data).name, grounding)
        if not cache.is_file() or set(parts) - set(cached_parts(cache)):
            out.append((spec, cache, ground_command(spec, data, grounding, cache, parts)))
    return out


def build_pseudo_masks(train: TrainData, data: DataConfig, grounding: GroundingConfig, parts: Sequence[str], input_size,
                       stride: int, patch: int | None = None) -> dict:
    """``{path: bool R×L}`` for every training record, from the sources' grounding caches.

    A cache that is missing, or that lacks some of ``parts``, is an error printing the
    ``muva ground run`` line that writes (or completes) it."""
    masks: dict = {}
    for d, (spec, ds) in enumerate(zip(data.sources, train.sources)):
        records = [r for r in train.records if r.dsetid == d]
        cache = grounding_cache_for(spec, ds.name, grounding)
        if not cache.is_file():
            raise GroundingCacheError(f"grounding cache {cache} (pseudo masks of source {spec}) does not exist. "
                                      f"Create it with:\n  {ground_command(spec, data, grounding, cache, parts)}\n"
                                      "(--expert prior needs no model), or point grounding.caches.<source> at an "
                                      "existing cache")
        try:
            masks.update(load_pseudo_masks(records, cache, parts=list(parts), input_size=tuple(input_size),
                                           stride=stride, min_fraction=grounding.min_fraction, patch=patch,
                                           missing=grounding.missing))
        except MissingPartsError as exc:  # say which command completes this source's cache
            raise GroundingCacheError(f"grounding cache {cache} (source {spec}) holds parts {', '.join(exc.have)}, the "
                                      f"model needs {', '.join(exc.lacking)} too. Add them with:\n  "
                                      f"{ground_command(spec, data, grounding, cache, parts)}") from None
    if grounding.missing == "skip":
        train.records = [r for r in train.records if r.path in masks]
    return masks


def _worker_ignores_sigint(worker_id: int) -> None:  # noqa: ARG001
    """Loader workers leave Ctrl-C to the main process, which stops at a step boundary and saves."""

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_loader(dataset, sampler, batch_size: int, num_workers: int, device_type: str = "cpu"):
    """DataLoader over ``(index, seed)`` pairs of a :class:`RandomIdentitySampler`."""


    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      worker_init_fn=_worker_ignores_sigint, drop_last=True, pin_memory=device_type == "cuda", persistent_workers=num_workers > 0)


def eval_loader(dataset, batch_size: int, num_workers: int, world_size: int = 1, rank: int = 0,
                device_type: str = "cpu"):
    """Sequential loader over this rank's shard (``rank::world_size``)."""


    return DataLoader(dataset, batch_size=batch_size, sampler=SequentialShardSampler(len(dataset), world_size, rank),
                      num_workers=num_workers, collate_fn=collate, pin_memory=device_type == "cuda",
                      worker_init_fn=_worker_ignores_sigint)

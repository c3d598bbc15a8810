"""Multi-source training sets: several datasets (and splits) combined into one.

    >>> combined = combine([("market1501", "train"), ("dukemtmcreid", "train")], root="data")  # doctest: +SKIP
    >>> combined.num_pids, combined.num_cams, combined.pid_names[0]                            # doctest: +SKIP
    (1453, 14, 'market1501_2')

Rules:

* identities are keyed by ``(dataset name, original id)`` — shown as ``"<dataset>_<pid>"``
  in :attr:`CombinedDataset.pid_names` — so equal numbers in two datasets never collide;
  they are relabelled to ``0..N-1`` in order of first appearance (sources in the given
  order, records in their parser order);
* cameras are made unique per dataset: each source's cameras (sorted; an unknown camera
  −1 counts as one camera of its own) get consecutive ids after the previous source's;
* every record carries ``dsetid`` = the index of its source in the list;
* junk (−1) and distractor (0) identities never become training identities;
* ``split`` is ``train`` or ``all`` (train + query + gallery, as in Protocols 1 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence, Union

from muva.data.datasets import open_dataset
from muva.data.records import SOURCE_SPLITS, DatasetError, ImageRecord, ReIDDataset, drop_unusable_train

Part = Union[ReIDDataset, str, tuple]


@dataclass
class CombinedDataset(ReIDDataset):
    """A training set made of several sources; ``train`` holds relabelled records.

    Attributes (beyond :class:`ReIDDataset`):
        sources: ``[(dataset name, split), …]`` in ``dsetid`` order.
        pid_names: ``pid_names[i]`` is ``"<dataset>_<original id>"`` of training identity ``i``.
        cam_names: ``cam_names[c]`` is ``"<dataset>_c<original camera>"`` of global camera ``c``.
        source_info: each source's ``ReIDDataset.info`` (e.g. MSMT17's ``train_split``).
    """

    sources: list[tuple[str, str]] = field(default_factory=list)
    pid_names: list[str] = field(default_factory=list)
    cam_names: list[str] = field(default_factory=list)
    source_info: list[dict] = field(default_factory=list)

    @property
    def num_pids(self) -> int:
        return len(self.pid_names)

    @property
    def num_cams(self) -> int:
        return len(self.cam_names)

    @property
    def num_sources(self) -> int:
        return len(self.sources)

    def source_stats(self) -> list[tuple[str, str, int, int, int]]:
        """Per source: (name, split, identities, images, cameras) after combining."""
        out = []
        for d, (name, split) in enumerate(self.sources):
            recs = [r for r in self.train if r.dsetid == d]
            out.append((name, split, len({r.pid for r in recs}), len(recs), len({r.camid for r in recs})))
        return out


def _resolve(part: Part, root) -> tuple[ReIDDataset, str]:
    split = "train"
    if isinstance(part, tuple):
        if len(part) != 2:
            raise DatasetError(f"a source is (dataset, split), got {part!r}")
        part, split = part
    if split not in SOURCE_SPLITS:
        raise DatasetError(f"source split {split!r} is not one of {', '.join(SOURCE_SPLITS)}")
    ds = part if isinstance(part, ReIDDataset) else open_dataset(part, root)
    return ds, split


def combine(parts: Sequence[Part] | Iterable[Part], root: str | Path | None = None, name: str | None = None) -> CombinedDataset:
    """Combine sources into one training set (see the module doc for the rules).

    Each part is a :class:`ReIDDataset`, a dataset spec for :func:`open_dataset` (name or
    path; opened under ``root``), or a ``(dataset-or-spec, split)`` pair with split
    ``train`` (the default) or ``all``.  Two parts with the same dataset name share
    identities (e.g. one dataset's train split and its query/gallery).
    """
    resolved = [_resolve(p, root) for p in parts]
    if not resolved:
        raise DatasetError("combine() needs at least one source")
    pid_index: dict[tuple[str, int], int] = {}
    cam_index: dict[tuple[str, int], int] = {}
    pid_names: list[str] = []
    cam_names: list[str] = []
    train: list[ImageRecord] = []
    for dsetid, (ds, split) in enumerate(resolved):
        found = ds.records(split)
        records = drop_unusable_train(found)
        if not records:
            why = (f"its {len(found)} image(s) are all junk (-1) or distractors (0)" if found
                   else f"the {'train split' if split == 'train' else 'dataset'} is empty")
            raise DatasetError(f"source {ds.name!r} ({split}) holds no usable training identity: {why} ({ds.root})")
        for cam in sorted({r.camid for r in records}):
            key = (ds.name, cam)
            if key not in cam_index:
                cam_index[key] = len(cam_names)
                cam_names.append(f"{ds.name}_c{cam}")
        for r in records:
            key = (ds.name, r.pid)
            if key not in pid_index:
                pid_index[key] = len(pid_names)
                pid_names.append(f"{ds.name}_{r.pid}")
            train.append(replace(r, pid=pid_index[key], camid=cam_index[(ds.name, r.camid)], dataset=ds.name, dsetid=dsetid))
    sources = [(ds.name, split) for ds, split in resolved]
    label = name or "+".join(f"{n}" if s == "train" else f"{n}[{s}]" for n, s in sources)
    return CombinedDataset(
        name=label,
        root=Path(resolved[0][0].root),
        train=train,
        info={"sources": [f"{n}:{s}" for n, s in sources], **_merged_info(resolved)},
        sources=sources,
        pid_names=pid_names,
        cam_names=cam_names,
        source_info=[dict(ds.info) for ds, _ in resolved],
    )


def _merged_info(resolved: list[tuple[ReIDDataset, str]]) -> dict:
    """Choices that change numbers, keyed by dataset (e.g. ``msmt17.train_split``)."""
    out = {}
    for ds, _ in resolved:
        for key in ("train_split", "variant", "version"):
            if key in ds.info:
                out[f"{ds.name}.{key}"] = ds.info[key]
    return out

"""The small DG targets of Protocol 1: VIPeR, PRID2011 (single-shot), GRID, QMUL-iLIDS.

Each has ten query/gallery splits; ``split`` (0-9) picks one and ``dataset.info`` records
``split`` and ``num_splits``.  VIPeR, PRID and iLIDS use the fixed split files shipped in
``muva/resources/splits/`` (see :mod:`muva.data.splits` for seed and construction);
``split_file=`` reads another file of the same format.  GRID's splits come from its own
``features_and_partitions.mat`` (``trainIdxAll``: ten lists of 125 training identities).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import image_files, locate, nestings
from muva.data.records import DISTRACTOR_PID, DatasetError, ImageRecord, ReIDDataset, SplitProblem, UnusableDatasetError
from muva.data.splits import load_splits, pick_pair


# The fixed query/gallery splits each of these targets ships with (their records' ``num_splits``).
FIXED_SPLITS = 10


def _split_entry(dataset: str, label: str, split: int, split_file, num_persons: int) -> tuple[dict, int, list[str]]:
    """The split's entry, the number of splits, and the problems of an incomplete copy (none if complete)."""
    doc = load_splits(dataset, split_file)
    n = len(doc["splits"])
    if not 0 <= int(split) < n:
        raise DatasetError(f"{label}: split {split} does not exist; choose 0..{n - 1}")
    problems = []
    if doc.get("num_persons") not in (None, num_persons):
        problems.append(
            f"{label}: the split file indexes {doc['num_persons']} persons but {num_persons} were found; "
            f"the dataset copy is incomplete or not the official release (compare: muva data check {dataset})"
        )
    return doc["splits"][int(split)], n, problems


def _complete(ds: ReIDDataset, problems: list[str]) -> ReIDDataset:
    """``ds``, or an :class:`UnusableDatasetError` (status ``incomplete``) carrying it."""
    if problems:
        raise UnusableDatasetError([SplitProblem(None, "incomplete", "; ".join(problems))], dataset=ds)
    return ds


def _info(split: int, num_splits: int, **extra) -> dict:
    return {"split": int(split), "num_splits": num_splits, **extra}


# ----------------------------------------------------------------------------- VIPeR
VIPER_NESTINGS = nestings("VIPeR", "viper", "VIPeR.v1.0", "VIPER")


@register_dataset("viper", standard=True, num_splits=FIXED_SPLITS)
def viper(root: Path, split: int = 0, split_file: str | Path | None = None) -> ReIDDataset:
    """VIPeR (Gray et al. 2007): 632 persons × 2 cameras; 316 query (cam_a) / 316 gallery (cam_b)."""
    folder = locate(Path(root), "VIPeR", ["cam_a", "cam_b"], VIPER_NESTINGS)
    cams = []
    for cam in ("cam_a", "cam_b"):
        by_key = {}
        for p in image_files(folder / cam):
            by_key.setdefault(p.name.split("_")[0], p)
        cams.append(by_key)
    problems = []
    if set(cams[0]) == set(cams[1]):
        keys = sorted(cams[0])
        pairs = [(cams[0][k], cams[1][k]) for k in keys]
    elif len(cams[0]) == len(cams[1]):  # names do not share prefixes: pair in sorted order
        pairs = list(zip(sorted(cams[0].values()), sorted(cams[1].values())))
    else:  # keep the persons seen by both cameras, and say the copy is incomplete
        pairs = [(cams[0][k], cams[1][k]) for k in sorted(set(cams[0]) & set(cams[1]))]
        problems.append(
            f"VIPeR: cam_a holds {len(cams[0])} persons and cam_b {len(cams[1])}; each person needs one image per camera"
        )
    entry, n, incomplete = _split_entry("viper", "VIPeR", split, split_file, len(pairs))
    problems += incomplete
    test = set(entry["test"])
    ds = ReIDDataset("viper", folder, info=_info(split, n))
    for idx, (a, b) in enumerate(pairs):
        pid = idx + 1
        ra, rb = ImageRecord(str(a), pid, 0, "viper"), ImageRecord(str(b), pid, 1, "viper")
        if idx in test:
            ds.query.append(ra)
            ds.gallery.append(rb)
        else:
            ds.train += [ra, rb]
    return _complete(ds, problems)


# ----------------------------------------------------------------------------- PRID2011
PRID_SHARED = 200  # persons 1..200 are seen by both cameras
_PRID_NAME = re.compile(r"^person_(\d+)")
_PRID_NAMES = ("prid_2011", "prid2011", "PRID2011", "prid", "PRID", "prid-2011")
PRID_NESTINGS = tuple(
    dict.fromkeys(
        ["", "single_shot"]
        + [f"{n}/single_shot" for n in _PRID_NAMES]
        + [f"{a}/{b}/single_shot" for a in _PRID_NAMES for b in _PRID_NAMES]
        + list(_PRID_NAMES)
    )
)


def _prid_cam(folder: Path) -> dict[int, Path]:
    out = {}
    for p in image_files(folder):
        m = _PRID_NAME.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


@register_dataset("prid2011", aliases=("prid", "prid-2011"), standard=True, num_splits=FIXED_SPLITS)
def prid2011(root: Path, split: int = 0, split_file: str | Path | None = None) -> ReIDDataset:
    """PRID2011 single-shot (Hirzer et al. 2011): 100 query (cam_a) / 649 gallery (cam_b) per split."""
    folder = locate(Path(root), "PRID2011 (single_shot)", ["cam_a", "cam_b"], PRID_NESTINGS)
    cam_a, cam_b = _prid_cam(folder / "cam_a"), _prid_cam(folder / "cam_b")
    # Only persons 1-200 appear in both cameras; numbers above 200 name different,
    # single-camera persons in cam_a and cam_b (cam_b's serve as gallery distractors).
    shared = sorted(p for p in set(cam_a) & set(cam_b) if p <= PRID_SHARED)
    entry, n, problems = _split_entry("prid2011", "PRID2011", split, split_file, len(shared))
    test, train = set(entry["test"]), set(entry["train"])
    ds = ReIDDataset("prid2011", folder, info=_info(split, n))
    for pid in sorted(cam_a):
        if pid in test:
            ds.query.append(ImageRecord(str(cam_a[pid]), pid, 0, "prid2011"))
        elif pid in train:
            ds.train.append(ImageRecord(str(cam_a[pid]), pid, 0, "prid2011"))
    for pid in sorted(cam_b):
        rec = ImageRecord(str(cam_b[pid]), pid, 1, "prid2011")
        if pid in train:
            ds.train.append(rec)
        elif pid in test or pid > PRID_SHARED:  # test persons + persons seen only by cam_b
            ds.gallery.append(rec)
    return _complete(ds, problems)


# ----------------------------------------------------------------------------- GRID
GRID_NESTINGS = nestings("underground_reid", "grid", "GRID", "qmul_grid", "QMUL_GRID")
GRID_PARTITIONS = "features_and_partitions.mat"


def grid_partitions(mat_file: Path) -> list[list[int]]:
    """The ten lists of training identities (1-based) stored in ``trainIdxAll``."""
    from scipy.io import loadmat  # heavy (~0.5 s): imported only when GRID's .mat partition file is read

    try:
        data = loadmat(str(mat_file))
    except Exception as exc:  # scipy raises several types for broken files
        raise DatasetError(f"GRID: cannot read {mat_file}: {exc}") from None
    if "trainIdxAll" not in data:
        keys = ", ".join(k for k in data if not k.startswith("__"))
        raise DatasetError(f"GRID: {mat_file} lacks 'trainIdxAll' (found: {keys})")
    cells = np.asarray(data["trainIdxAll"], dtype=object).ravel()
    return [sorted(int(v) for v in np.asarray(c).ravel()) for c in cells]


def _grid_folder(folder: Path) -> list[tuple[Path, int, int]]:
    out = []
    for p in image_files(folder):
        fields = p.stem.split("_")
        try:
            pid, cam = int(fields[0]), int(fields[1]) - 1
        except (IndexError, ValueError):
            continue
        out.append((p, pid, cam))
    return out


@register_dataset("grid", aliases=("qmul-grid",), standard=True, num_splits=FIXED_SPLITS)
def grid(root: Path, split: int = 0) -> ReIDDataset:
    """GRID (Loy et al. 2009): 125 query / 900 gallery (125 + 775 distractors) per split, 8 cameras."""
    folder = locate(Path(root), "GRID", ["probe", "gallery", GRID_PARTITIONS], GRID_NESTINGS)
    parts = grid_partitions(folder / GRID_PARTITIONS)
    if not 0 <= int(split) < len(parts):
        raise DatasetError(f"GRID: split {split} does not exist; {GRID_PARTITIONS} holds {len(parts)} (0..{len(parts) - 1})")
    train_ids = set(parts[int(split)])
    probe, gallery = _grid_folder(folder / "probe"), _grid_folder(folder / "gallery")
    ds = ReIDDataset("grid", folder, info=_info(split, len(parts), partition_file=str(folder / GRID_PARTITIONS)))
    for p, pid, cam in probe:
        if pid == DISTRACTOR_PID:
            continue
        (ds.train if pid in train_ids else ds.query).append(ImageRecord(str(p), pid, cam, "grid"))
    for p, pid, cam in gallery:
        (ds.train if pid in train_ids else ds.gallery).append(ImageRecord(str(p), pid, cam, "grid"))
    return ds


# ----------------------------------------------------------------------------- QMUL-iLIDS
ILIDS_NESTINGS = nestings("i-LIDS_Pedestrian", "ilids", "iLIDS", "QMUL-iLIDS", "QMUL_iLIDS", "qmul-ilids", "i-LIDS")


@register_dataset("ilids", aliases=("qmul-ilids", "i-lids"), standard=True, num_splits=FIXED_SPLITS)
def ilids(root: Path, split: int = 0, split_file: str | Path | None = None) -> ReIDDataset:
    """QMUL-iLIDS (Zheng et al. 2009): 119 persons / 476 images; 60 query / 60 gallery per split.

    Without real cameras, the image's index within its person serves as pseudo-camera in
    ``train``; query images get camera 0 and gallery images camera 1.
    """
    folder = locate(Path(root), "QMUL-iLIDS", ["Persons"], ILIDS_NESTINGS)
    groups: dict[int, list[Path]] = defaultdict(list)
    for p in image_files(folder / "Persons"):
        if p.name[:4].isdigit():
            groups[int(p.name[:4])].append(p)
    pids = sorted(groups)
    entry, n, problems = _split_entry("ilids", "QMUL-iLIDS", split, split_file, len(pids))
    test = set(entry["test"])
    picks = entry.get("picks", {})
    ds = ReIDDataset("ilids", folder, info=_info(split, n))
    for idx, pid in enumerate(pids):
        images = sorted(groups[pid])
        if idx in test:
            if len(images) < 2:
                if problems:  # an incomplete copy: persons shifted position; report it, do not stop here
                    continue
                raise DatasetError(f"QMUL-iLIDS: test person {pid:04d} has {len(images)} image(s); two are needed")
            a, b = picks.get(str(idx), (0, 0))
            qi, gi = pick_pair(int(a), int(b), len(images))
            ds.query.append(ImageRecord(str(images[qi]), pid, 0, "ilids"))
            ds.gallery.append(ImageRecord(str(images[gi]), pid, 1, "ilids"))
        else:
            ds.train += [ImageRecord(str(p), pid, i, "ilids") for i, p in enumerate(images)]
    return _complete(ds, problems)

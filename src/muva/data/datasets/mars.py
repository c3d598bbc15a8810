"""MARS (Zheng et al. 2016), a video re-ID dataset read frame by frame as images.

Layout: ``bbox_train/PPPP/PPPPCcTttttFfff.jpg`` and ``bbox_test/PPPP/…`` (identity
``PPPP`` — ``00-1`` is junk, ``0000`` distractors —, camera ``c`` 1-6, tracklet ``tttt``
numbered per identity and camera, frame ``fff``).  Every frame becomes an
:class:`ImageRecord` whose ``trackid`` is a dataset-wide tracklet index (train tracklets
first, then test ones, in sorted order of (identity, camera, tracklet)).

Query / gallery:

* **With the official ``info/`` files** (``train_name.txt``, ``test_name.txt``,
  ``tracks_train_info.mat``, ``tracks_test_info.mat``, ``query_IDX.mat``): the test
  tracklets listed in ``query_IDX`` are the queries; each contributes its middle frame
  (index ``len // 2`` of its frames in order) as the query image.  The gallery is every
  other test frame (junk identity −1 dropped, distractors 0 kept).
* **Without them** (e.g. the shared ``mini_mars`` subset, only ``bbox_train/`` and
  ``bbox_test/``): every test tracklet contributes its middle frame as a query and the
  gallery is every other test frame.  Evaluation removes same-identity same-camera
  gallery frames per query (which includes the rest of the query's own tracklet).

``dataset.info["query_mode"]`` says which construction was used.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import image_files, locate, nestings
from muva.data.datasets.usable import split_problems
from muva.data.records import JUNK_PID, DatasetError, ImageRecord, ReIDDataset, SplitProblem, UnusableDatasetError

_MARS_NAME = re.compile(r"^(-?\d+|00-1)C(\d)T(\d+)F(\d+)", re.IGNORECASE)
MARS_NESTINGS = nestings("MARS", "mars", "MARS-v160809", "Mars")
INFO_FILES = ("train_name.txt", "test_name.txt", "tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat")


def parse_mars_filename(name: str) -> tuple[int, int, int, int]:
    """``'0003C4T0003F012.jpg'`` → ``(3, 3, 3, 12)`` (identity, 0-based camera, tracklet, frame)."""
    m = _MARS_NAME.match(Path(name).name)
    if not m:
        raise DatasetError(f"file name {name!r} does not follow the MARS pattern PPPPCcTttttFfff")
    pid = -1 if m.group(1) == "00-1" else int(m.group(1))
    return pid, int(m.group(2)) - 1, int(m.group(3)), int(m.group(4))


def _scan(split_dir: Path, skipped: list[str]) -> dict[tuple[int, int, int], list[tuple[int, Path]]]:
    """Tracklets of one split folder: (pid, cam, tracklet) → sorted [(frame, path)]."""
    tracks: dict[tuple[int, int, int], list[tuple[int, Path]]] = defaultdict(list)
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for path in image_files(sub):
            try:
                pid, cam, t, f = parse_mars_filename(path.name)
            except DatasetError:
                skipped.append(str(path))
                continue
            tracks[(pid, cam, t)].append((f, path))
    for frames in tracks.values():
        frames.sort()
    return dict(sorted(tracks.items()))


def _read_info(info_dir: Path, folder: Path) -> tuple[list, list, set[int]]:
    """Official tracklets as lists of (pid, cam, [paths]) and the set of query tracklet indices."""
    from scipy.io import loadmat  # heavy (~0.5 s): imported only when the official .mat files are read

    def names(file: str) -> list[str]:
        return [ln.strip() for ln in (info_dir / file).read_text(encoding="utf-8").splitlines() if ln.strip()]

    def tracks(mat: str, key: str, frames: list[str], split_dir: str) -> list:
        arr = np.asarray(loadmat(str(info_dir / mat))[key])
        out = []
        for start, end, pid, cam in arr[:, :4].astype(int):
            paths = [folder / split_dir / n[:4] / n for n in frames[start - 1 : end]]
            out.append((int(pid), int(cam) - 1, paths))
        return out

    try:
        train = tracks("tracks_train_info.mat", "track_train_info", names("train_name.txt"), "bbox_train")
        test = tracks("tracks_test_info.mat", "track_test_info", names("test_name.txt"), "bbox_test")
        qidx = {int(i) - 1 for i in np.asarray(loadmat(str(info_dir / "query_IDX.mat"))["query_IDX"]).ravel()}
    except (KeyError, ValueError, OSError) as exc:
        raise DatasetError(f"MARS: cannot read the official info files in {info_dir}: {exc}") from None
    return train, test, qidx


@register_dataset("mars", standard=True)
def mars(root: Path, use_info: bool | None = None) -> ReIDDataset:
    """MARS frames as images (tracklet ids kept); see the module doc for query/gallery.

    ``use_info``: None = use ``info/`` when present; False = ignore it; True = require it.
    """
    folder = locate(Path(root), "MARS", ["bbox_train", "bbox_test"], MARS_NESTINGS)
    info_dir = next((d for d in (folder / "info", folder.parent / "info", folder / "MARS-evaluation-master" / "info") if d.is_dir()), None)
    has_info = info_dir is not None and all((info_dir / f).is_file() for f in INFO_FILES)
    if use_info and not has_info:
        raise DatasetError(f"MARS: use_info=True but the official info files ({', '.join(INFO_FILES)}) are not in {folder / 'info'}")
    ds = ReIDDataset("mars", folder)
    unparsed: dict[str, list[str]] = {"train": [], "test": []}
    if has_info and use_info is not False:
        train, test, qidx = _read_info(info_dir, folder)
        ds.info.update(query_mode="official query_IDX, middle frame per query tracklet", info_dir=str(info_dir))
    else:
        train = [(k[0], k[1], [p for _, p in v]) for k, v in _scan(folder / "bbox_train", unparsed["train"]).items()]
        test = [(k[0], k[1], [p for _, p in v]) for k, v in _scan(folder / "bbox_test", unparsed["test"]).items()]
        qidx = {i for i, (pid, _, _) in enumerate(test) if pid > 0}
        ds.info.update(query_mode="no info/ files: middle frame of every test tracklet")
        skipped = unparsed["train"] + unparsed["test"]
        if skipped:
            ds.info["skipped"] = skipped
    trackid = 0
    for pid, cam, paths in train:
        if pid > 0:
            ds.train += [ImageRecord(str(p), pid, cam, "mars", trackid) for p in paths]
        trackid += 1
    for i, (pid, cam, paths) in enumerate(test):
        if pid != JUNK_PID and paths:
            q = len(paths) // 2 if i in qidx else -1
            for j, p in enumerate(paths):
                (ds.query if j == q else ds.gallery).append(ImageRecord(str(p), pid, cam, "mars", trackid))
        trackid += 1
    ds.info["num_tracklets"] = trackid
    folders = {"train": folder / "bbox_train", "query": folder / "bbox_test", "gallery": folder / "bbox_test"}
    problems = split_problems(ds, folders=folders, recursive=True,
                              naming="MARS names PPPPCcTttttFfff, e.g. 0003C4T0003F012.jpg, in PPPP/ sub-folders",
                              unparsed={"train": unparsed["train"], "query": unparsed["test"], "gallery": unparsed["test"]})
    if ds.query and not ds.gallery:  # the test frames exist, but each query tracklet had a single frame
        problems = [p for p in problems if p.split != "gallery"] + [SplitProblem(
            "gallery", "empty", f"mars: the gallery split is empty: each query tracklet in {folder / 'bbox_test'}/ has a single "
            "frame (its query image) and there is no other test frame")]
    if problems:
        raise UnusableDatasetError(problems, dataset=ds)
    return ds

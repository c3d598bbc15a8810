"""Image records and re-ID datasets: the first step of the data flow.

dataset folder → parser → :class:`ReIDDataset` (lists of :class:`ImageRecord`) → loader.

Identity conventions (shared by every parser):

* ``pid == -1`` marks junk images; parsers drop them.
* ``pid == 0`` marks distractors (Market-1501); they stay in the gallery as negatives
  and never become training identities.
* ``camid`` is 0-based; ``UNKNOWN_CAMERA`` (-1) when a dataset has no camera ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from rich.table import Table

from muva.utils.errors import MuvaError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
UNKNOWN_CAMERA = -1
JUNK_PID = -1
DISTRACTOR_PID = 0
SPLITS = ("train", "query", "gallery")
# Source splits a training set may draw from: ``train`` or ``all`` (train + query + gallery,
# as Protocols 1 and 3 use).
SOURCE_SPLITS = ("train", "all")


class DatasetError(MuvaError, ValueError):
    """A dataset that cannot be read as asked (missing folders, wrong layout, bad files)."""


@dataclass(frozen=True)
class SplitProblem:
    """Why a parsed dataset cannot serve: ``split`` (None = the whole dataset), a short
    ``status`` for tables (``empty``, ``names unparsed``, ``incomplete``) and the full ``message``."""

    split: str | None
    status: str
    message: str


class UnusableDatasetError(DatasetError):
    """A dataset that was found and read but cannot serve for training or evaluation.

    An expected split is empty, no file name of a split parses, or a copy is incomplete.
    ``dataset`` holds what was read (so that ``muva data check`` can show the found
    numbers beside the official ones) and ``problems`` one :class:`SplitProblem` each.
    """

    def __init__(self, problems: Sequence[SplitProblem], dataset: "ReIDDataset | None" = None):
        self.problems = list(problems)
        self.dataset = dataset
        messages = [p.message for p in self.problems]
        head = messages[0].split(": ", 1)[0] + ": " if messages and ": " in messages[0] else ""
        if head and all(m.startswith(head) for m in messages):  # "x: a; b" rather than "x: a; x: b"
            messages = messages[:1] + [m[len(head):] for m in messages[1:]]
        super().__init__("; ".join(messages))

    def status_of(self, split: str) -> str | None:
        """The status of ``split`` (a whole-dataset problem counts for every split), or None."""
        for p in self.problems:
            if p.split in (split, None):
                return p.status
        return None


def is_image_file(path: str | Path) -> bool:
    """True for a non-hidden file name with an image suffix (``._x.jpg`` macOS forks are not images)."""
    name = Path(path).name
    if name.startswith("."):
        return False
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image of a re-ID dataset.

    Attributes:
        path: path of the image file (absolute when produced by a parser).
        pid: identity as found in the dataset (not relabelled; see module doc).
        camid: 0-based camera index, or ``UNKNOWN_CAMERA``.
        dataset: name of the dataset it comes from (e.g. ``market1501``).
        trackid: tracklet index for video datasets (MARS), else -1.
        dsetid: index of the source dataset inside a combined (multi-source) set.
    """

    path: str
    pid: int
    camid: int = UNKNOWN_CAMERA
    dataset: str = ""
    trackid: int = -1
    dsetid: int = 0


@dataclass(frozen=True)
class SplitStats:
    num_pids: int
    num_images: int
    num_cams: int

    @classmethod
    def of(cls, records: Sequence[ImageRecord]) -> "SplitStats":
        pids = {r.pid for r in records}
        cams = {r.camid for r in records if r.camid != UNKNOWN_CAMERA}
        return cls(len(pids), len(records), len(cams))


@dataclass
class ReIDDataset:
    """A re-ID dataset: train / query / gallery record lists plus metadata.

    ``info`` carries choices that change the numbers (e.g. MSMT17's ``train`` vs
    ``train+val``) so that results can record them.
    """

    name: str
    root: Path
    train: list[ImageRecord] = field(default_factory=list)
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> list[ImageRecord]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, name)

    def records(self, split: str) -> list[ImageRecord]:
        """Records of ``train`` / ``query`` / ``gallery``, or ``all`` (the three concatenated)."""
        if split == "all":
            return self.train + self.query + self.gallery
        return self.split(split)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train if r.camid != UNKNOWN_CAMERA})

    def stats(self) -> dict[str, SplitStats]:
        return {s: SplitStats.of(self.split(s)) for s in SPLITS}

    def summary_table(self, title: str | None = None):
        """A rich table of identities / images / cameras per split."""
        table = Table(title=title or f"{self.name} ({self.root})")
        table.add_column("split")
        table.add_column("identities", justify="right")
        table.add_column("images", justify="right")
        table.add_column("cameras", justify="right")
        for split, st in self.stats().items():
            table.add_row(split, f"{st.num_pids:,}", f"{st.num_images:,}", str(st.num_cams))
        return table

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={st.num_pids}ids/{st.num_images}imgs" for s, st in self.stats().items())
        return f"ReIDDataset({self.name!r}, {parts})"


def drop_unusable_train(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Records that may serve as training identities: junk (-1) and distractors (0) removed."""
    return [r for r in records if r.pid not in (JUNK_PID, DISTRACTOR_PID)]


def relabel(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], dict[int, int]]:
    """Map identities to 0..N-1 in sorted order of the original ids; returns records and the map."""
    records = list(records)
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [replace(r, pid=mapping[r.pid]) for r in records], mapping

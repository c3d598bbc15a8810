"""The ``parts.jsonl`` file of a synthetic domain: its record, its writer and its one reader.

``muva synth`` writes one JSON object per image, one per line, in the order of the
domain's images::

    {"path": "<split folder>/<file>", "pid": P, "camid": C, "width": W, "height": H,
     "boxes": {part: [x0, y0, x1, y1], ...}, "occluded": [part, ...], "view": "front"}

Boxes are float pixels of the image, x1/y1 exclusive; ``occluded`` lists the parts an
occluder hides (their box is where the part would be, not visible evidence); ``view`` is
``front``, ``back``, ``left`` or ``right``.  :func:`read_parts_jsonl` reads any such file
(grounding evaluation reads hand-made ground truth with it too: there only ``path`` and
``boxes`` are required).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from muva.data.records import DatasetError
from muva.utils.io import atomic_write_text

Box = tuple[float, float, float, float]

PARTS_FILE = "parts.jsonl"


class PartsFileError(DatasetError):
    """A ``parts.jsonl`` file that is missing or does not parse (the message names the line)."""


@dataclass(frozen=True)
class PartsRecord:
    """The part boxes of one image (a line of ``parts.jsonl``).

    ``width`` / ``height`` are 0 and ``pid`` / ``camid`` / ``view`` None when a file
    leaves them out.
    """

    path: str                          # "<split folder>/<file>", relative to the domain folder
    width: int
    height: int
    boxes: dict[str, Box]              # part → (x0, y0, x1, y1), pixels, x1/y1 exclusive
    occluded: tuple[str, ...] = ()     # parts hidden by an occluder
    pid: int | None = None
    camid: int | None = None           # 0-based
    view: str | None = None

    def to_json(self) -> dict:
        """The JSON object of this record, keys in the order ``muva synth`` writes them."""
        obj: dict = {"path": self.path}
        if self.pid is not None:
            obj["pid"] = self.pid
        if self.camid is not None:
            obj["camid"] = self.camid
        obj.update(width=self.width, height=self.height, boxes={p: list(b) for p, b in self.boxes.items()},
                   occluded=list(self.occluded))
        if self.view is not None:
            obj["view"] = self.view
        return obj


def write_parts_jsonl(path: str | Path, records: Iterable[PartsRecord]) -> None:
    """Write ``records`` to ``path`` (atomically: a reader never sees half a file)."""
    atomic_write_text(path, "".join(json.dumps(r.to_json()) + "\n" for r in records))


def _optional_int(obj: dict, key: str) -> int | None:
    return None if obj.get(key) is None else int(obj[key])


def _record(obj: dict) -> PartsRecord:
    boxes = {}
    for part, box in obj["boxes"].items():
        box = tuple(float(v) for v in box)
        if len(box) != 4:
            raise ValueError(f"the box of {part!r} has {len(box)} numbers, expected 4 (x0, y0, x1, y1)")
        boxes[str(part)] = box
    occluded = obj.get("occluded", [])
    if isinstance(occluded, str):
        raise TypeError("'occluded' must be a list of part names")
    view = obj.get("view")
    return PartsRecord(str(obj["path"]), int(obj.get("width", 0)), int(obj.get("height", 0)), boxes,
                       tuple(str(p) for p in occluded), _optional_int(obj, "pid"), _optional_int(obj, "camid"),
                       None if view is None else str(view))


def read_parts_jsonl(path: str | Path) -> list[PartsRecord]:
    """Read a ``parts.jsonl`` file (blank lines skipped); a bad line is an error naming its number."""
    path = Path(path)
    if not path.is_file():
        raise PartsFileError(f"ground-truth file {path} does not exist (muva synth writes parts.jsonl in each domain folder)")
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(_record(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise PartsFileError(f"{path}:{n}: not a parts record ({type(exc).__name__}: {exc})") from None
    return out


def read_parts(domain_dir: str | Path) -> dict[str, PartsRecord]:
    """The records of a synthetic domain's ``parts.jsonl``, keyed by path relative to the domain folder."""
    path = Path(domain_dir) / PARTS_FILE
    if not path.is_file():
        raise PartsFileError(f"{path} not found: is {domain_dir} a domain folder written by `muva synth`?")
    return {rec.path: rec for rec in read_parts_jsonl(path)}

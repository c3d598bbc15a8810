"""Checks on ``.safetensors`` files that read only the header and the file size (no tensor).

Shared by the model files (:mod:`muva.models.io`) and the feature folders
(:mod:`muva.utils.featurefiles`), which both say exactly why a file cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["safetensors_problem"]


def safetensors_problem(path: str | Path) -> str | None:
    """Why a ``.safetensors`` file cannot be read (truncated, header unreadable, size mismatch), or None.

    Reads the 8-byte header length and the JSON header only, and compares the size the
    header describes with the file's.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            raw = fh.read(n) if 0 <= n <= size - 8 else b""
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if n < 0:
        return f"truncated: {size} byte(s), not even the 8-byte header length"
    if n > size - 8:
        return f"truncated or corrupt: the header length says {n:,} bytes follow, the file holds {size - 8:,}"
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "corrupt: the header is unreadable (not the JSON tensor table of a safetensors file)"
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        what = "truncated" if size < expected else "corrupt"
        return f"{what}: size mismatch, the header describes {expected:,} bytes but the file has {size:,}"
    return None

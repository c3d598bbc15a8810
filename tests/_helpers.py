"""Small helpers shared by test modules (import as ``from _helpers import ...``)."""

from __future__ import annotations

from pathlib import Path


def touch(path: Path) -> Path:
    """Create a placeholder file (and its folders): enough for parsers that read names only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def stats(ds):
    """``{split: (identities, images, cameras)}`` of a ReIDDataset."""
    return {s: (st.num_pids, st.num_images, st.num_cams) for s, st in ds.stats().items()}

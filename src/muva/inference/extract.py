"""Extract a dataset or a folder of images into a feature folder (``muva extract``).

Sources: a registered dataset name (``market1501`` with ``--root``), a dataset folder
(Market-1501 layout or a synthetic domain), or any folder of images (searched
recursively; identity and camera are read from Market-style ``PPPP_cC…`` or MARS-style
``PPPPCcT…`` file names when they follow one, else -1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from muva.data.datasets import UnusableDatasetError, resolve_source
from muva.data.datasets.resolve import folder_records, parse_identity
from muva.data.records import DatasetError
from muva.utils.featurefiles import MANIFEST, FeatureFileError, FeatureWriter
from muva.utils.progress import progress_bar

DEFAULT_SPLITS = ("query", "gallery")


__all__ = ["DEFAULT_SPLITS", "parse_identity", "folder_rows", "gather_rows", "extract_to_folder"]


def folder_rows(folder: str | Path) -> list[dict]:
    """Rows (path, pid, camid, split="", dataset="") for every image under ``folder``."""
    return [{"path": r.path, "pid": r.pid, "camid": r.camid, "split": "", "dataset": ""} for r in folder_records(folder)]


def gather_rows(source: str, *, root: str | Path | None = None, splits: Sequence[str] = DEFAULT_SPLITS,
                options: Mapping[str, Any] | None = None) -> tuple[list[dict], dict]:
    """Rows to extract from ``source`` and a description of where they came from.

    A dataset contributes the records of ``splits``; a plain folder contributes every
    image under it.  ``options`` (dataset options, e.g. ``{"split": 3}``) mean ``source``
    must be a dataset.  Raises :class:`DatasetError` when ``source`` is neither (see
    :func:`muva.data.datasets.resolve_source`).
    """
    path = Path(source).expanduser()
    try:
        src = resolve_source(source, root, options)
    except DatasetError as exc:
        if options or path.exists() or isinstance(exc, UnusableDatasetError):
            raise
        raise DatasetError(f"{source!r} is neither a registered dataset nor a folder: {str(exc).strip(chr(34))}") from None
    rows = src.rows(splits)
    if not rows:
        raise DatasetError(f"dataset {src.name} has no images in split(s) {', '.join(splits)}")
    return rows, src.describe(splits)


def extract_to_folder(
    extractor,
    rows: list[dict],
    out_dir: str | Path,
    *,
    shard_size: int = 8192,
    resume: bool = True,
    progress: bool = True,
    source: dict | None = None,
) -> dict:
    """Extract ``rows`` into the feature folder ``out_dir`` (see :mod:`muva.utils.featurefiles`).

    With ``resume`` (the default) images already in ``out_dir`` from an interrupted or
    earlier run are skipped.  Returns a summary: rows written, skipped, failed.
    """
    meta = {"extractor": extractor.describe(), "source": source or {}}
    if resume:
        _check_same_settings(out_dir, meta["extractor"])
    writer = FeatureWriter(out_dir, dim=extractor.dim, shard_size=shard_size, resume=resume, meta=meta)
    todo = [r for r in rows if r["path"] not in writer.done_paths]
    skipped = len(rows) - len(todo)
    written = 0
    new_failed = 0
    with progress_bar("extracting", total=len(todo), disable=not progress) as advance:
        for indices, feats, _, failed in extractor.iter_files([r["path"] for r in todo]):
            if indices:
                writer.add([dict(todo[i]) for i in indices], feats)
                written += len(indices)
            for i, err in failed.items():
                writer.add_failed(todo[i]["path"], err)
            new_failed += len(failed)
            advance(len(indices) + len(failed))
    writer.close()
    return {
        "out": str(out_dir),
        "written": written,
        "skipped_existing": skipped,
        "failed": new_failed,
        "failed_total": len(writer.failed),
        "rows": writer.manifest["num_rows"],
        "dim": writer.dim,
    }


RESUME_KEYS = ("checkpoint", "flip", "before_bn", "input_size", "dim")


def _check_same_settings(out_dir: str | Path, extractor: dict) -> None:
    """Refuse to append to a feature folder made with another model or other settings."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text()).get("meta", {}).get("extractor", {})
    except ValueError:
        return
    diff = [f"{k}: {old[k]!r} → {extractor.get(k)!r}" for k in RESUME_KEYS if k in old and old[k] != extractor.get(k)]
    if diff:
        raise FeatureFileError(
            f"{out_dir} holds features made with other settings ({'; '.join(diff)}); "
            "pass --overwrite to replace them or choose another -o folder"
        )

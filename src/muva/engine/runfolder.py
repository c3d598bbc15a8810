"""Run-folder hygiene: one run per folder, resumes that fit, clean stops on Ctrl-C / SIGTERM.

* :func:`prepare_run_folder` refuses to train into a folder that already holds a run unless
  the run is resumed (``--resume``) or replaced (``--overwrite``, which empties it first);
* :func:`resume_mismatch` lists the config keys that differ between a checkpoint and the
  config it is resumed with (keys that cannot change the result are ignored);
* :func:`truncate_metrics` drops the records a resumed run is about to write again, so
  ``metrics.jsonl`` never holds the same step twice;
* :class:`StopRequest` turns SIGINT / SIGTERM into a request that the training loop honours
  at the next step boundary (it saves a resumable checkpoint and stops); a second Ctrl-C
  stops at once.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Mapping

from muva.config import config_diff, upgrade_tree
from muva.engine.config import EVALUATION_KEYS, NON_RESULT_KEYS, ExperimentConfig
from muva.utils.errors import MuvaError
from muva.utils.io import atomic_write_text

__all__ = ["RunFolderError", "prepare_run_folder", "resume_mismatch", "truncate_metrics", "StopRequest",
           "RUN_FILES", "RESUME_IGNORED"]

# What a training run writes into its folder (``muva train``); their presence marks a run.
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "stage1.pt", "model.safetensors",
             "model.json", "results.json", "results.md", "results.csv", "results_cmc.csv", "eval_history.json",
             "bad_images.json", "per_query.npz", "sweep.log", "tb")

# Config keys that may change between a checkpoint and its resume without changing what is computed.
RESUME_IGNORED = NON_RESULT_KEYS + EVALUATION_KEYS  # a checkpoint resumes across these


class RunFolderError(MuvaError):
    """A run folder that cannot be used as asked (holds another run, resume does not fit)."""


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def prepare_run_folder(folder: str | Path, resume: bool = False, overwrite: bool = False, delete: bool = True) -> None:
    """Check (and with ``overwrite`` empty) ``folder`` before a training run writes into it.

    ``delete=False`` only checks (DDP ranks other than 0, which leave the deleting to rank 0).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output.dir {folder} is a file, not a folder; choose another output.dir=...")
    entries = _entries(folder)
    if not entries or resume:
        return
    if overwrite:
        foreign = [e for e in entries if e not in RUN_FILES and not e.startswith(".")]
        if "config.yaml" not in entries and foreign:
            raise RunFolderError(f"--overwrite: {folder} does not look like a muva run folder (no config.yaml; holds "
                                 f"{', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}); refusing to delete it "
                                 "— choose an empty or new output.dir=...")
        if delete:
            shutil.rmtree(folder)
            folder.mkdir(parents=True)
        return
    shown = ", ".join(entries[:6]) + (" …" if len(entries) > 6 else "")
    raise RunFolderError(f"{folder} already holds a run ({shown}). Continue it with --resume, replace it with "
                         "--overwrite (deletes the folder's contents first), or train into another folder "
                         "(output.dir=...)")


def resume_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``["model.parts: [...] → [...]", ...]``: differences that make a checkpoint unfit to resume."""
    # keys renamed since the checkpoint was written are compared under their new names
    return config_diff(upgrade_tree(ExperimentConfig, saved), current, ignore=RESUME_IGNORED, absent_ok=True)


_STAGE_ORDER = {"stage1": 0, "stage2": 1, "eval": 1}


def truncate_metrics(path: str | Path, stage: str, step: int) -> int:
    """Keep the records of ``metrics.jsonl`` written up to ``(stage, step)``; returns how many were dropped.

    Records of later stages, and of ``stage`` after optimiser step ``step`` (evaluations
    count as stage 2), are what a run resumed from that checkpoint writes again.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    here = _STAGE_ORDER.get(stage, 0)
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a half-written last line of a killed run
            dropped += 1
            continue
        order = _STAGE_ORDER.get(rec.get("stage"), 0)
        if order > here or (order == here and int(rec.get("step") or 0) > step):
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


class StopRequest:
    """A context manager that records SIGINT / SIGTERM instead of dying mid-step.

    ``bool(stop)`` is True once a signal came; the training loop checks it after every step.
    A second SIGINT raises ``KeyboardInterrupt`` at once.  Outside the main thread (where
    signal handlers cannot be installed) it is inert.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._old: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def __call__(self) -> bool:
        return bool(self)

    def request(self, name: str = "request") -> None:
        self.signal_name = self.signal_name or name

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = name

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

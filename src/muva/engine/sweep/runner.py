"""Running a sweep: every run is ``muva train`` in its own folder, in up to ``jobs`` processes.

Resumable at the run level and inside a run:

* a run whose folder holds ``results.json`` and a ``config.yaml`` equal to the run's config
  (keys that cannot change numbers aside) is done and skipped;
* a run with a folder but no results (killed, Ctrl-C) continues from its ``last.pt``
  (``muva train --resume``; a run killed before its first checkpoint starts again);
* a finished run whose config differs (the sweep's config or overrides changed) is refused,
  naming the keys, unless ``rerun`` clears it.

Each run writes its output to ``<run>/sweep.log``.  Ctrl-C stops the running trainings (each
saves ``last.pt``) and says to run the same sweep command again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from muva.config import config_diff, to_dict, upgrade_tree
from muva.engine.config import NON_RESULT_KEYS, ExperimentConfig
from muva.engine.sweep.plan import PLAN_FILE, SweepError, SweepPlan, SweepRun, read_plan
from muva.utils.errors import EXIT_FAILURE, EXIT_INTERRUPTED, MuvaError, RunInterrupted
from muva.utils.io import atomic_write_text

__all__ = ["RunState", "run_states", "run_sweep", "SweepFailed"]

LOG_FILE = "sweep.log"


class SweepFailed(MuvaError):
    """Some runs of a sweep failed (the others finished); the message lists their logs."""

    exit_code = EXIT_FAILURE


@dataclass(frozen=True)
class RunState:
    run: SweepRun
    status: str  # done | partial | todo | stale
    diff: tuple[str, ...] = ()


def _state(plan: SweepPlan, run: SweepRun) -> RunState:
    folder = Path(plan.out) / run.folder
    if not folder.is_dir() or not any(folder.iterdir()):
        return RunState(run, "todo")
    saved = folder / "config.yaml"
    if saved.is_file():
        old = upgrade_tree(ExperimentConfig, yaml.safe_load(saved.read_text()) or {})
        diff = tuple(config_diff(old, to_dict(plan.run_config(run)), ignore=NON_RESULT_KEYS))
        if diff:
            return RunState(run, "stale", diff)
    return RunState(run, "done" if (folder / "results.json").is_file() else "partial")


def run_states(plan: SweepPlan) -> list[RunState]:
    """Where every run of ``plan`` stands (read from its folder)."""
    return [_state(plan, r) for r in plan.runs]


def _check_plan_folder(plan: SweepPlan, rerun: bool) -> None:
    """A sweep folder holds one sweep: another plan there is refused (unless ``rerun``)."""
    path = Path(plan.out) / PLAN_FILE
    if not path.is_file() or rerun:
        return
    old = read_plan(plan.out)
    if old.config != plan.config or old.overrides != list(plan.overrides):
        raise SweepError(f"{plan.out} holds a sweep of config {old.config} with overrides {old.overrides}; "
                         "continue that one with the same command, add --rerun to replace its stale runs, "
                         "or choose another --out")


def _command(plan: SweepPlan, run: SweepRun) -> list[str]:
    cmd = [sys.executable, "-m", "muva", "train"]
    if plan.config:
        cmd += ["-c", plan.config]
    return [*cmd, *run.overrides, "--resume"]


def _env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, str(threads))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _term_as_interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt  # SIGTERM stops a sweep like Ctrl-C: the runs save and stop


def run_sweep(plan: SweepPlan, *, jobs: int = 1, rerun: bool = False, progress: bool = True,
              on_done: Callable[[SweepRun, int, float], None] | None = None) -> list[RunState]:
    """Run every run of ``plan`` that is not done; returns the final states.

    Raises :class:`SweepError` for stale runs (without ``rerun``), :class:`SweepFailed` when a
    run exits non-zero (after the others finished) and :class:`RunInterrupted` on Ctrl-C.
    """
    from muva.utils.progress import progress_bar  # rich: only when a sweep runs

    _check_plan_folder(plan, rerun)
    states = run_states(plan)
    stale = [s for s in states if s.status == "stale"]
    if stale and not rerun:
        lines = [f"  {s.run.folder}: {'; '.join(s.diff[:4])}{' …' if len(s.diff) > 4 else ''}" for s in stale]
        raise SweepError(f"{len(stale)} run(s) in {plan.out} were trained with another config:\n" + "\n".join(lines)
                         + "\nadd --rerun to train them again with this sweep's config, or choose another --out")
    for s in stale:
        shutil.rmtree(Path(plan.out) / s.run.folder)
    Path(plan.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(plan.out) / PLAN_FILE, json.dumps(plan.to_json(), indent=1))
    todo = [s.run for s in states if s.status != "done"]
    failed: list[tuple[SweepRun, int]] = []
    children: dict[int, subprocess.Popen] = {}
    env = _env(jobs)

    stopping = []

    def one(run: SweepRun) -> tuple[SweepRun, int, float]:
        folder = Path(plan.out) / run.folder
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "last.pt").is_file():  # killed before its first checkpoint: start again from an empty folder
            for entry in folder.iterdir():
                if entry.name != LOG_FILE:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        t0 = time.time()
        with open(folder / LOG_FILE, "a") as log:
            if stopping:
                return run, EXIT_INTERRUPTED, 0.0
            proc = subprocess.Popen(_command(plan, run), stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)  # Ctrl-C reaches the sweep, which stops the runs itself
            children[proc.pid] = proc
            code = proc.wait()
            children.pop(proc.pid, None)
        return run, code, time.time() - t0

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    old_term = signal.signal(signal.SIGTERM, _term_as_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        with progress_bar(f"sweep {Path(plan.out).name}", total=len(plan.runs), disable=not progress) as advance:
            advance(len(plan.runs) - len(todo))
            for fut in as_completed([pool.submit(one, r) for r in todo]):
                run, code, seconds = fut.result()
                if code != 0:
                    failed.append((run, code))
                if on_done is not None:
                    on_done(run, code, seconds)
                advance()
    except KeyboardInterrupt:
        stopping.append(True)
        for proc in list(children.values()):
            proc.send_signal(signal.SIGTERM)  # each training saves last.pt at its next step
        for proc in list(children.values()):
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise RunInterrupted(f"sweep stopped; finished runs are kept and the others continue from their last.pt. "
                             f"Resume with the same muva sweep command (its plan is in {Path(plan.out) / PLAN_FILE})") from None
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    pool.shutdown(wait=True)
    if failed:
        lines = [f"  {r.folder} (exit {c}): see {Path(plan.out) / r.folder / LOG_FILE}" for r, c in failed]
        raise SweepFailed(f"{len(failed)} of {len(plan.runs)} run(s) failed:\n" + "\n".join(lines)
                          + "\nfix the cause and run the same command again (finished runs are skipped)")
    return run_states(plan)

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

Grounding: before anything trains, the grounding caches every run to do reads are checked
(:func:`grounding_needed`); missing or incomplete ones stop the sweep with the ``muva ground run``
lines that write them, or, with ``ground``, the sweep runs those lines first (output in
``<out>/grounding.log``).
"""

from __future__ import annotations

import json
import os
import shlex
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
from muva.engine.data import grounding_to_do
from muva.engine.sweep.plan import PLAN_FILE, SweepError, SweepPlan, SweepRun, read_plan
from muva.utils.errors import EXIT_FAILURE, EXIT_INTERRUPTED, MuvaError, RunInterrupted
from muva.utils.io import atomic_write_text

__all__ = ["RunState", "grounding_needed", "run_states", "run_sweep", "SweepFailed"]

LOG_FILE = "sweep.log"
GROUNDING_LOG = "grounding.log"


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


def grounding_needed(plan: SweepPlan, runs=None) -> list[tuple[str, Path, str]]:
    """``(source, cache, muva ground run line)`` for every cache that ``runs`` (default: all) read
    and that is missing or lacks a part; one line per cache."""
    needed: dict[str, tuple[str, Path, str]] = {}
    checked: set[str] = set()  # many runs share their data and grounding: open each source once
    for run in plan.runs if runs is None else runs:
        cfg = plan.run_config(run)
        key = json.dumps([to_dict(cfg.data), to_dict(cfg.grounding), list(cfg.model.parts)], sort_keys=True, default=str)
        if key in checked:
            continue
        checked.add(key)
        for spec, cache, cmd in grounding_to_do(cfg.data, cfg.grounding, cfg.model.parts):
            needed.setdefault(str(cache), (spec, cache, cmd))
    return list(needed.values())


def _ground(plan: SweepPlan, runs, ground: bool) -> None:
    """Make the caches of ``runs`` complete (``ground``) or stop with the commands that would."""
    needed = grounding_needed(plan, runs)
    if not needed:
        return
    if not ground:
        lines = "\n".join(f"  {cmd}" for _, _, cmd in needed)
        raise SweepError(f"{len(needed)} grounding cache(s) the runs read are missing or lack parts (nothing was trained). "
                         f"Create them with:\n{lines}\nor add --ground to let the sweep run these lines first")
    log_path = Path(plan.out) / GROUNDING_LOG
    for _ in range(2):  # a second round widens a cache another run needs with more parts
        for i, (spec, cache, cmd) in enumerate(needed, 1):
            print(f"grounding {i}/{len(needed)}: {spec} → {cache}", flush=True)
            argv = [sys.executable, "-m", "muva", *shlex.split(cmd)[1:], "--no-progress"]
            with open(log_path, "a") as log:
                log.write(f"$ {cmd}\n")
                log.flush()
                try:
                    code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(1)).returncode
                except KeyboardInterrupt:
                    raise RunInterrupted("sweep stopped while grounding; the cache keeps what was grounded. Resume with "
                                         "the same muva sweep command") from None
            if code != 0:
                raise SweepFailed(f"grounding {spec} failed (exit {code}): see {log_path}\n"
                                  "fix the cause and run the same command again")
        needed = grounding_needed(plan, runs)
        if not needed:
            return
    raise SweepFailed(f"the grounding caches are still incomplete after grounding ({', '.join(str(c) for _, c, _ in needed)}); "
                      f"see {log_path}")


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


def run_sweep(plan: SweepPlan, *, jobs: int = 1, rerun: bool = False, progress: bool = True, ground: bool = False,
              on_done: Callable[[SweepRun, int, float], None] | None = None) -> list[RunState]:
    """Run every run of ``plan`` that is not done; returns the final states.

    Raises :class:`SweepError` for stale runs (without ``rerun``) and for missing grounding caches
    (without ``ground``), :class:`SweepFailed` when a run exits non-zero (after the others
    finished) and :class:`RunInterrupted` on Ctrl-C.
    """
    from muva.utils.progress import progress_bar  # rich: only when a sweep runs

    _check_plan_folder(plan, rerun)
    states = run_states(plan)
    stale = [s for s in states if s.status == "stale"]
    if stale and not rerun:
        lines = [f"  {s.run.folder}: {'; '.join(s.diff[:4])}{' …' if len(s.diff) > 4 else ''}" for s in stale]
        raise SweepError(f"{len(stale)} run(s) in {plan.out} were trained with another config:\n" + "\n".join(lines)
                         + "\nadd --rerun to train them again with this sweep's config, or choose another --out")
    todo = [s.run for s in states if s.status != "done"]
    Path(plan.out).mkdir(parents=True, exist_ok=True)
    _ground(plan, todo, ground)
    for s in stale:
        shutil.rmtree(Path(plan.out) / s.run.folder)
    atomic_write_text(Path(plan.out) / PLAN_FILE, json.dumps(plan.to_json(), indent=1))
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

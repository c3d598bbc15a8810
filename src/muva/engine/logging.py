"""Run logs: live rich progress with ETA, a metrics JSONL and TensorBoard event files.

Only rank 0 writes.  ``<run>/metrics.jsonl`` has one JSON object per line::

    {"stage": "stage2", "epoch": 3, "iter": 120, "step": 120, "lr": 5e-06, "loss/id": 5.1, ..., "time": ...}
    {"stage": "stage2", "epoch": 3, "eval/domain_2/mAP": 41.2, ...}

TensorBoard (``<run>/tb/``) gets the same scalars under the same names, with the stage
prefixed (``stage2/loss/id``, ``stage1/epoch_loss/total``); evaluations are ``eval/<target>/mAP``
and ``eval/<target>/rank1`` (x-axis: the epoch).  :func:`read_metrics` loads the JSONL back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console

from muva.engine.runfolder import truncate_metrics
from muva.engine.trainer import Hook, Trainer
from muva.utils.progress import make_progress

__all__ = ["RunLogger", "LoggingHook", "read_metrics"]


class RunLogger:
    """Writes scalars to ``metrics.jsonl`` and (optionally) TensorBoard; inert when ``enabled`` is False."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, console=None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.console = console
        self.tensorboard = tensorboard
        self._tb = None
        self._fh = None
        self._opened = False

    def _open(self) -> None:
        """Files are created at the first record, so a run that fails while setting up leaves none."""
        self._opened = True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is optional at run time, and slow

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception as exc:  # noqa: BLE001 - tensorboard is optional at run time
                self.print(f"[yellow]TensorBoard disabled:[/] {exc}")

    def log(self, record: Mapping[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        if not self._opened:
            self._open()
        rec = {**record, "time": round(time.time(), 3)}
        self._fh.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            stage = rec.get("stage", "run")
            s = step if step is not None else int(rec.get("step", 0))
            for k, v in rec.items():
                if k in ("stage", "epoch", "iter", "step", "time") or not isinstance(v, (int, float)):
                    continue
                self._tb.add_scalar(k if k.startswith(f"{stage}/") else f"{stage}/{k}", v, s)

    def truncate(self, stage: str, step: int) -> int:
        """Drop the records after ``(stage, step)`` (a resume writes them again); see
        :func:`muva.engine.runfolder.truncate_metrics`.  Returns how many were dropped."""
        if not self.enabled:
            return 0
        was_open = self._fh is not None
        if was_open:  # the file is rewritten: append to the new one afterwards
            self._fh.close()
        dropped = truncate_metrics(self.run_dir / "metrics.jsonl", stage, step)
        if was_open:
            self._fh = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        return dropped

    def print(self, message: str) -> None:
        if not self.enabled:
            return
        if self.console is None:
            self.console = Console()
        self.console.print(message, highlight=False)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


class LoggingHook(Hook):
    """Live progress bar (epoch, iteration, ETA, losses, lr) and scalar logging every ``every`` steps."""

    def __init__(self, logger: RunLogger, every: int = 10, show_progress: bool = True):
        self.logger = logger
        self.every = max(1, int(every))
        self.show = show_progress and logger.enabled
        self._progress = None
        self._task = None
        self._sum: dict[str, float] = {}
        self._n = 0

    def before_train(self, trainer: Trainer) -> None:
        for note in trainer.notes:
            self.logger.print(f"[yellow]note:[/] {note}")
        if self.show:
            self._progress = make_progress()
            self._progress.start()

    def before_epoch(self, trainer: Trainer) -> None:
        self._sum, self._n = {}, 0
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                f"{trainer.name} epoch {trainer.epoch + 1}/{trainer.max_epochs}",
                total=trainer.iters_per_epoch, completed=trainer.iter_in_epoch)

    def after_step(self, trainer: Trainer, losses: Mapping[str, float]) -> None:
        for k, v in losses.items():
            self._sum[k] = self._sum.get(k, 0.0) + v
        self._n += 1
        if self._progress is not None:
            desc = (f"{trainer.name} ep {trainer.epoch + 1}/{trainer.max_epochs} "
                    f"loss {losses['total']:.3f} lr {trainer.lr():.2e}")
            self._progress.update(self._task, advance=1, description=desc)
        if trainer.global_iter % self.every == 0 or trainer.iter_in_epoch == trainer.iters_per_epoch:
            rec = {"stage": trainer.name, "epoch": trainer.epoch + 1, "iter": trainer.iter_in_epoch,
                   "step": trainer.global_iter, "lr": trainer.lr()}
            rec.update({f"loss/{k}": v for k, v in losses.items()})
            self.logger.log(rec, step=trainer.global_iter)

    def after_epoch(self, trainer: Trainer) -> None:
        if self._n:
            means = {f"epoch_loss/{k}": v / self._n for k, v in self._sum.items()}
            self.logger.log({"stage": trainer.name, "epoch": trainer.epoch + 1, "step": trainer.global_iter,
                             "epoch_lr": trainer.lr(), **means}, step=trainer.epoch + 1)  # x = epoch, own tag
            if self._progress is None:
                parts = " ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in means.items())
                self.logger.print(f"{trainer.name} epoch {trainer.epoch + 1}/{trainer.max_epochs}: {parts}")

    def after_train(self, trainer: Trainer) -> None:
        self.close()

    def on_interrupt(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (a truncated last line from a killed run is ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

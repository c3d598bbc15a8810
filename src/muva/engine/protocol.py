"""``muva protocol run NAME``: train and evaluate every setting of a DG protocol, one table.

For each setting the base experiment config gets the setting's sources (and split: train or
all), its targets (with dataset options and the number of query/gallery splits) and its own
run folder ``<out>/<setting>``; a setting whose ``results.json`` exists is not retrained (so
an interrupted protocol continues where it stopped; a half-done setting resumes from its
``last.pt``).  The table ``<out>/protocol.md/.csv/.json`` has one column pair (mAP, R1) per
setting and rows for our run and the paper's numbers from MUVA.md where known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["run_protocol", "setting_config", "PaperResult"]


@dataclass
class PaperResult:
    """A published (mAP, Rank-1) pair in the shape the result tables expect (fractions)."""

    mAP: float
    rank1: float

    @property
    def cmc(self):
        return np.asarray([self.rank1])

    def to_dict(self, cmc: bool = True) -> dict:
        return {"mAP": self.mAP, "rank1": self.rank1, "source": "paper"}


@dataclass
class _Stored:
    """A finished setting's result read back from its results.json."""

    mAP: float
    rank1: float
    cmc: np.ndarray

    def to_dict(self, cmc: bool = True) -> dict:
        return {"mAP": self.mAP, "rank1": self.rank1, "cmc": [float(x) for x in self.cmc]}


def _slug(name: str) -> str:
    return name.replace("->", "_to_").replace("+", "-").replace("/", "_").replace(":", "_")


def setting_config(base, setting, out_dir: Path):
    """The experiment config of one protocol setting."""
    splits = {s for _, s in setting.sources}
    if len(splits) != 1:
        raise ValueError(f"setting {setting.name} mixes source splits {splits}; not supported")
    options = dict(base.data.dataset_options)
    target_splits = dict(base.data.target_splits)
    targets = []
    for t in setting.targets:
        targets.append(t.dataset)
        if t.options:
            options[t.dataset] = {**options.get(t.dataset, {}), **t.options}
        if t.num_splits > 1:
            target_splits[t.dataset] = t.num_splits
    data = replace(base.data, sources=[d for d, _ in setting.sources], source_split=splits.pop(), targets=targets,
                   dataset_options=options, target_splits=target_splits)
    return replace(base, name=setting.name, data=data, output=replace(base.output, dir=str(out_dir / _slug(setting.name))))


def _load_stored(run_dir: Path):
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    row = doc["rows"][0]["results"]
    return {t: _Stored(r["mAP"], r["rank1"], np.asarray(r.get("cmc", [r["rank1"]]))) for t, r in row.items()}


def run_protocol(name: str, config, overrides: Sequence[str] = (), settings: Sequence[str] | None = None,
                 out: Path | None = None, dry_run: bool = False, console=None) -> dict:
    """Run (or, with ``dry_run``, describe) a protocol; returns ``{setting: {target: result}}``."""
    from rich.console import Console
    from rich.table import Table

    from muva.data.protocols import get_protocol
    from muva.engine.config import load_experiment

    console = console or Console()
    protocol = get_protocol(name)
    chosen = [protocol.setting(s) for s in settings] if settings else list(protocol.settings)
    out = Path(out or Path("runs/protocol") / _slug(protocol.name))
    base = load_experiment(config, overrides)
    plan = Table(title=f"{protocol.title}" + (" (dry run)" if dry_run else ""))
    for col in ("setting", "sources", "targets", "run folder", "paper MUVA (mAP/R1)", "status"):
        plan.add_column(col)
    for s in chosen:
        cfg = setting_config(base, s, out)
        done = (Path(cfg.output.dir) / "results.json").is_file()
        paper = s.paper.get("MUVA")
        plan.add_row(s.name, s.describe_sources(), ", ".join(t.describe() for t in s.targets), cfg.output.dir,
                     f"{paper[0]:.1f} / {paper[1]:.1f}" if paper else "–", "done" if done else "to train")
    console.print(plan)
    console.print(f"base config {config} · stage1 {base.stage1.epochs} ep · stage2 {base.stage2.epochs} ep · "
                  f"batch {base.data.batch_size} · model {base.model.backbone} parts {base.model.parts or 'none (global)'}")
    if dry_run:
        return {}
    from muva.engine.run import Experiment

    results: dict[str, dict] = {}
    for s in chosen:
        cfg = setting_config(base, s, out)
        stored = _load_stored(Path(cfg.output.dir))
        if stored is None:
            console.rule(f"[bold]{s.name}")
            Experiment(cfg, resume=True).run()
            stored = _load_stored(Path(cfg.output.dir))
        if stored:
            # one number per setting: the mean over its targets (the paper's multi-target convention)
            results[s.name] = stored
    table = _protocol_table(chosen, results)
    if table is not None:
        table.write(out, "protocol")
        console.print(table.to_markdown())
        console.print(f"table written to {out}/protocol.(md|csv|json)")
    return results


def _protocol_table(settings, results: dict):
    from muva.evaluation.tables import ResultTable

    ours: dict = {}
    for s in settings:
        res = results.get(s.name)
        if not res:
            continue
        vals = list(res.values())
        ours[s.name] = _Stored(float(np.mean([v.mAP for v in vals])), float(np.mean([v.rank1 for v in vals])),
                               np.asarray([float(np.mean([v.rank1 for v in vals]))]))
    if not ours:
        return None
    rows = [("ours", ours)]
    labels = sorted({k for s in settings for k in s.paper})
    for label in labels:
        row = {s.name: PaperResult(s.paper[label][0] / 100.0, s.paper[label][1] / 100.0) for s in settings if label in s.paper}
        rows.append((f"paper: {label}", row))
    return ResultTable(rows=rows, targets=[s.name for s in settings])

"""``muva protocol run NAME``: train and evaluate every setting of a DG protocol, one table.

For each setting the base experiment config gets the setting's sources (and split: train or
all), its targets (with dataset options and the number of query/gallery splits) and its own
run folder ``<out>/<setting>`` (default ``out``: ``runs/protocol/<protocol>/<config name>``,
so two methods never share a folder).

A finished setting (``results.json``) is reused only when its ``provenance.json`` (see
:mod:`muva.engine.provenance`: resolved config, starting weights, grounding caches, image
lists) matches this call's; a half-done one (``last.pt``) resumes under the same rule.  Any
other finished or half-done setting is *stale*: the call refuses before training anything,
naming the differing keys, unless ``rerun`` clears and retrains it.  Missing grounding
caches are reported together, also before any training.

The table ``<out>/protocol.md/.csv/.json`` lists every setting of the folder that has
results, one row per config they came from (``ours: <config name> #<config hash>``), beside
the paper's numbers where known.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from muva.data.protocols import get_protocol
from muva.engine.config import load_experiment
from muva.engine.data import ground_command
from muva.engine.protocol_settings import default_out, setting_config, setting_slug
from muva.engine.provenance import config_hash, provenance_diff, read_provenance, run_provenance, write_provenance
from muva.engine.run import Experiment
from muva.evaluation.tables import ResultTable
from muva.grounding.cache import GroundingCacheError
from muva.utils.errors import MuvaError

__all__ = ["run_protocol", "setting_config", "default_out", "PaperResult", "ProtocolError"]

_UNKNOWN = "no provenance.json (made by an older muva or by hand): what it was trained with cannot be checked"
_SHOWN_KEYS = 6


class ProtocolError(MuvaError, ValueError):
    """A protocol folder holding runs that do not belong to the config asked for."""


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


def _load_stored(run_dir: Path):
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        row = doc["rows"][0]["results"]
        return {t: _Stored(r["mAP"], r["rank1"], np.asarray(r.get("cmc", [r["rank1"]]))) for t, r in row.items()}
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


# ----------------------------------------------------------------------------- state of a setting
@dataclass
class _State:
    setting: object
    cfg: object
    status: str  # done | resume | train | stale | error
    provenance: dict | None = None
    diff: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output.dir)

    def trains(self, rerun: bool) -> bool:
        return self.status in ("train", "resume") or (self.status == "stale" and rerun)

    def missing_caches(self) -> list[tuple[str, str]]:
        caches = (self.provenance or {}).get("grounding_caches", {})
        return [(spec, fp["path"]) for spec, fp in caches.items() if fp.get("missing")]


def _assess(setting, cfg, dry_run: bool) -> _State:
    run_dir = Path(cfg.output.dir)
    try:
        prov = run_provenance(cfg)
    except MuvaError as exc:
        if not dry_run:
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _State(setting, cfg, "error", error=first if len(first) <= 160 else first[:159] + "…")
    finished = (run_dir / "results.json").is_file()
    if not finished and not (run_dir / "last.pt").is_file():
        return _State(setting, cfg, "train", prov)
    old = read_provenance(run_dir)
    diff = [_UNKNOWN] if old is None else provenance_diff(old, prov)
    status = "stale" if diff else ("done" if finished else "resume")
    return _State(setting, cfg, status, prov, diff)


def _keys(diff: list[str], n: int = _SHOWN_KEYS) -> str:
    return "; ".join(diff[:n]) + (f"; … ({len(diff) - n} more)" if len(diff) > n else "")


def _status_text(st: _State, rerun: bool) -> str:
    text = {"done": f"done (reused) · {_row_label(st.run_dir)[0][len('ours: '):]}", "resume": "to train (resumes last.pt)",
            "train": "to train", "error": f"cannot check: {st.error}"}.get(st.status)
    if st.status == "stale":
        text = ("stale → retrain (--rerun): " if rerun else "stale: ") + _keys(st.diff, 3)
    if st.trains(rerun) and st.missing_caches():
        text += " · grounding cache missing"
    return text


def _stale_message(stale: list[_State], out: Path) -> str:
    lines = [f"{len(stale)} setting(s) in {out} were trained with other inputs than this call's, so their numbers "
             "would be reported under the wrong config:"]
    for st in stale:
        kind = "finished" if (st.run_dir / "results.json").is_file() else "half-done"
        lines.append(f"  {st.setting.name} ({kind}, {st.run_dir}): old → new: {_keys(st.diff)}")
    lines.append("To train them again with this config add --rerun (clears their folders; limit it with -s SETTING), "
                 "or keep them and write this config's runs to another folder with --out DIR.")
    return "\n".join(lines)


def _missing_message(states: list[_State], dry_run: bool = False) -> str:
    needed: dict[tuple[str, str], list[str]] = {}
    for st in states:
        for key in st.missing_caches():
            needed.setdefault(key, []).append(st.setting.name)
    cfg = states[0].cfg
    lines = [f"{len(needed)} grounding cache(s) missing{'' if dry_run else ' (nothing was trained)'}. Create them with:"]
    for (spec, path), names in needed.items():
        lines.append(f"  {ground_command(spec, cfg.data, cfg.grounding, path, cfg.model.parts)}    (for {', '.join(names)})")
    lines.append("or point grounding.caches.<source> at an existing cache (--expert prior needs no model).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the runner
def run_protocol(name: str, config, overrides: Sequence[str] = (), settings: Sequence[str] | None = None,
                 out: Path | None = None, dry_run: bool = False, rerun: bool = False, console=None) -> dict:
    """Run (or, with ``dry_run``, describe) a protocol; returns ``{setting: {target: result}}`` of the chosen settings.

    ``rerun`` clears and retrains the chosen settings that are stale; matching finished ones
    are still reused.
    """
    console = console or Console()
    protocol = get_protocol(name)
    chosen = [protocol.setting(s) for s in settings] if settings else list(protocol.settings)
    base = load_experiment(config, overrides)
    out = Path(out) if out else default_out(protocol, base)
    base_hash = config_hash(base)
    states = [_assess(s, setting_config(base, s, out), dry_run) for s in chosen]

    plan = Table(title=f"{protocol.title}" + (" (dry run)" if dry_run else ""))
    for col in ("setting", "sources", "targets", "run folder", "paper MUVA (mAP/R1)", "status"):
        plan.add_column(col)
    for st in states:
        s = st.setting
        paper = s.paper.get("MUVA")
        plan.add_row(*(escape(c) for c in (s.name, s.describe_sources(), ", ".join(t.describe() for t in s.targets),
                                           st.cfg.output.dir, f"{paper[0]:.1f} / {paper[1]:.1f}" if paper else "–",
                                           _status_text(st, rerun))))
    console.print(plan)
    console.print(escape(f"config {base.name} #{base_hash} ({config}) · stage1 {base.stage1.epochs} ep · stage2 "
                         f"{base.stage2.epochs} ep · batch {base.data.batch_size} · model {base.model.backbone} parts "
                         f"{base.model.parts or 'none (global)'} · out {out}"))
    stale = [st for st in states if st.status == "stale"]
    training = [st for st in states if st.trains(rerun)]
    missing = [st for st in training if st.missing_caches()]
    if dry_run:
        if stale and not rerun:
            console.print(f"[yellow]{escape(_stale_message(stale, out))}[/]")
        if missing:
            console.print(f"[yellow]{escape(_missing_message(missing, True))}[/]")
        return {}
    if stale and not rerun:
        raise ProtocolError(_stale_message(stale, out))
    if missing:
        raise GroundingCacheError(_missing_message(missing))

    label = {"name": protocol.name, "config_hash": base_hash}
    for st in training:
        if st.status == "stale" and st.run_dir.exists():
            shutil.rmtree(st.run_dir)
        console.rule(f"[bold]{escape(st.setting.name)}")
        write_provenance(st.run_dir, st.provenance, protocol={**label, "setting": st.setting.name}, state="started")
        Experiment(st.cfg, resume=True).run()
        write_provenance(st.run_dir, st.provenance, protocol={**label, "setting": st.setting.name}, state="finished",
                         finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    results = {st.setting.name: r for st in states if (r := _load_stored(st.run_dir))}
    table, runs = _protocol_table(protocol, out, f"ours: {base.name} #{base_hash}")
    if table is not None:
        table.write(out, "protocol", extra={"runs": runs})
        console.print(escape(table.to_markdown()))
        console.print(escape(f"table written to {out}/protocol.(md|csv|json)"))
    return results


def _row_label(run_dir: Path) -> tuple[str, dict]:
    """``ours: <config name> #<config hash>`` of a finished setting, from its provenance.json."""
    prov = read_provenance(run_dir)
    if prov is None:
        name = "unknown"
        try:
            name = str((yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("name") or name)
        except (OSError, ValueError, AttributeError):
            pass
        return f"ours: {name} (no provenance)", {"config_name": name, "config_hash": None, "provenance_hash": None}
    h = (prov.get("protocol") or {}).get("config_hash") or prov.get("hash", "?")
    name = prov.get("config_name", "?")
    return f"ours: {name} #{h}", {"config_name": name, "config_hash": h, "provenance_hash": prov.get("hash")}


def _protocol_table(protocol, out: Path, current: str):
    """Every setting of ``out`` with results: one row per config label, then the paper's rows."""
    rows: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    shown = []
    for s in protocol.settings:
        run_dir = out / setting_slug(s.name)
        res = _load_stored(run_dir)
        if not res:
            continue
        label, info = _row_label(run_dir)
        vals = list(res.values())
        # one number per setting: the mean over its targets (the paper's multi-target convention)
        mean_r1 = float(np.mean([v.rank1 for v in vals]))
        rows.setdefault(label, {})[s.name] = _Stored(float(np.mean([v.mAP for v in vals])), mean_r1, np.asarray([mean_r1]))
        runs[s.name] = {"run_dir": str(run_dir), "row": label, **info}
        shown.append(s)
    if not shown:
        return None, runs
    ordered = sorted(rows.items(), key=lambda kv: kv[0] != current)  # this call's config first (stable otherwise)
    labels = sorted({k for s in shown for k in s.paper})
    for paper in labels:
        ordered.append((f"paper: {paper}", {s.name: PaperResult(s.paper[paper][0] / 100.0, s.paper[paper][1] / 100.0)
                                            for s in shown if paper in s.paper}))
    return ResultTable(rows=ordered, targets=[s.name for s in shown]), runs

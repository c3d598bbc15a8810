"""What a sweep runs: variants (config overrides) × seeds, each run in its own folder.

A sweep starts from one experiment config plus overrides and adds, per run, the overrides
of its variant, ``seed=S`` and ``output.dir=<out>/<variant>/seed<S>``.  Variants come from

* a grid: ``--vary model.parts=[],[head,upper_body,legs] --vary stage2.weights.mask=0,1``
  gives 4 variants (values split at top-level commas; brackets and quotes kept whole);
* named variants in a sweep file (a list of overrides each), for studies that are not a grid.

With a protocol (``--protocol muva-loo``, ``synth-loo:PATH``; ``--setting`` picks some of its
settings) every variant runs on every setting: the setting's sources and targets are added as
overrides (:func:`muva.engine.protocol_settings.setting_overrides`, the data ``muva protocol
run`` trains the setting on) and its runs go to ``<out>/<setting>/<variant>/seed<S>``.

A sweep file (YAML)::

    config: ../configs/tiny.yaml      # relative to the sweep file
    overrides: [stage2.epochs=2]
    seeds: 3                          # or a list: [1234, 1235, 1236]
    vary: {stage2.weights.mask: [0, 1]}
    protocol: synth-loo:runs/study/synth_data   # optional: every variant on every setting
    settings: []                      # optional: some of the protocol's settings
    variants:                         # a mapping KEY: VALUE, or a list of 'KEY=VALUE' texts
      global: {model.parts: [], stage2.weights.mask: 0}
      muva: {}
    reference: global

Seeds: ``seeds: N`` means the config's seed, seed+1, ..., seed+N-1.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from muva.config import ConfigError
from muva.data.protocols import get_protocol, published_results
from muva.engine.config import ExperimentConfig, load_experiment
from muva.engine.protocol_settings import setting_overrides, setting_slug

__all__ = ["SweepError", "SweepPlan", "SweepRun", "Variant", "grid_variants", "load_sweep_file", "make_plan", "parse_vary", "read_plan",
           "split_values", "PLAN_FILE"]

PLAN_FILE = "sweep.json"


class SweepError(ConfigError):
    """A sweep that cannot be planned (a bad --vary, a sweep file that does not parse, clashing names)."""


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: a display name, a folder name and its config overrides."""

    name: str
    overrides: tuple[str, ...]
    folder: str


@dataclass(frozen=True)
class SweepRun:
    variant: str
    seed: int
    folder: str  # relative to the sweep folder: <variant folder>/seed<S>
    overrides: tuple[str, ...]  # the base overrides + the setting's + the variant's + seed= + output.dir=
    setting: str | None = None  # the protocol setting (None: the config's own data)


@dataclass
class SweepPlan:
    """The whole sweep (written to ``<out>/sweep.json`` when it starts)."""

    config: str | None
    overrides: list[str]
    variants: list[Variant]
    seeds: list[int]
    out: str
    reference: str | None = None
    runs: list[SweepRun] = field(default_factory=list)
    protocol: str | None = None
    settings: list[str] = field(default_factory=list)
    paper: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # setting → method → [mAP, R1] in %

    def to_json(self) -> dict:
        return {"config": self.config, "overrides": list(self.overrides), "seeds": list(self.seeds), "out": self.out,
                "reference": self.reference, "protocol": self.protocol, "settings": list(self.settings),
                "paper": self.paper, "variants": [asdict(v) for v in self.variants], "runs": [asdict(r) for r in self.runs]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "SweepPlan":
        return cls(obj["config"], list(obj["overrides"]), [Variant(v["name"], tuple(v["overrides"]), v["folder"]) for v in obj["variants"]],
                   list(obj["seeds"]), obj["out"], obj.get("reference"),
                   [SweepRun(r["variant"], int(r["seed"]), r["folder"], tuple(r["overrides"]), r.get("setting"))
                    for r in obj["runs"]],
                   obj.get("protocol"), list(obj.get("settings") or []), dict(obj.get("paper") or {}))

    def run_config(self, run: SweepRun) -> ExperimentConfig:
        """The resolved experiment config of one run (what ``muva train`` will use)."""
        return load_experiment(self.config, list(run.overrides))

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise SweepError(f"no variant named {name!r} in this sweep; its variants: {', '.join(v.name for v in self.variants)}")


def read_plan(folder: str | Path) -> SweepPlan:
    """The plan a sweep wrote into ``folder``."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise SweepError(f"{folder} holds no {PLAN_FILE}: it is not a muva sweep folder (muva sweep -c CONFIG --out {folder} ...)")
    try:
        return SweepPlan.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise SweepError(f"{path} is not a readable sweep plan ({exc}); delete it and plan the sweep again") from None


def split_values(text: str) -> list[str]:
    """``"[],[a,b],3"`` → ``["[]", "[a,b]", "3"]``: commas inside brackets, braces or quotes stay."""
    out, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    if depth != 0 or quote:
        raise SweepError(f"unbalanced brackets or quotes in {text!r}")
    if any(v == "" for v in out):
        raise SweepError(f"an empty value in {text!r} (write [] or '' for an empty value)")
    return out


def parse_vary(item: str) -> tuple[str, list[str]]:
    """``"stage2.weights.mask=0,1"`` → ``("stage2.weights.mask", ["0", "1"])``."""
    if "=" not in item:
        raise SweepError(f"--vary {item!r} must look like KEY=V1,V2,... (e.g. --vary stage2.weights.mask=0,1)")
    key, values = item.split("=", 1)
    key = key.strip()
    if not key:
        raise SweepError(f"--vary {item!r} has no key")
    return key, split_values(values)


def _value_text(value: Any) -> str:
    """A YAML value as override text (flow style, no space after commas)."""
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()
    return text.replace(", ", ",")  # [a,b] as on a command line; "k: v" keeps its space (YAML needs it)


def _slug(text: str) -> str:
    text = re.sub(r"\[\]", "none", text)
    text = text.replace("[", "").replace("]", "").replace(",", "+")
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "variant"


def grid_variants(varies: Sequence[tuple[str, Sequence[str]]]) -> list[Variant]:
    """The cartesian product of ``(key, values)`` pairs; names use the last part of each key."""
    if not varies:
        return [Variant("base", (), "base")]
    keys = [k for k, _ in varies]
    if len(set(keys)) != len(keys):
        raise SweepError(f"--vary names a key twice: {', '.join(k for k in keys if keys.count(k) > 1)}")
    short = [k.rsplit(".", 1)[-1] if sum(x.rsplit(".", 1)[-1] == k.rsplit(".", 1)[-1] for x in keys) == 1 else k for k in keys]
    out = []
    for combo in itertools.product(*[list(v) for _, v in varies]):
        parts = [f"{s}={v}" for s, v in zip(short, combo)]
        out.append(Variant(" ".join(parts), tuple(f"{k}={v}" for k, v in zip(keys, combo)), "__".join(_slug(p) for p in parts)))
    return out


def named_variants(spec: Mapping[str, Any]) -> list[Variant]:
    out = []
    for name, overrides in spec.items():
        if overrides is None:
            overrides = []
        if isinstance(overrides, Mapping):  # {model.parts: [], stage2.weights.mask: 0}
            overrides = [f"{k}={_value_text(v)}" for k, v in overrides.items()]
        if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
            raise SweepError(f"variant {name!r}: give a mapping KEY: VALUE or a list of 'KEY=VALUE' overrides "
                             "({} or [] for the base config)")
        out.append(Variant(str(name), tuple(str(o) for o in overrides), _slug(str(name))))
    return out


def _settings(protocol: str | None, names: Sequence[str]) -> list:
    """The protocol settings a sweep runs on (all of them unless ``names`` picks some)."""
    if protocol is None:
        if names:
            raise SweepError("--setting picks settings of a protocol: give the protocol too (--protocol NAME)")
        return []
    try:
        proto = get_protocol(protocol)
        return [proto.setting(n) for n in names] if names else list(proto.settings)
    except KeyError as exc:
        raise SweepError(str(exc.args[0]) if exc.args else str(exc)) from None


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep file's entries (``config`` made relative to the current folder)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(f"cannot read the sweep file {path}: {exc}") from None
    allowed = {"config", "overrides", "seeds", "vary", "variants", "reference", "protocol", "settings"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SweepError(f"{path}: unknown sweep key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(allowed))}")
    if data.get("config"):
        data["config"] = str((path.parent / data["config"]))
    return data


def make_plan(config: str | Path | None, overrides: Sequence[str], out: str | Path, *, seeds: int | Sequence[int] = 1,
              vary: Sequence[str] = (), variants: Mapping[str, Any] | None = None,
              vary_values: Mapping[str, Sequence[Any]] | None = None, reference: str | None = None,
              protocol: str | None = None, settings: Sequence[str] = ()) -> SweepPlan:
    """Expand a sweep into its runs (grid from ``vary`` / ``vary_values``, or named ``variants``;
    on every setting of ``protocol`` when one is given)."""
    base = load_experiment(config, list(overrides))  # a bad config or override fails before anything is planned
    chosen_settings = _settings(protocol, settings)
    varies = [parse_vary(v) for v in vary] + [(k, [_value_text(x) for x in vals]) for k, vals in (vary_values or {}).items()]
    if variants and varies:
        raise SweepError("give either named variants or --vary grids, not both")
    chosen = named_variants(variants) if variants else grid_variants(varies)
    folders = [v.folder for v in chosen]
    if len(set(folders)) != len(folders):
        raise SweepError(f"two variants share a folder name: {', '.join(sorted({f for f in folders if folders.count(f) > 1}))}")
    seed_list = [base.seed + i for i in range(int(seeds))] if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise SweepError(f"seeds must be at least one and distinct, not {seeds!r}")
    names = [v.name for v in chosen]
    if reference is not None and reference not in names:
        raise SweepError(f"reference {reference!r} is not a variant; variants: {', '.join(names)}")
    out = Path(out)
    runs = []
    for setting in chosen_settings or [None]:
        data = tuple(setting_overrides(base, setting)) if setting is not None else ()
        prefix = f"{setting_slug(setting.name)}/" if setting is not None else ""
        for v in chosen:
            for s in seed_list:
                folder = f"{prefix}{v.folder}/seed{s}"
                runs.append(SweepRun(v.name, s, folder, (*overrides, *data, *v.overrides, f"seed={s}", f"output.dir={out / folder}"),
                                     setting.name if setting is not None else None))
    plan = SweepPlan(str(config) if config else None, list(overrides), chosen, seed_list, str(out), reference, runs,
                     protocol, [st.name for st in chosen_settings],
                     {st.name: {k: list(v) for k, v in st.paper.items()} for st in chosen_settings if st.paper})
    own = {} if chosen_settings else published_results(base.data.sources, base.data.targets)
    if own:  # the config's own data are a published setting: its numbers under the key ""
        plan.paper = {"": {k: list(v) for k, v in own.items()}}
    for run in runs:  # every variant's overrides must fit the config schema
        try:
            plan.run_config(run)
        except ConfigError as exc:
            raise SweepError(f"variant {run.variant!r}: {exc}") from None
    return plan

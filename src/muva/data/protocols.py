"""Domain-generalisation protocols as named, reproducible presets (as used in the MUVA paper and the DG re-ID literature).

    >>> from muva.data.protocols import get_protocol
    >>> p = get_protocol("single-source")
    >>> s = p.setting("MA->D")
    >>> s.sources, [t.dataset for t in s.targets], s.paper["MUVA"]
    ([('market1501', 'train')], ['dukemtmcreid'], (52.0, 72.1))

A :class:`Protocol` has :attr:`~Protocol.settings`; each :class:`Setting` trains on its
``sources`` — ``(dataset, split)`` pairs with split ``train`` or ``all`` — and tests on
each of its ``targets`` (:class:`Target`: dataset, options, number of query/gallery
splits).  Paper numbers (mAP, Rank-1 in %) travel with the settings so that runs can
print them beside ours.

Dataset choices: "C3" is CUHK03-NP *detected* everywhere (MUVA's tables; also used for
CUHK03 in Protocols 1–3 here — pass another variant through ``Target.options`` /
``cuhk03np-labeled`` to change it).  MSMT17 sources use ``list_train`` only
(``train_split='train'``); the choice is recorded in the combined set's ``info``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from muva.data.datasets import DATASETS, dataset_record, open_dataset
from muva.data.multisource import combine
from muva.data.records import DatasetError, ReIDDataset
from muva.registry import Registry

PROTOCOLS = Registry("protocol")

# Short labels of the papers' tables → (source dataset spec, target dataset, target options).
ABBREV = {
    "MA": ("market1501", "market1501", {}),
    "D": ("dukemtmcreid", "dukemtmcreid", {}),
    "MS": ("msmt17", "msmt17", {}),
    "C3": ("cuhk03np-detected", "cuhk03np", {"variant": "detected"}),
    "C2": ("cuhk02", "cuhk02", {}),
    "SYSU": ("cuhksysu", "cuhksysu", {}),
    "PRID": (None, "prid2011", {}),
    "GRID": (None, "grid", {}),
    "VIPeR": (None, "viper", {}),
    "iLIDS": (None, "ilids", {}),
}


@dataclass(frozen=True)
class Target:
    """A test dataset of a setting: ``dataset`` opened with ``options``, ``num_splits`` query/gallery splits."""

    dataset: str
    options: dict = field(default_factory=dict, hash=False)
    num_splits: int = 1
    label: str = ""

    def open(self, root: str | Path | None = None, split: int = 0) -> ReIDDataset:
        """The target's query/gallery for split ``split`` (0..num_splits-1)."""
        if not 0 <= split < self.num_splits:
            raise DatasetError(f"target {self.label or self.dataset} has {self.num_splits} split(s); got split {split}")
        options = dict(self.options)
        if self.num_splits > 1:
            options["split"] = split
        return open_dataset(self.dataset, root, **options)

    def describe(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        splits = f" ×{self.num_splits} splits" if self.num_splits > 1 else ""
        return f"{self.dataset}{opts}{splits}"


@dataclass
class Setting:
    """One train→test configuration of a protocol.

    Attributes:
        name: e.g. ``"MA->D"`` or ``"D+MS+C3->MA"``.
        sources: ``[(dataset spec, "train" | "all"), …]`` combined for training.
        targets: datasets to test on, each evaluated separately (mean over its splits).
        paper: method label → ``(mAP, Rank-1)`` in % as published (``MUVA``, ``best other``);
            for multi-target settings the numbers are averages over the targets.
    """

    name: str
    sources: list[tuple[str, str]]
    targets: list[Target]
    paper: dict[str, tuple[float, float]] = field(default_factory=dict)

    def open_sources(self, root: str | Path | None = None):
        """The combined training set (:class:`muva.data.multisource.CombinedDataset`)."""
        return combine(self.sources, root=root, name=self.name.split("->")[0])

    def iter_targets(self, root: str | Path | None = None) -> Iterator[tuple[Target, int, ReIDDataset]]:
        """Yield ``(target, split index, dataset)`` for every target and split."""
        for target in self.targets:
            for k in range(target.num_splits):
                yield target, k, target.open(root, k)

    def describe_sources(self) -> str:
        return " + ".join(d if s == "train" else f"{d} (all)" for d, s in self.sources)


@dataclass
class Protocol:
    """A named family of settings; ``reference`` holds published averages (mAP, Rank-1)."""

    name: str
    title: str
    settings: list[Setting]
    description: str = ""
    reference: dict[str, tuple[float, float]] = field(default_factory=dict)

    def setting(self, name: str) -> Setting:
        """The setting called ``name`` (``→`` and ``->`` both accepted, case-insensitive)."""
        key = name.replace("→", "->").replace(" ", "").lower()
        for s in self.settings:
            if s.name.lower() == key:
                return s
        raise KeyError(f"protocol {self.name!r} has no setting {name!r}; settings: {', '.join(s.name for s in self.settings)}")

    def __iter__(self):
        return iter(self.settings)


def _target(label: str, fixed_splits: bool = False) -> Target:
    """A target; ``fixed_splits``: evaluated on every one of its fixed splits (the count its dataset record gives)."""
    _, dataset, options = ABBREV[label]
    return Target(dataset, dict(options), dataset_record(dataset).num_splits if fixed_splits else 1, label)


def _setting(srcs: list[str], tgts: list[str], split: str = "train", fixed_splits: bool = False, paper=None) -> Setting:
    name = "+".join(srcs) + "->" + "+".join(tgts)
    return Setting(name, [(ABBREV[s][0], split) for s in srcs], [_target(t, fixed_splits) for t in tgts], dict(paper or {}))


# The MUVA paper's single-source table: (MUVA, best other in the paper's table), mAP / Rank-1.
SINGLE_SOURCE_PAPER = {
    ("MA", "D"): ((52.0, 72.1), (49.5, 69.1)),
    ("MA", "MS"): ((27.6, 56.8), (26.8, 52.1)),
    ("D", "MA"): ((51.4, 78.3), (48.6, 77.5)),
    ("D", "MS"): ((26.8, 55.7), (25.2, 53.8)),
    ("MS", "MA"): ((59.5, 82.7), (55.1, 83.0)),
    ("MS", "D"): ((62.0, 77.8), (61.6, 77.7)),
    ("MA", "C3"): ((38.8, 40.8), (32.5, 33.2)),
    ("D", "C3"): ((29.4, 31.1), (23.0, 23.5)),
    ("MS", "C3"): ((40.2, 42.0), (34.1, 34.4)),
    ("C3", "MA"): ((45.1, 70.2), (42.0, 70.4)),
    ("C3", "D"): ((45.6, 66.7), (43.2, 64.8)),
    ("C3", "MS"): ((21.0, 49.8), (17.8, 47.3)),
}
# The MUVA paper's leave-one-out table (target → MUVA mAP / Rank-1).
LEAVE_ONE_OUT_PAPER = {"MA": (66.7, 86.1), "D": (63.8, 79.4), "MS": (34.5, 63.1), "C3": (48.6, 49.6)}
FOUR = ("MA", "D", "MS", "C3")


def _single_source() -> Protocol:
    settings = []
    for s in FOUR:
        for t in FOUR:
            if s != t:
                muva, other = SINGLE_SOURCE_PAPER[(s, t)]
                settings.append(_setting([s], [t], paper={"MUVA": muva, "best other": other}))
    return Protocol(
        "single-source",
        "Single-source DG among Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP (detected)",
        settings,
        "Train on one dataset's training split, test on another's query/gallery (MUVA table 1).",
    )


def _leave_one_out() -> Protocol:
    settings = [_setting([s for s in FOUR if s != t], [t], paper={"MUVA": LEAVE_ONE_OUT_PAPER[t]}) for t in FOUR]
    return Protocol(
        "muva-loo",
        "MUVA multi-source leave-one-out over {MA, D, MS, C3}",
        settings,
        "Train on the training splits of three datasets, test on the fourth (MUVA table 2).",
    )


P1_TARGETS = ("PRID", "GRID", "VIPeR", "iLIDS")


def _protocol1(with_duke: bool) -> Protocol:
    srcs = ["MA", "D", "C2", "C3", "SYSU"] if with_duke else ["MA", "C2", "C3", "SYSU"]
    setting = _setting(srcs, list(P1_TARGETS), split="all", fixed_splits=True)
    return Protocol(
        "protocol1" if with_duke else "protocol1-noduke",
        "Protocol 1: all images of " + ", ".join(srcs) + " → PRID, GRID, VIPeR, iLIDS (10 splits each, mean)",
        [setting],
        "Sources use train+query+gallery; each target is evaluated on its 10 fixed splits and averaged."
        + ("" if with_duke else " Newer papers' variant without DukeMTMC-reID; compare only within one variant."),
        reference={"DSM-CLIP": (84.2, 78.8), "CLIP-DFGS": (83.0, 76.5), "ACL": (75.2, 66.6)} if not with_duke else {},
    )


P23_POOL = ("MA", "MS", "SYSU", "C3")


def _protocol23(number: int) -> Protocol:
    split = "train" if number == 2 else "all"
    settings = [_setting([s for s in P23_POOL if s != t], [t], split=split) for t in ("MA", "MS", "C3")]
    refs = {
        2: {"DSM-CLIP": (55.8, 69.1), "CLIP-DFGS": (53.7, 67.3), "CLIP-ReID (re-run)": (45.8, 59.8)},
        3: {"DSM-CLIP": (57.8, 70.6), "CLIP-DFGS": (55.3, 68.3)},
    }[number]
    return Protocol(
        f"protocol{number}",
        f"Protocol {number}: leave-one-out among MA, MS, CUHK-SYSU, C3 ({'training splits' if number == 2 else 'all images'})",
        settings,
        "CUHK-SYSU is always a source, never a target; the reference numbers are averages over the three targets.",
        reference=refs,
    )


def _register_presets() -> None:
    PROTOCOLS.add("single-source", _single_source(), aliases=("single", "ss"))
    PROTOCOLS.add("muva-loo", _leave_one_out(), aliases=("leave-one-out", "loo", "multi-source"))
    PROTOCOLS.add("protocol1", _protocol1(True), aliases=("p1",))
    PROTOCOLS.add("protocol1-noduke", _protocol1(False), aliases=("p1-noduke", "protocol1-no-duke"))
    PROTOCOLS.add("protocol2", _protocol23(2), aliases=("p2",))
    PROTOCOLS.add("protocol3", _protocol23(3), aliases=("p3",))


_register_presets()


def synthetic_protocol(benchmark: str | Path, leave_one_out_only: bool = False) -> Protocol:
    """Single-source pairs and leave-one-out settings over the domains of a ``muva synth`` output
    (only the leave-one-out ones with ``leave_one_out_only``: ``synth-loo:PATH``).

    Domains are the sub-folders listed in ``synth.json`` (key ``domains``: names or objects
    with ``name``/``path``), else every sub-folder holding ``bounding_box_train/``.
    """
    root = Path(benchmark).expanduser()
    domains: list[Path] = []
    meta = root / "synth.json"
    if meta.is_file():
        try:
            listed = json.loads(meta.read_text(encoding="utf-8")).get("domains", [])
        except (OSError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{meta} is not a valid synth.json: {exc}") from None
        for d in listed:
            rel = d if isinstance(d, str) else d.get("path") or d.get("dir") or d.get("name")
            if rel:
                domains.append(root / rel if not Path(rel).is_absolute() else Path(rel))
    if not domains and root.is_dir():
        domains = sorted(p for p in root.iterdir() if (p / "bounding_box_train").is_dir())
    domains = [d for d in domains if (d / "bounding_box_train").is_dir()]
    if len(domains) < 2:
        raise DatasetError(f"{root}: a synthetic protocol needs at least two domains with bounding_box_train/ (found {len(domains)}); run `muva synth {root}` first")
    specs = {d.name: f"synth:{d}" for d in domains}
    settings = [] if leave_one_out_only else [
        Setting(f"{s}->{t}", [(specs[s], "train")], [Target(specs[t], {}, 1, t)])
        for s in specs for t in specs if s != t
    ]
    if len(specs) > 2:
        for t in specs:
            srcs = [s for s in specs if s != t]
            settings.append(Setting("+".join(srcs) + f"->{t}", [(specs[s], "train") for s in srcs], [Target(specs[t], {}, 1, t)]))
    elif leave_one_out_only:
        raise DatasetError(f"{root}: leave-one-domain-out needs at least three domains (found {len(specs)})")
    if leave_one_out_only:
        return Protocol(f"synth-loo:{root}", f"Synthetic domains of {root}: leave-one-domain-out", settings)
    return Protocol(f"synth:{root}", f"Synthetic domains of {root}: single-source pairs and leave-one-out", settings)


def published_results(sources, targets) -> dict[str, tuple[float, float]]:
    """The paper's numbers of the preset setting that trains on ``sources`` (dataset specs) and tests
    on ``targets``; ``{}`` when no preset setting has exactly these."""
    def canon(specs) -> list[str]:
        return [DATASETS.canonical(x) if x in DATASETS else str(x) for x in specs]

    want = (canon(sources), canon(targets))
    for name in PROTOCOLS.names():
        for setting in PROTOCOLS.get(name).settings:
            if setting.paper and (canon(d for d, _ in setting.sources), canon(t.dataset for t in setting.targets)) == want:
                return dict(setting.paper)
    return {}


def get_protocol(name: str) -> Protocol:
    """A preset by name or alias (``PROTOCOLS.names()``), or ``synth:PATH`` / ``synth-loo:PATH`` for a synthetic benchmark."""
    if name.startswith("synth:"):
        return synthetic_protocol(name[len("synth:"):])
    if name.startswith("synth-loo:"):
        return synthetic_protocol(name[len("synth-loo:"):], leave_one_out_only=True)
    return PROTOCOLS.get(name)


__all__ = ["PROTOCOLS", "Protocol", "Setting", "Target", "get_protocol", "published_results", "synthetic_protocol"]

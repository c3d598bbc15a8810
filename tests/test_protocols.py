"""Multi-source combination and the DG protocol presets; `muva protocol list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from muva.cli import app
from muva.data import DatasetError, open_dataset
from muva.data.multisource import CombinedDataset, combine
from muva.data.protocols import PROTOCOLS, get_protocol
from muva.data.records import ImageRecord, ReIDDataset

runner = CliRunner()


def ds(name, train=(), query=(), gallery=(), **info):
    mk = lambda rows: [ImageRecord(f"/{name}/{i}.jpg", pid, cam, name) for i, (pid, cam) in enumerate(rows)]  # noqa: E731
    return ReIDDataset(name, Path("/" + name), mk(train), mk(query), mk(gallery), dict(info))


# ----------------------------------------------------------------------------- combine
def test_combine_prefixes_and_relabels_identities():
    a = ds("alpha", train=[(5, 0), (5, 1), (9, 0)])
    b = ds("beta", train=[(5, 0), (7, 2), (7, 2)])  # identity 5 exists in both: different people
    c = combine([a, (b, "train")])
    assert isinstance(c, CombinedDataset)
    assert c.num_pids == 4 and c.pid_names == ["alpha_5", "alpha_9", "beta_5", "beta_7"]
    assert [r.pid for r in c.train] == [0, 0, 1, 2, 3, 3]
    assert [r.dsetid for r in c.train] == [0, 0, 0, 1, 1, 1]
    # cameras unique per dataset: alpha {0,1} → 0,1; beta {0,2} → 2,3
    assert [r.camid for r in c.train] == [0, 1, 0, 2, 3, 3]
    assert c.num_cams == 4 and c.cam_names == ["alpha_c0", "alpha_c1", "beta_c0", "beta_c2"]
    assert c.sources == [("alpha", "train"), ("beta", "train")]
    assert c.num_train_pids == 4 and c.name == "alpha+beta"
    assert [s[2:] for s in c.source_stats()] == [(2, 3, 2), (2, 3, 2)]


def test_combine_all_split_drops_junk_and_distractors():
    a = ds("alpha", train=[(1, 0), (-1, 0), (0, 1)], query=[(3, 0)], gallery=[(3, 1), (0, 1), (-1, 0), (4, 1)])
    c = combine([(a, "all")])
    assert c.pid_names == ["alpha_1", "alpha_3", "alpha_4"]
    assert len(c.train) == 4 and all(r.pid >= 0 for r in c.train)
    only_train = combine([(a, "train")])
    assert only_train.pid_names == ["alpha_1"]


def test_combine_errors_and_info():
    a = ds("alpha", train=[(0, 0)])
    with pytest.raises(DatasetError, match="no usable training identity"):
        combine([a])
    with pytest.raises(DatasetError, match="source split 'query'"):
        combine([(ds("b", train=[(1, 0)]), "query")])
    with pytest.raises(DatasetError, match="at least one source"):
        combine([])
    m = ds("msmt17", train=[(1, 0)], train_split="train+val")
    assert combine([m]).info["msmt17.train_split"] == "train+val"


def test_combine_opens_specs_under_root(tmp_path):
    from test_datasets_sources import make_domain

    d0 = make_domain(tmp_path / "domain_0", "domain_0", 1)
    d1 = make_domain(tmp_path / "domain_1", "domain_1", 1)  # same numbers, other domain
    c = combine([f"synth:{d0}", (str(d1), "all")])
    assert c.num_pids == 2 + 3  # domain_1 'all' adds its query/gallery identity (distractor 0 dropped)
    assert len({r.dsetid for r in c.train}) == 2
    assert c.cam_names == ["synth-domain_0_c0", "synth-domain_0_c1", "synth-domain_1_c0", "synth-domain_1_c1"]


# ----------------------------------------------------------------------------- presets
FOUR = {"MA": "market1501", "D": "dukemtmcreid", "MS": "msmt17", "C3": "cuhk03np"}


def test_single_source_has_every_ordered_pair_with_paper_numbers():
    p = get_protocol("single-source")
    assert len(p.settings) == 12
    pairs = {(s.sources[0][0], s.targets[0].dataset) for s in p.settings}
    srcs = {"market1501", "dukemtmcreid", "msmt17", "cuhk03np-detected"}
    assert {a for a, _ in pairs} == srcs and len(pairs) == 12
    for s in p.settings:
        assert len(s.sources) == 1 and s.sources[0][1] == "train" and len(s.targets) == 1
        assert set(s.paper) == {"MUVA", "best other"}
    assert p.setting("MS->C3").paper["MUVA"] == (40.2, 42.0)
    assert p.setting("ma→d").paper["best other"] == (49.5, 69.1)
    c3 = p.setting("MA->C3").targets[0]
    assert (c3.dataset, c3.options, c3.num_splits) == ("cuhk03np", {"variant": "detected"}, 1)
    with pytest.raises(KeyError, match="no setting 'MA->GRID'"):
        p.setting("MA->GRID")


def test_leave_one_out_preset():
    p = get_protocol("leave-one-out")
    assert p.name == "muva-loo" and len(p.settings) == 4
    s = p.setting("D+MS+C3->MA")
    assert s.sources == [("dukemtmcreid", "train"), ("msmt17", "train"), ("cuhk03np-detected", "train")]
    assert s.paper == {"MUVA": (66.7, 86.1)}
    for setting in p.settings:
        target = setting.targets[0].dataset
        assert target not in {d.split("-")[0] for d, _ in setting.sources}


@pytest.mark.parametrize("name,with_duke", [("protocol1", True), ("p1-noduke", False)])
def test_protocol1(name, with_duke):
    p = get_protocol(name)
    (s,) = p.settings
    sources = [d for d, _ in s.sources]
    assert ("dukemtmcreid" in sources) is with_duke
    assert {"market1501", "cuhk02", "cuhk03np-detected", "cuhksysu"} <= set(sources)
    assert all(split == "all" for _, split in s.sources)
    assert [(t.dataset, t.num_splits) for t in s.targets] == [("prid2011", 10), ("grid", 10), ("viper", 10), ("ilids", 10)]


@pytest.mark.parametrize("name,split", [("protocol2", "train"), ("p3", "all")])
def test_protocols_2_and_3(name, split):
    p = get_protocol(name)
    targets = [s.targets[0].dataset for s in p.settings]
    assert targets == ["market1501", "msmt17", "cuhk03np"]  # CUHK-SYSU never a target
    for s in p.settings:
        assert len(s.sources) == 3 and ("cuhksysu", split) in s.sources
        assert all(sp == split for _, sp in s.sources)
    assert p.reference["DSM-CLIP"] == ((55.8, 69.1) if split == "train" else (57.8, 70.6))


def test_registry_lists_presets():
    assert PROTOCOLS.names() == ["muva-loo", "protocol1", "protocol1-noduke", "protocol2", "protocol3", "single-source"]
    with pytest.raises(KeyError, match="Did you mean"):
        get_protocol("protocol4")


def test_presets_resolve_to_registered_datasets():
    from muva.data import DATASETS

    for name in PROTOCOLS.names():
        for s in get_protocol(name).settings:
            for d, _ in s.sources:
                assert d in DATASETS, d
            for t in s.targets:
                assert t.dataset in DATASETS, t.dataset


def test_target_open_passes_split_and_options(tmp_path):
    from test_datasets_small import make_viper

    make_viper(tmp_path)
    viper = get_protocol("p1").settings[0].targets[2]
    assert viper.open(tmp_path, split=7).info["split"] == 7
    with pytest.raises(DatasetError, match="has 10 split"):
        viper.open(tmp_path, split=10)


def test_synthetic_protocol(tmp_path):
    from test_datasets_sources import make_domain

    for k in range(3):
        make_domain(tmp_path / f"domain_{k}", f"domain_{k}", 1 + 100 * k)
    (tmp_path / "synth.json").write_text(json.dumps({"domains": [{"name": f"domain_{k}", "path": f"domain_{k}"} for k in range(3)]}))
    p = get_protocol(f"synth:{tmp_path}")
    names = [s.name for s in p.settings]
    assert len(names) == 6 + 3 and "domain_0->domain_1" in names and "domain_1+domain_2->domain_0" in names
    s = p.setting("domain_1+domain_2->domain_0")
    combined = s.open_sources()
    assert combined.num_pids == 4 and combined.num_sources == 2
    (target, split, test) = next(s.iter_targets())
    assert split == 0 and test.name == "synth-domain_0" and len(test.query) == 1
    with pytest.raises(DatasetError, match="at least two domains"):
        get_protocol(f"synth:{tmp_path / 'domain_0'}")


# ----------------------------------------------------------------------------- CLI
def test_protocol_list_command():
    result = runner.invoke(app, ["protocol", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in PROTOCOLS.names():
        assert name in result.output
    assert "MS+SYSU+C3->MA" in result.output and "MUVA: 52.0 / 72.1" in result.output
    assert "prid2011 ×10 splits" in result.output


def test_protocol_list_one_and_unknown():
    result = runner.invoke(app, ["protocol", "list", "p2"])
    assert result.exit_code == 0 and "protocol2" in result.output and "single-source" not in result.output
    bad = runner.invoke(app, ["protocol", "list", "p9"])
    assert bad.exit_code == 2 and "unknown protocol" in bad.output


def test_protocol_app_is_exposed_for_other_commands():
    from muva.data.commands import protocol_app

    names = {c.name for c in protocol_app.registered_commands}
    assert "list" in names

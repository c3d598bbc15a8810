"""Typed configs: YAML loading, _base_ inheritance, overrides, strict errors, saving."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from muva.config import ConfigError, apply_overrides, config_keys, dump_config, from_dict, load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    milestones: list[int] = field(default_factory=lambda: [30, 50])


@dataclass
class Data:
    sources: list[str] = field(default_factory=lambda: ["market1501"])
    root: Optional[Path] = None
    size: tuple[int, int] = (256, 128)
    split: Literal["train", "all"] = "train"


@dataclass
class Exp:
    name: str = "run"
    epochs: int = 60
    amp: bool = True
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)


def test_defaults_and_overrides_are_typed():
    cfg = load_config(Exp, overrides=["epochs=3", "optim.lr=5e-6", "amp=false", "data.sources=[market1501,dukemtmcreid]", "data.size=[384,128]"])
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.optim.lr == 5e-6 and isinstance(cfg.optim.lr, float)
    assert cfg.amp is False
    assert cfg.data.sources == ["market1501", "dukemtmcreid"]
    assert cfg.data.size == (384, 128)
    # untouched defaults stay
    assert cfg.optim.betas == (0.9, 0.999)


def test_int_accepted_for_float_and_path_coerced(tmp_path):
    cfg = load_config(Exp, overrides=["optim.lr=1", f"data.root={tmp_path}"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.data.root == tmp_path


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, overrides=["optim.wieght_decay=0"])
    msg = str(exc.value)
    assert "optim.wieght_decay" in msg and "'optim.weight_decay'" in msg
    assert "Valid keys under 'optim'" in msg and "milestones" in msg
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(Exp, overrides=["epoch=1"])


def test_unknown_key_in_yaml_names_file_and_closest(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: a\ndata:\n  sorces: [x]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Exp, path)
    assert str(path) in str(exc.value) and "'data.sources'" in str(exc.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("epochs=abc", "is not an int"),
        ("epochs=1.5", "is not an int"),
        ("amp=maybe", "is not a bool"),
        ("optim.lr=fast", "is not a float"),
        ("data.split=test", "is not one of"),
        ("data.size=[1,2,3]", "expected 2 values"),
        ("optim=1", "expected a mapping"),
        ("optim.lr.x=1", "is a value, not a section"),
        ("noequals", "must look like key.sub=value"),
    ],
)
def test_bad_values_are_clear(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(Exp, overrides=[override])


def test_base_inheritance_and_cycle(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 10\noptim:\n  lr: 0.1\n  weight_decay: 0.5\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(Exp, tmp_path / "child.yaml")
    assert cfg.epochs == 10 and cfg.optim.lr == 0.2 and cfg.optim.weight_decay == 0.5
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Exp, tmp_path / "a.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Exp, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_config(Exp, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Exp, lst)


def test_save_roundtrip(tmp_path):
    cfg = apply_overrides(Exp, Exp(), ["name=x", "optim.milestones=[5]", "data.root=/tmp/d"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(Exp, path)
    assert again == cfg
    assert "milestones" in dump_config(cfg)
    assert from_dict(Exp, to_dict(cfg)) == cfg


def test_config_keys_lists_leaves():
    keys = config_keys(Exp)
    assert "optim.lr" in keys and "data.split" in keys and "optim" not in keys


def test_unknown_keys_suggest_the_deeper_key_and_dict_keys_take_dotted_overrides():
    from muva.config import ConfigError, config_diff, load_config, to_dict
    from muva.engine.config import ExperimentConfig

    with pytest.raises(ConfigError, match=r"did you mean 'stage1\.optim\.lr' or 'stage2\.optim\.lr'"):
        load_config(ExperimentConfig, overrides=["optim.lr=1e-4"])
    with pytest.raises(ConfigError, match=r"'stage1\.epochs' or 'stage2\.epochs'"):
        load_config(ExperimentConfig, overrides=["epochs=3"])
    cfg = load_config(ExperimentConfig, overrides=["data.dataset_options.msmt17.train_split=train+val",
                                                   "data.dataset_options.msmt17.min_images=2"])
    assert cfg.data.dataset_options == {"msmt17": {"train_split": "train+val", "min_images": 2}}
    diff = config_diff(to_dict(ExperimentConfig()), to_dict(cfg))
    assert diff == ["data.dataset_options.msmt17: '<absent>' → {'train_split': 'train+val', 'min_images': 2}"]

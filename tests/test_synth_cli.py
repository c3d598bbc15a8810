"""``muva synth``: config loading, overrides, errors, CLI help and runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from muva.config import ConfigError, load_config, to_dict
from muva.data.synth import SynthConfig

REPO = Path(__file__).resolve().parents[1]
TINY = ["num_domains=1", "ids_per_domain=3", "test_ids_per_domain=3", "images_per_id=2", "gallery_per_id=2",
        "distractors_per_domain=1", "num_cameras=2", "width=48", "height=96"]


@pytest.fixture()
def app() -> typer.Typer:
    """The real command line: a muva error escaping ``synth`` becomes its message and exit code 2 there."""
    from muva.cli import app

    return app


def test_yaml_defaults_match_the_dataclass():
    cfg = load_config(SynthConfig, REPO / "configs" / "synth.yaml")
    assert to_dict(cfg) == to_dict(SynthConfig())
    assert set(yaml.safe_load((REPO / "configs" / "synth.yaml").read_text())) == set(to_dict(SynthConfig()))


def test_overrides_apply_with_types():
    cfg = load_config(SynthConfig, REPO / "configs" / "synth.yaml", ["num_domains=4", "ids_per_domain=60",
                                                                      "backgrounds=[indoor,grass]", "style_strength=0.5"])
    assert (cfg.num_domains, cfg.ids_per_domain, cfg.backgrounds, cfg.style_strength) == (4, 60, ["indoor", "grass"], 0.5)
    assert [cfg.background(k) for k in range(3)] == ["indoor", "grass", "indoor"]


@pytest.mark.parametrize("override,match", [
    ("num_domain=4", "did you mean 'num_domains'"),
    ("ids_per_domian=4", "ids_per_domain"),
    ("num_cameras=1", "num_cameras must be >= 2"),
    ("queries_per_id=4", "queries_per_id must be between 1 and num_cameras - 1"),
    ("num_domains=many", "not an int"),
    ("backgrounds=[beach]", "unknown background family beach"),
    ("ids_per_domain=5000", "4-digit"),
])
def test_config_errors_are_clear(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(SynthConfig, REPO / "configs" / "synth.yaml", [override])


def test_synth_help(app):
    res = CliRunner().invoke(app, ["synth", "--help"])
    assert res.exit_code == 0
    for word in ("OUT_DIR", "--workers", "--overwrite", "--montage", "--config"):
        assert word in res.output


def test_muva_synth_help_through_the_real_cli():
    res = subprocess.run([sys.executable, "-m", "muva", "synth", "--help"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "synthetic" in res.stdout.lower() and "--workers" in res.stdout


def test_cli_run_writes_resolved_config_and_montage(app, tmp_path):
    out, png = tmp_path / "out", tmp_path / "m.png"
    res = CliRunner().invoke(app, ["synth", str(out), "-c", str(REPO / "configs" / "synth.yaml"), *TINY, "seed=3",
                                   "--montage", str(png), "-q"])
    assert res.exit_code == 0, res.output
    saved = load_config(SynthConfig, out / "config.yaml")
    assert saved.seed == 3 and saved.num_domains == 1 and saved.width == 48
    assert png.is_file() and png.stat().st_size > 1000
    assert len(list((out / "domain_0" / "bounding_box_train").glob("*.jpg"))) == 6
    # same command again: nothing to do; another config: refused without --overwrite
    again = CliRunner().invoke(app, ["synth", str(out), *TINY, "seed=3"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    other = CliRunner().invoke(app, ["synth", str(out), *TINY, "seed=4"])
    assert other.exit_code == 2 and "--overwrite" in other.output


def test_cli_bad_override_names_closest_key(app, tmp_path):
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "num_camera=3"])
    assert res.exit_code == 2
    assert "num_cameras" in res.output
    assert not (tmp_path / "x").exists()

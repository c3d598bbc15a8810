"""`muva --import`, $MUVA_PLUGINS: a user's module registers a dataset without a fork; failures are one message."""

from __future__ import annotations

import os
import subprocess
import sys


def muva(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=cwd, timeout=120)


PLUGIN = '''
from pathlib import Path
from muva.data.datasets import register_dataset
from muva.data.records import ImageRecord, ReIDDataset

@register_dataset("plugged")
def plugged(root):
    base = Path(root) / "plugged"
    recs = lambda s: [ImageRecord(str(p), int(p.stem.split("_")[0]), int(p.stem.split("_")[1])) for p in sorted((base / s).glob("*.jpg"))]
    return ReIDDataset("plugged", base, train=recs("train"), query=recs("query"), gallery=recs("gallery"))
'''


def _data(root):
    from PIL import Image

    for split, names in {"train": ["1_0", "1_1"], "query": ["2_0"], "gallery": ["2_1"]}.items():
        (root / "plugged" / split).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (32, 64)).save(root / "plugged" / split / f"{n}.jpg")


def test_a_plugin_file_or_module_registers_a_dataset(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    _data(tmp_path / "data")
    r = muva("--import", tmp_path / "my_plugin.py", "data", "summary", "plugged", "--root", tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert "plugged" in r.stdout and "train" in r.stdout
    env = {"MUVA_PLUGINS": "my_plugin", "PYTHONPATH": str(tmp_path)}
    r = muva("data", "summary", "plugged", "--root", tmp_path / "data", env=env)
    assert r.returncode == 0, r.stderr
    r = muva("data", "summary", "plugged", "--root", tmp_path / "data")  # without the plugin: an unknown name
    assert r.returncode == 2 and "plugged" in r.stderr and "Traceback" not in r.stderr


def test_a_plugin_that_cannot_be_imported_is_one_message(tmp_path):
    r = muva("--import", "no_such_muva_plugin", "data", "summary", "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot import plugin 'no_such_muva_plugin': ModuleNotFoundError" in " ".join(r.stderr.split())
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    r = muva("--import", tmp_path / "broken.py", "data", "summary", "x")
    assert r.returncode == 2 and "RuntimeError: boom" in r.stderr and "Traceback" not in r.stderr
    r = muva("--import", tmp_path / "absent.py", "data", "summary", "x")
    assert r.returncode == 2 and "does not exist" in r.stderr

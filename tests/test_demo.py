"""`muva demo` on miniature data: the three models, the tables and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_configs_demo_yaml_matches_the_built_in_config():
    from muva.viz.demo import DEMO_CONFIG

    assert yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()) == DEMO_CONFIG


@pytest.mark.slow
def test_demo_runs_end_to_end_on_tiny_data(tmp_path):
    from muva.data.synth import SynthConfig, generate
    from muva.viz.demo import run_demo

    generate(SynthConfig(num_domains=3, ids_per_domain=8, test_ids_per_domain=6, images_per_id=4,
                         distractors_per_domain=2, width=64, height=128), tmp_path / "data", progress=False,
             overwrite=True)
    tiny = ["model.arch.vision_width=64", "model.arch.vision_layers=2", "stage1.epochs=1", "stage2.epochs=2",
            "data.batch_size=16", "stage1.batch_size=16", "data.num_workers=0"]
    results = run_demo(tmp_path, overrides=tiny)
    assert list(results) == ["untrained", "global baseline", "MUVA"]
    for r in results.values():
        assert 0.0 <= r.mAP <= 1.0 and r.num_valid_queries > 0
    page = (tmp_path / "report.html").read_text()
    for heading in ("Unseen-domain results", "Loss curves", "Ranked lists", "Part masks"):
        assert heading in page
    assert page.count("data:image/png;base64,") == 2 and "<svg" in page
    table = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in table["rows"]] == ["untrained", "global baseline", "MUVA"]
    assert (tmp_path / "muva" / "model.safetensors").is_file() and (tmp_path / "global" / "model.safetensors").is_file()
    # the global baseline has no part tokens; MUVA has three
    from muva.models import load_model

    assert load_model(tmp_path / "global" / "model.safetensors").num_parts == 0
    assert load_model(tmp_path / "muva" / "model.safetensors").num_parts == 3


def test_demo_help_is_fast_and_light():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import muva.engine.commands, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""`muva protocol run` reuses a finished setting only for the same inputs (provenance.json).

One tiny setting is trained once per module (about 10 s on a CPU); each test works on a copy
of that protocol folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import TINY, make_tiny_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S01, S10 = "domain_0->domain_1", "domain_1->domain_0"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "COLUMNS": "400"}


def _overrides(data: dict, *extra: str) -> list[str]:
    grounding = "{synth-domain_0: %s, synth-domain_1: %s}" % tuple(data["caches"].values())
    return [f"grounding.caches={grounding}", "stage1.epochs=1", "stage2.epochs=1", "eval.every=0", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny synthetic data and a protocol folder where one setting (domain_0 → domain_1) is finished."""
    import torch
    from rich.console import Console

    from muva.engine.protocol import run_protocol

    root = tmp_path_factory.mktemp("integrity")
    data = make_tiny_data(root)
    protocol = f"synth:{Path(data['source']).parent}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_protocol(protocol, TINY, _overrides(data), settings=[S01], out=root / "p", console=Console(record=True))
    finally:
        torch.set_num_threads(threads)
    return {"data": data, "protocol": protocol, "out": root / "p"}


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A private copy of the trained protocol folder (moving a folder keeps its runs valid)."""
    return Path(shutil.copytree(trained["out"], tmp_path / "p"))


def _cli(trained, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "muva", "protocol", "run", trained["protocol"], "-c", str(TINY), "--out", str(out),
           *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def _mean_map(run_dir: Path) -> float:
    rows = json.loads((run_dir / "results.json").read_text())["rows"][0]["results"]
    return sum(r["mAP"] for r in rows.values()) / len(rows)


def _row(out: Path, setting: str) -> tuple[str, float]:
    doc = json.loads((out / "protocol.json").read_text())
    (row,) = [r for r in doc["rows"] if r["method"].startswith("ours") and setting in r["results"]]
    return row["method"], row["results"][setting]["mAP"]


# ----------------------------------------------------------------------------- provenance
def test_provenance_records_inputs_and_ignores_display_keys(trained):
    from muva.engine.config import load_experiment
    from muva.engine.provenance import provenance_diff, provenance_hash, run_provenance

    run = trained["out"] / "domain_0_to_domain_1"
    saved = json.loads((run / "provenance.json").read_text())
    assert saved["state"] == "finished" and saved["config"]["stage2"]["epochs"] == 1
    assert saved["weights"] == {"kind": "none"}
    (cache,) = saved["grounding_caches"].values()
    assert cache["path"] == trained["data"]["caches"][trained["data"]["source"]] and len(cache["sha256"]) == 64
    assert saved["image_lists"]["train"]["images"] == 32 and saved["image_lists"]["train"]["identities"] == 8
    assert saved["image_lists"]["targets"]["synth-domain_1"]["query"] == 6
    cfg = load_experiment(TINY, [*_overrides(trained["data"]), f"data.sources=[{trained['data']['source']}]",
                                 f"data.targets=[{trained['data']['target']}]"])
    prov = run_provenance(cfg)
    cosmetic = load_experiment(TINY, [*_overrides(trained["data"]), f"data.sources=[{trained['data']['source']}]",
                                      f"data.targets=[{trained['data']['target']}]", "output.progress=false",
                                      "output.log_every=50", "data.num_workers=3", "output.dir=/elsewhere"])
    assert provenance_diff(prov, run_provenance(cosmetic)) == []
    assert provenance_hash(prov) == provenance_hash(run_provenance(cosmetic))
    assert provenance_diff(prov, run_provenance(load_experiment(TINY, [*_overrides(trained["data"]), "seed=7",
        f"data.sources=[{trained['data']['source']}]", f"data.targets=[{trained['data']['target']}]"]))) == ["seed: 1234 → 7"]


def test_provenance_sees_weights_caches_and_image_lists(trained, tmp_path):
    from muva.engine.config import load_experiment
    from muva.engine.provenance import provenance_diff, run_provenance

    src = Path(shutil.copytree(trained["data"]["source"], tmp_path / "domain_0"))
    cache = Path(shutil.copy(trained["data"]["caches"][trained["data"]["source"]], tmp_path / "c.sqlite"))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x" * 1000)
    over = ["stage1.epochs=1", f"data.sources=[{src}]", f"data.targets=[{trained['data']['target']}]",
            f"grounding.caches={{{src}: {cache}}}", f"model.pretrained={weights}"]
    before = run_provenance(load_experiment(TINY, over))
    assert before["weights"]["size"] == 1000 and before["weights"]["kind"] == "file"
    weights.write_bytes(b"y" * 1000)  # same size, other content
    with cache.open("ab") as fh:
        fh.write(b"\0" * 10)
    first = sorted((src / "bounding_box_train").iterdir())[0]
    first.unlink()
    diff = provenance_diff(before, run_provenance(load_experiment(TINY, over)))
    keys = [d.split(":")[0] for d in diff]
    assert "weights.sha256" in keys and f"grounding_caches.{src}.size" in keys and f"grounding_caches.{src}.sha256" in keys
    assert "image_lists.train.images: 32 → 31" in diff and "image_lists.train.sha256" in keys
    assert not any(k.startswith("image_lists.targets") for k in keys)


def test_default_out_folder_is_per_config_name():
    from muva.data.protocols import get_protocol
    from muva.engine.config import load_experiment
    from muva.engine.protocol import default_out

    repo = Path(__file__).resolve().parents[1]
    p = get_protocol("single-source")
    muva = default_out(p, load_experiment(repo / "configs" / "muva" / "base_vitb16.yaml"))
    clip = default_out(p, load_experiment(repo / "configs" / "clipreid" / "base_vitb16.yaml"))
    assert muva == Path("runs/protocol/single-source/muva-vitb16")
    assert clip == Path("runs/protocol/single-source/clipreid-vitb16")


# ----------------------------------------------------------------------------- CLI
def test_unchanged_config_reuses_the_finished_setting(trained, folder):
    run = folder / "domain_0_to_domain_1"
    before = (run / "results.json").stat().st_mtime_ns
    proc = _cli(trained, folder, "-s", S01, *_overrides(trained["data"], "output.progress=false"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "results.json").stat().st_mtime_ns == before  # not retrained
    assert "done (reused)" in proc.stdout and "to train" not in proc.stdout
    label, value = _row(folder, S01)
    assert label.startswith("ours: tiny #") and value == pytest.approx(_mean_map(run))


def test_changed_config_is_refused_and_rerun_retrains(trained, folder):
    run = folder / "domain_0_to_domain_1"
    before = (run / "results.json").stat().st_mtime_ns
    old_label, _ = _row(folder, S01)
    changed = _overrides(trained["data"], "stage2.epochs=2")
    proc = _cli(trained, folder, "-s", S01, *changed)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert S01 in proc.stderr and "stage2.epochs: 1 → 2" in proc.stderr
    assert "--rerun" in proc.stderr and "--out" in proc.stderr
    assert (run / "results.json").stat().st_mtime_ns == before  # nothing was trained

    dry = _cli(trained, folder, "--dry-run", *changed)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "stale: stage2.epochs: 1 → 2" in dry.stdout and "to train" in dry.stdout  # S10 never ran
    assert (run / "results.json").stat().st_mtime_ns == before

    (run / "marker.txt").write_text("left by the earlier run")
    again = _cli(trained, folder, "-s", S01, "--rerun", *changed)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "results.json").stat().st_mtime_ns != before
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["config"]["stage2"]["epochs"] == 2 and prov["state"] == "finished"
    assert not (run / "marker.txt").exists()  # the folder was cleared first
    label, value = _row(folder, S01)
    assert label != old_label and label == f"ours: tiny #{prov['protocol']['config_hash']}"
    assert value == pytest.approx(_mean_map(run))
    assert f"| {label} |" in (folder / "protocol.md").read_text()
    assert old_label not in (folder / "protocol.md").read_text()


def test_missing_grounding_cache_is_one_message_before_training(trained, tmp_path):
    out = tmp_path / "p"
    missing = [tmp_path / "none_0.sqlite", tmp_path / "none_1.sqlite"]
    proc = _cli(trained, out, *_overrides(trained["data"]),
                f"grounding.caches={{synth-domain_0: {missing[0]}, synth-domain_1: {missing[1]}}}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert "2 grounding cache(s) missing" in proc.stderr
    for path, spec in zip(missing, (trained["data"]["source"], trained["data"]["target"])):
        assert f"muva ground run synth:{spec} --expert pose --out {path}" in proc.stderr
    assert not out.exists()  # nothing trained, no folder made


def test_finished_setting_without_provenance_is_refused(trained, folder):
    (folder / "domain_0_to_domain_1" / "provenance.json").unlink()
    proc = _cli(trained, folder, "-s", S01, *_overrides(trained["data"]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no provenance.json" in proc.stderr and S01 in proc.stderr and "--rerun" in proc.stderr


# ----------------------------------------------------------------------------- the table
def test_table_lists_settings_of_earlier_calls(trained, folder):
    from rich.console import Console

    from muva.engine.protocol import run_protocol

    first_label, first = _row(folder, S01)
    console = Console(record=True, width=300)
    results = run_protocol(trained["protocol"], TINY, _overrides(trained["data"], "seed=5"), settings=[S10], out=folder,
                           console=console)
    assert set(results) == {S10}  # only the chosen setting trained ...
    doc = json.loads((folder / "protocol.json").read_text())
    assert doc["targets"] == [S01, S10]  # ... but the table keeps the earlier one
    methods = [r["method"] for r in doc["rows"]]
    assert methods[1] == first_label and methods[0].startswith("ours: tiny #") and methods[0] != first_label
    assert _row(folder, S01) == (first_label, first)
    assert doc["runs"][S01]["config_hash"] == first_label.split("#")[1]
    md = (folder / "protocol.md").read_text()
    assert f"{S01} mAP" in md and f"{S10} mAP" in md and first_label in md and methods[0] in md

"""``parts.jsonl``: one record type, one writer and one reader (muva.data.synth.parts_file).

The generator writes it, the montage and grounding evaluation read it with the same reader,
and a bad file is one error naming the file and the line, on the command line too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from muva.data.records import DatasetError
from muva.data.synth import SynthConfig, generate, make_montage
from muva.data.synth.parts_file import PartsFileError, PartsRecord, read_parts, read_parts_jsonl, write_parts_jsonl
from muva.utils.errors import MuvaError

REPO = Path(__file__).resolve().parents[1]
TINY = ["num_domains=1", "ids_per_domain=2", "test_ids_per_domain=2", "images_per_id=2", "gallery_per_id=1",
        "distractors_per_domain=1", "num_cameras=2", "width=32", "height=64"]

RECORD = PartsRecord("query/0001_c1s1_000008_01.jpg", 64, 128,
                     {"head": (1.5, 2.0, 9.25, 12.0), "legs": (0.0, 60.0, 30.0, 120.0)}, ("legs",),
                     pid=1, camid=0, view="left")
LINE = ('{"path": "query/0001_c1s1_000008_01.jpg", "pid": 1, "camid": 0, "width": 64, "height": 128, '
        '"boxes": {"head": [1.5, 2.0, 9.25, 12.0], "legs": [0.0, 60.0, 30.0, 120.0]}, "occluded": ["legs"], "view": "left"}')


def test_writer_writes_one_json_line_per_record_in_synth_key_order(tmp_path):
    path = tmp_path / "parts.jsonl"
    write_parts_jsonl(path, [RECORD, RECORD])
    assert path.read_text() == LINE + "\n" + LINE + "\n"
    assert read_parts_jsonl(path) == [RECORD, RECORD]


def test_reader_takes_minimal_ground_truth_and_skips_blank_lines(tmp_path):
    path = tmp_path / "gt.jsonl"
    path.write_text('\n{"path": "a.jpg", "boxes": {"head": [0, 0, 10, 10]}}\n\n')
    (rec,) = read_parts_jsonl(path)
    assert rec == PartsRecord("a.jpg", 0, 0, {"head": (0.0, 0.0, 10.0, 10.0)})
    assert (rec.occluded, rec.pid, rec.camid, rec.view) == ((), None, None, None)
    assert rec.to_json() == {"path": "a.jpg", "width": 0, "height": 0, "boxes": {"head": [0.0, 0.0, 10.0, 10.0]},
                             "occluded": []}


@pytest.mark.parametrize("bad,why", [
    ("{not json", "JSONDecodeError"),
    ('{"path": "a.jpg"}', "KeyError: 'boxes'"),
    ('{"path": "a.jpg", "boxes": [[0, 0, 1, 1]]}', "AttributeError"),
    ('{"path": "a.jpg", "boxes": {"head": [0, 0, 1]}}', "the box of 'head' has 3 numbers, expected 4"),
    ('{"path": "a.jpg", "boxes": {"head": [0, 0, 1, 1]}, "occluded": "head"}', "'occluded' must be a list"),
    ('{"path": "a.jpg", "boxes": {}, "pid": "seven"}', "ValueError"),
    ('[1, 2]', "TypeError"),
])
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, bad, why):
    path = tmp_path / "parts.jsonl"
    path.write_text(LINE + "\n" + bad + "\n")
    with pytest.raises(PartsFileError) as info:
        read_parts_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: not a parts record (")
    assert why in str(info.value)
    assert isinstance(info.value, DatasetError) and isinstance(info.value, MuvaError)


def test_missing_files_are_data_errors(tmp_path):
    with pytest.raises(PartsFileError, match="ground-truth file .* does not exist"):
        read_parts_jsonl(tmp_path / "none.jsonl")
    with pytest.raises(PartsFileError, match=r"parts.jsonl not found: is .* a domain folder written by `muva synth`\?"):
        read_parts(tmp_path)


def test_grounding_evaluation_reads_with_the_data_reader():
    import muva.grounding.evaluate as ev

    assert ev.read_parts_jsonl is read_parts_jsonl
    assert not hasattr(ev, "GroundTruth")  # one record type: PartsRecord


@pytest.fixture(scope="module")
def domain(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parts") / "bench"
    cfg = SynthConfig(num_domains=1, ids_per_domain=2, test_ids_per_domain=2, images_per_id=2, gallery_per_id=1,
                      distractors_per_domain=1, num_cameras=2, width=32, height=64, occlusion_prob=0.5)
    generate(cfg, out, progress=False)
    return out


def test_generated_file_round_trips_through_the_record(domain):
    path = domain / "domain_0" / "parts.jsonl"
    lines = path.read_text().splitlines()
    records = read_parts_jsonl(path)
    assert len(records) == len(lines) == 2 * 2 + 2 * 2 + 1
    assert [json.dumps(r.to_json()) for r in records] == lines
    by_path = read_parts(domain / "domain_0")
    assert list(by_path) == [r.path for r in records] and by_path[records[0].path] == records[0]
    first = records[0]
    assert first.path.startswith("bounding_box_train/") and (first.width, first.height) == (32, 64)
    assert first.view in ("front", "back", "left", "right") and first.camid in (0, 1) and first.pid >= 1


def _corrupt_line_3(domain_dir: Path) -> Path:
    """Replace line 3 of parts.jsonl by garbage, keeping the line count (the benchmark still looks complete)."""
    path = domain_dir / "parts.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "{oops\n"
    path.write_text("".join(lines))
    return path


def test_montage_reads_with_the_same_reader(tmp_path, domain):
    import shutil

    copy = tmp_path / "bench"
    shutil.copytree(domain, copy)
    assert make_montage(copy, tmp_path / "ok.png").stat().st_size > 500
    bad = _corrupt_line_3(copy / "domain_0")
    with pytest.raises(PartsFileError, match=f"{bad}:3: not a parts record"):
        make_montage(copy, tmp_path / "m.png")


def test_cli_reports_a_corrupt_parts_file_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "400"}  # no wrapped message lines
    out = tmp_path / "bench"
    first = subprocess.run([sys.executable, "-m", "muva", "synth", str(out), *TINY, "-q"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    bad = _corrupt_line_3(out / "domain_0")
    # Same config again: nothing to regenerate, so the montage reads the corrupt file.
    res = subprocess.run([sys.executable, "-m", "muva", "synth", str(out), *TINY, "-q", "--montage", str(tmp_path / "m.png")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert f"error: {bad}:3: not a parts record (JSONDecodeError" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.png").exists()

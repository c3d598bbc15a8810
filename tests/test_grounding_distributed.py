"""``muva ground run`` under torchrun (a shard per rank, merged by rank 0; resumable) and ``--estimate``.

The multi-process tests start real 2-process gloo runs on CPU (``python -m torch.distributed.run``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_grounding_common import make_market
from typer.testing import CliRunner

from muva.cli import app
from muva.grounding.cache import GroundingCache, shard_path
from muva.grounding.distributed import (
    Ranks,
    RankSession,
    ShardReport,
    ShardsNotSharedError,
    fold_shards,
    rank_device,
    ranked_options,
    remove_shards,
    shard_files,
)
from muva.grounding.experts.prior import PriorExpert
from muva.grounding.run import ImageSet, ground_images, resolve_images
from muva.utils.distributed import DeviceError

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250", "PYTHONWARNINGS": "ignore"}

# A plugin expert (docs/extending.md): the prior in batches of 2; with FLAKY_KILL_AFTER=K the
# process of rank 1 SIGKILLs itself once it has written K batches.
FLAKY = '''
import os
import signal

from muva.grounding.experts import register_expert
from muva.grounding.experts.prior import PriorExpert


@register_expert("flaky-prior", summary="the prior; FLAKY_KILL_AFTER=K kills rank 1 after K batches")
class FlakyPrior(PriorExpert):
    name = "flaky-prior"
    batch_size = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = 0

    def entries(self, keys, images):
        after = os.environ.get("FLAKY_KILL_AFTER")
        if after and os.environ.get("RANK") == "1" and self.batches >= int(after):
            os.kill(os.getpid(), signal.SIGKILL)
        self.batches += 1
        return super().entries(keys, images)
'''


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400", **(env or {})})


def _muva(*args, env=None, torchrun: bool = False, cwd=None) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun else []
    cmd = [sys.executable, *launcher, "-m", "muva", *(str(a) for a in args)]
    return subprocess.run(cmd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=240, cwd=cwd)


def _entries(path: Path) -> dict[str, str]:
    """key → the entry's JSON; the cache holds each key once."""
    with GroundingCache.open(path, readonly=True) as cache:
        rows = [(e.path, e.to_json(), e.status) for e in cache]
        assert len(cache) == len({k for k, _, _ in rows}) == len(rows)
    return {k: f"{status}:{js}" for k, js, status in rows}


def _count(path: Path) -> int:
    with GroundingCache.open(path, readonly=True) as cache:
        return len(cache)


def _no_muva_traceback(stderr: str) -> None:
    frames = [line for line in stderr.splitlines() if line.strip().startswith('File "') and "/muva/" in line.split('"')[1]]
    assert not frames, stderr[-3000:]


@pytest.fixture()
def market(tmp_path):
    return make_market(tmp_path / "mk", n_train=15, n_query=4, n_gallery=4, corrupt=1)  # 24 images, one unreadable


# ---------------------------------------------------------------------- torchrun, 2 processes (gloo)
def test_two_processes_write_the_cache_of_one(market, tmp_path):
    one = tmp_path / "one.sqlite"
    res = invoke("ground", "run", market, "-e", "prior", "-o", one, "--no-progress")
    assert res.exit_code == 0, res.output
    out = tmp_path / "two" / "prior.sqlite"
    proc = _muva("ground", "run", market, "-e", "prior", "-o", out, "-b", "3", "--no-progress", torchrun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = _entries(one)
    assert len(want) == 24 and sum(v.startswith("unreadable") for v in want.values()) == 1
    assert _entries(out) == want  # same keys, same entries
    assert sorted(p.name for p in out.parent.iterdir()) == ["prior.sqlite"]  # the shard files are gone
    assert proc.stdout.count("image(s) in scope") == 1, proc.stdout  # rank 0 alone reports
    assert "24 image(s) in scope, 0 already cached, 24 processed (1 unreadable) by 2 processes" in proc.stdout
    assert "merged the 2 shard files" in proc.stdout


def test_a_killed_process_resumes_where_it_stopped(market, tmp_path):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY)
    one = tmp_path / "one.sqlite"
    proc = _muva("--import", plugin, "ground", "run", market, "-e", "flaky-prior", "-o", one, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "flaky.sqlite"
    command = ("--import", plugin, "ground", "run", market, "-e", "flaky-prior", "-o", out, "--no-progress")
    proc = _muva(*command, env={"FLAKY_KILL_AFTER": "2"}, torchrun=True)
    assert proc.returncode != 0
    _no_muva_traceback(proc.stderr)
    assert "run the same command again to resume" in re.sub(r"\s+", " ", proc.stderr), proc.stderr[-3000:]
    s0, s1 = shard_files(out, 2)
    assert not out.exists()  # nothing merged
    assert _count(s1) == 4  # rank 1 wrote its 2 batches of 2, then died
    before = _count(s0) + _count(s1)
    assert before < 24

    proc = _muva(*command, torchrun=True)  # the same command, without the killer
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"24 image\(s\) in scope, (\d+) already cached, (\d+) processed", proc.stdout)
    assert m, proc.stdout
    assert int(m.group(1)) == before and int(m.group(2)) == 24 - before  # resumed: only what was missing
    assert _entries(out) == _entries(one)
    assert not s0.exists() and not s1.exists()


# ---------------------------------------------------------------------- merge, shard files, devices
def _shards(market: Path, tmp_path: Path, world: int = 2, parts=("head", "legs")) -> tuple[Path, list[Path], ImageSet]:
    images = resolve_images(str(market))
    out = tmp_path / "merged.sqlite"
    for i in range(world):
        ground_images(images, PriorExpert(parts=parts), shard_path(out, (i, world)), shard=(i, world), progress=False)
    return out, shard_files(out, world), images


def test_fold_is_a_single_process_run_and_can_be_finished_after_a_crash(market, tmp_path):
    images = resolve_images(str(market))
    one = tmp_path / "one.sqlite"
    ground_images(images, PriorExpert(parts=("head", "legs")), one, progress=False)
    out, shards, _ = _shards(market, tmp_path)
    fold_shards(out, shards[:1])  # a merge killed after the first shard ...
    counts = fold_shards(out, shards)  # ... is finished by folding again
    assert counts["total"] == 24 and counts["replaced"] == _count(shards[0])
    assert _entries(out) == _entries(one)
    with GroundingCache.open(out, readonly=True) as a, GroundingCache.open(one, readonly=True) as b:
        assert a.meta == b.meta  # no shard marker in the merged cache
    remove_shards(shards)
    assert not any(p.exists() for p in shards)
    remove_shards(shards)  # already gone: fine


def test_fold_widens_a_cache_with_fewer_parts(market, tmp_path):
    images = resolve_images(str(market))
    out, shards, _ = _shards(market, tmp_path, parts=("head", "legs"))
    ground_images(images, PriorExpert(parts=("head",)), out, progress=False)  # the cache held one part
    counts = fold_shards(out, shards)
    assert counts["widened_from"] == ["head"] and counts["replaced"] == 24
    with GroundingCache.open(out, readonly=True) as cache:
        assert cache.parts() == ["head", "legs"] and all(set(e.boxes) == {"head", "legs"} for e in cache if e.status == "ok")


def _two_ranks(images: ImageSet, out: Path, monkeypatch, **kwargs) -> tuple[list, list]:
    """Both ranks of a 2-process run, one after the other in this process (the gather handed over by hand)."""
    sessions = [RankSession(Ranks(r, 2, 0)) for r in range(2)]
    summaries = [s.ground(images, PriorExpert(parts=("head", "legs")), out, progress=False, **kwargs) for s in sessions]
    monkeypatch.setattr("muva.grounding.distributed.all_gather_object",
                        lambda obj, group=None: [([rep for *_, rep in s._reports], [f"a note of rank {s.ranks.rank}"]) for s in sessions])
    return summaries, sessions[0].finish()


def test_ranks_leave_out_what_the_merged_cache_holds(market, tmp_path, monkeypatch):
    images = resolve_images(str(market))
    one = tmp_path / "one.sqlite"
    ground_images(images, PriorExpert(parts=("head", "legs")), one, progress=False)
    out = tmp_path / "out.sqlite"
    summaries, (job,) = _two_ranks(images, out, monkeypatch, limit=5)  # --limit 5 in all: 3 + 2
    assert [s.processed for s in summaries] == [3, 2] and job.summary.processed == 5 and _count(out) == 5
    summaries, (job,) = _two_ranks(images, out, monkeypatch)
    assert job.summary.already_done == 5 and job.summary.processed == 19 and job.merged["replaced"] == 0
    assert _entries(out) == _entries(one)
    summaries, (job,) = _two_ranks(images, out, monkeypatch)  # all cached, shards gone: nothing to do
    assert job.summary.processed == 0 and job.summary.already_done == 24
    assert not any(p.exists() for p in shard_files(out, 2))
    assert _entries(out) == _entries(one)


def test_rank_zero_says_when_it_cannot_see_a_shard(market, tmp_path, monkeypatch):
    out, shards, images = _shards(market, tmp_path)
    reports = [ShardReport(i, f"node{i}", str(p), _count(p), {}) for i, p in enumerate(shards)]
    reports[1] = dataclasses.replace(reports[1], path=str(tmp_path / "elsewhere" / shards[1].name))  # on another node's disk
    session = RankSession(Ranks(0, 2, 0))
    session._reports = [(images, out, ("head", "legs"), reports[0])]
    monkeypatch.setattr("muva.grounding.distributed.all_gather_object", lambda obj, group=None: [([reports[0]], []), ([reports[1]], [])])
    with pytest.raises(ShardsNotSharedError) as err:
        session.finish()
    text = str(err.value)
    assert "filesystem all nodes share" in text and "node1" in text and "missing here" in text
    assert f"muva ground merge {out} {shards[0]} {tmp_path / 'elsewhere' / shards[1].name}" in text
    assert not out.exists() and shards[0].exists()  # nothing merged, nothing deleted
    reports[1] = dataclasses.replace(reports[1], path=str(shards[1]), entries=reports[1].entries + 3)  # same name, other file
    with pytest.raises(ShardsNotSharedError, match="another file of the same name"):
        session.finish()


def test_each_rank_takes_its_own_gpu(monkeypatch):
    import torch

    ranks = Ranks(rank=3, world_size=4, local_rank=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device("auto", ranks) == "cpu" and rank_device("cpu", ranks) == "cpu"
    with pytest.raises(DeviceError, match="CUDA is not available"):
        rank_device("cuda", ranks)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto", ranks) == rank_device("cuda", ranks) == "cuda:1"
    with pytest.raises(DeviceError, match="at most 2 process"):
        rank_device("auto", Ranks(2, 4, 2))
    with pytest.raises(DeviceError, match="one GPU"):
        rank_device("cuda:0", ranks)

    @dataclasses.dataclass(frozen=True)
    class Opts:
        device: str = "auto"
        size: str = "7b"

    assert ranked_options(Opts(), ranks) == Opts("cuda:1")
    assert ranked_options(PriorExpert.Options(), ranks) == PriorExpert.Options()  # no device: unchanged


def test_torchrun_and_hand_shards_or_estimate_exclude_each_other(market, tmp_path):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    res = invoke("ground", "run", market, "-e", "prior", "-o", tmp_path / "c.sqlite", "--shard", "0/2", env=env)
    assert res.exit_code == 2 and "leave --shard out" in res.output
    res = invoke("ground", "run", market, "-e", "prior", "-o", tmp_path / "c.sqlite", "--estimate", env=env)
    assert res.exit_code == 2 and "without torchrun" in res.output
    assert not (tmp_path / "c.sqlite").exists()


def test_nproc_per_node_starts_the_same_command(market, tmp_path, monkeypatch):
    import muva.utils.distributed as ud

    calls = []
    monkeypatch.setattr(ud, "launch", lambda n, args: calls.append((n, args)) or 0)
    out = tmp_path / "c.sqlite"
    res = invoke("ground", "run", market, "-e", "prior", "-o", out, "-X", "x=1", "--nproc-per-node", "2")
    assert res.exit_code == 2 and "unknown option 'x'" in res.output and not calls  # checked before any process starts
    res = invoke("ground", "run", market, "-e", "prior", "-o", out, "--no-progress", "-b", "4", "--nproc-per-node", "2", "--keep-shards")
    assert res.exit_code == 0, res.output
    (n, args), = calls
    assert n == 2 and args[:4] == ["-m", "muva", "ground", "run"] and "--nproc-per-node" not in args
    assert args[4:] == ["--expert", "prior", "--out", str(out), "--batch-size", "4", "--keep-shards", "--no-progress", str(market)]
    assert not out.exists()
    res = invoke(*args[2:])  # what each process runs (here: one process)
    assert res.exit_code == 0 and _count(out) == 24, res.output


# ---------------------------------------------------------------------- --estimate
def test_estimate_projects_the_whole_run_and_writes_nothing(market, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "caches" / "prior.sqlite"
    res = invoke("ground", "run", market, "-e", "prior", "-o", out, "--estimate", "--estimate-images", "4", "-b", "2")
    assert res.exit_code == 0, res.output
    text = re.sub(r"\s+", " ", res.output)
    assert re.search(r"rate: [\d.]+ crops/s, measured on 4 image\(s\)", text), text
    assert "warm-up, not in the rate" in text and "projected:" in text and "for 24 image(s) left" in text
    assert not out.exists() and not out.parent.exists()  # the real cache is not even created
    assert list(scratch.iterdir()) == []  # the temporary cache is gone

    res = invoke("ground", "run", market, "-e", "prior", "-o", out, "--limit", "5", "--no-progress")
    assert res.exit_code == 0 and _count(out) == 5
    before = out.read_bytes()
    res = invoke("ground", "run", market, "-e", "prior", "-o", out, "--estimate")
    assert res.exit_code == 0, res.output
    assert "for 19 image(s) left" in re.sub(r"\s+", " ", res.output)  # only what the cache lacks
    assert out.read_bytes() == before

    invoke("ground", "run", market, "-e", "prior", "-o", out, "--no-progress")
    res = invoke("ground", "run", market, "-e", "prior", "-o", out, "--estimate", "--nproc-per-node", "4")
    assert res.exit_code == 0 and "nothing left to ground" in res.output

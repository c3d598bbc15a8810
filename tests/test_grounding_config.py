"""Parts are stated once per run, and experts have a ``grounding:`` config section.

* ``muva ground run`` writes every part the expert can ground by default; a cache only gains
  parts, so the command a training run prints for a cache lacking a part works as printed;
* ``muva ground run -c CONFIG`` grounds the config's sources into the caches its training reads,
  with the section's expert and options;
* configs (and checkpoints) written with the older ``data.grounding*`` keys still load.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_grounding_common import make_market

from muva.config import ConfigError, to_dict
from muva.data.parts import DEFAULT_PARTS, PART_NAMES
from muva.engine.config import load_experiment
from muva.engine.data import build_pseudo_masks, build_sources, ground_command
from muva.engine.runfolder import resume_mismatch
from muva.grounding.cache import GroundingCache, GroundingCacheError
from muva.grounding.experts import build_expert
from muva.grounding.run import ImageSet, ground_images, parts_to_ground

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
FOUR = ["head", "upper_body", "legs", "shoes"]


def muva(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.fixture()
def market(tmp_path):
    return make_market(tmp_path / "mk", n_train=6, n_query=2, n_gallery=2)


def _parts_of(cache) -> list[str]:
    with GroundingCache.open(cache, readonly=True) as c:
        return c.parts()


def test_default_run_writes_every_known_part(market, tmp_path):
    out = tmp_path / "c.sqlite"
    res = muva("ground", "run", market, "-e", "prior", "-o", out, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _parts_of(out) == list(PART_NAMES)
    assert f"(parts: {', '.join(PART_NAMES)})" in res.stdout
    with GroundingCache.open(out, readonly=True) as c:
        assert all(set(e.boxes) == set(PART_NAMES) for e in c if e.status == "ok")


def test_imported_masks_default_to_the_files_parts():
    from muva.grounding.experts import EXPERTS

    assert EXPERTS.get("import").default_parts(None) == DEFAULT_PARTS
    assert EXPERTS.get("prior").default_parts(None) == PART_NAMES


def _three_part_cache(market: Path, out: Path) -> None:
    res = muva("ground", "run", market, "-e", "prior", "-o", out, "--parts", "head,upper_body,legs", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert _parts_of(out) == ["head", "upper_body", "legs"]


def test_the_printed_command_adds_a_missing_part(market, tmp_path):
    """A 3-part cache, a 4-part model: the error names a command; running it makes training possible."""
    cache = tmp_path / "c.sqlite"
    _three_part_cache(market, cache)
    cfg = load_experiment(TINY, [f"data.sources=[{market}]", f"grounding.caches={{{market}: {cache}}}",
                                 f"model.parts=[{','.join(FOUR)}]", "grounding.expert=prior"])
    train = build_sources(cfg.data, check_images=False)
    with pytest.raises(GroundingCacheError) as err:
        build_pseudo_masks(train, cfg.data, cfg.grounding, cfg.model.parts, cfg.model.input_size, 16)
    text = str(err.value)
    assert "holds parts head, upper_body, legs, the model needs shoes too" in text
    line = text.splitlines()[-1].strip()
    assert line == ground_command(str(market), cfg.data, cfg.grounding, cache, FOUR)
    assert "--parts head,upper_body,legs,shoes" in line and f"--out {cache}" in line
    res = muva(*line.split()[1:], "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "held parts head, upper_body, legs; it now holds head, upper_body, legs, shoes" in res.stdout
    assert f"{len(train.records)} processed" in res.stdout  # every cached training image grounded again (--splits train)
    assert _parts_of(cache) == FOUR
    masks = build_pseudo_masks(train, cfg.data, cfg.grounding, cfg.model.parts, cfg.model.input_size, 16)
    assert len(masks) == len(train.records) and next(iter(masks.values())).shape[0] == 4


def test_a_subset_request_keeps_the_caches_parts(market, tmp_path):
    cache = tmp_path / "c.sqlite"
    assert muva("ground", "run", market, "-e", "prior", "-o", cache, "--no-progress").returncode == 0
    res = muva("ground", "run", market, "-e", "prior", "-o", cache, "--parts", "head", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "0 processed" in res.stdout and _parts_of(cache) == list(PART_NAMES)
    assert parts_to_ground(["legs"], cache) == PART_NAMES
    assert parts_to_ground(["shoes", "head"], tmp_path / "absent.sqlite") == ("head", "shoes")


def test_an_interrupted_widening_resumes(market, tmp_path):
    """Entries written before the widening lack the new part and are grounded on the next run."""
    cache = tmp_path / "c.sqlite"
    _three_part_cache(market, cache)
    root = market.resolve()
    paths = sorted(str(p.resolve()) for p in (market / "bounding_box_train").glob("*.jpg"))
    images = ImageSet("mk", root, paths)
    first = ground_images(images, build_expert("prior", parts=FOUR), cache, limit=2, progress=False)
    assert first.widened_from == ["head", "upper_body", "legs"] and first.processed == 2
    second = ground_images(images, build_expert("prior", parts=FOUR), cache, progress=False)
    assert second.widened_from is None and second.already_done == 2 and second.processed == len(paths) - 2
    with GroundingCache.open(cache, readonly=True) as c:
        assert c.keys_covering(FOUR) >= {c.key(p) for p in paths}


def test_a_narrower_expert_cannot_shrink_a_cache(market, tmp_path):
    cache = tmp_path / "c.sqlite"
    assert muva("ground", "run", market, "-e", "prior", "-o", cache, "--no-progress").returncode == 0
    paths = [str(p.resolve()) for p in (market / "bounding_box_train").glob("*.jpg")]
    with pytest.raises(GroundingCacheError, match="ground with --parts head,upper_body,legs,shoes"):
        ground_images(ImageSet("mk", market.resolve(), paths), build_expert("prior", parts=["head"]), cache, progress=False)


def test_ground_run_from_a_training_config(market, tmp_path):
    cache = tmp_path / "from_cfg.sqlite"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"_base_: {TINY}\ndata:\n  sources: [{market}]\ngrounding:\n  expert: prior\n"
                   f"  caches: {{{market}: {cache}}}\nmodel:\n  parts: [head, legs]\n")
    res = muva("ground", "run", "-c", cfg, "--splits", "train", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert f"→ {cache}" in res.stdout
    with GroundingCache.open(cache, readonly=True) as c:
        assert c.meta["expert"] == "prior" and c.parts() == list(PART_NAMES)
    # the config's model.parts must be grounded: an explicit --parts without one of them is refused
    res = muva("ground", "run", "-c", cfg, "--parts", "head", "--no-progress")
    assert res.returncode == 2 and "legs would not be grounded" in res.stderr and "Traceback" not in res.stderr


def test_config_options_are_the_experts_and_checked(market, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"_base_: {TINY}\ndata:\n  sources: [{market}]\ngrounding:\n  expert: pose\n  options: {{threadz: 2}}\n")
    res = muva("ground", "run", "-c", cfg, "--no-progress")
    assert res.returncode == 2 and "threadz" in res.stderr and "threads" in res.stderr and "Traceback" not in res.stderr
    cfg.write_text(f"_base_: {TINY}\ngrounding:\n  expert: prior\n")
    res = muva("ground", "run", "-c", cfg, "--no-progress")
    assert res.returncode == 2 and "names no data.sources" in res.stderr


def test_ground_command_carries_the_sections_options(tmp_path):
    cfg = load_experiment(TINY, ["grounding.expert=pose", "grounding.options={threads: 2}", "data.root=/data"])
    line = ground_command("market1501", cfg.data, cfg.grounding, tmp_path / "new.sqlite", FOUR)
    assert line == f"muva ground run market1501 --expert pose --out {tmp_path / 'new.sqlite'} --splits train --root /data -X threads=2"


def test_old_grounding_keys_still_load(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  grounding: {a: a.sqlite}\n  grounding_expert: prior\n  grounding_missing: skip\n"
                   "  min_fraction: 0.7\n  grounding_dir: caches\n")
    cfg = load_experiment(old, ["data.grounding.b=b.sqlite"])
    g = cfg.grounding
    assert (g.expert, g.missing, g.min_fraction, g.dir) == ("prior", "skip", 0.7, "caches")
    assert g.caches == {"a": "a.sqlite", "b": "b.sqlite"}
    assert "grounding_expert" not in to_dict(cfg)["data"]
    # a checkpoint's config written with the old names matches the same config under the new ones
    saved = to_dict(cfg)
    saved["data"].update({"grounding": saved["grounding"].pop("caches"), "grounding_expert": saved["grounding"].pop("expert")})
    assert resume_mismatch(saved, to_dict(cfg)) == []
    both = tmp_path / "both.yaml"
    both.write_text("data:\n  grounding_expert: prior\ngrounding:\n  expert: pose\n")
    with pytest.raises(ConfigError, match="sets both 'data.grounding_expert' .* and 'grounding.expert'"):
        load_experiment(both)


def test_demo_grounds_the_models_parts(tmp_path):
    from muva.viz.demo import _ground, demo_configs

    market = make_market(tmp_path / "d0", n_train=4, n_query=1, n_gallery=1)
    muva_cfg, base_cfg = demo_configs(tmp_path / "demo", None, [f"model.parts=[{','.join(FOUR)}]"], [str(market)],
                                      str(market), "prior")
    cache = Path(muva_cfg.grounding.caches[str(market)])
    assert cache == tmp_path / "demo" / "grounding" / f"{market.name}_prior.sqlite"
    assert base_cfg.grounding.expert == "prior" and base_cfg.model.parts == []

    class Quiet:
        def print(self, *a, **k):
            pass

    _ground(market, cache, "prior", muva_cfg.model.parts, muva_cfg.grounding.options, Quiet())
    assert _parts_of(cache) == FOUR

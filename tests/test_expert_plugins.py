"""Grounding experts as plugins: typed options per expert, ``-X KEY=VALUE``, runtime registration."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
from test_grounding_common import make_market
from typer.testing import CliRunner

import muva.grounding.experts as experts_pkg
from muva.cli import app
from muva.grounding.boxes import PartBox, prior_boxes
from muva.grounding.experts import (
    EXPERTS, ExpertOptionError, build_expert, expert_options, option, option_infos, options_dict, register_expert,
)
from muva.grounding.experts.base import GroundingExpert

BUILTIN = EXPERTS.names()


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def muva(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "muva", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def _other_value(tp, default):
    """A text value of type ``tp`` that differs from ``default``, and the typed value it must become."""
    origin = get_origin(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
        origin = get_origin(tp)
    if origin is Literal:
        choice = next(c for c in reversed(get_args(tp)) if c != default)
        return str(choice), choice
    if origin is tuple:
        return "[4,2]", (4, 2)
    if tp is bool:
        return str(not default).lower(), not default
    if tp is int:
        return "3", 3
    if tp is float:
        return "0.75", 0.75
    if tp is Path:
        return "/somewhere/file.bin", Path("/somewhere/file.bin")
    return "some-text", "some-text"


# ----------------------------------------------------------------------------- every registered expert
def test_builtin_experts_are_found():
    assert BUILTIN == ["gdino", "import", "mllm", "pose", "prior"]
    assert EXPERTS.canonical("blazepose") == "pose" and EXPERTS.canonical("authors") == "import"


@pytest.mark.parametrize("name", BUILTIN)
def test_options_are_a_dataclass_with_defaults_and_help(name):
    cls = EXPERTS.get(name)
    assert dataclasses.is_dataclass(cls.Options)
    params = inspect.signature(cls.__init__).parameters
    for f in dataclasses.fields(cls.Options):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        assert len(f.metadata["help"]) > 10, f.name
        assert f.name in params or any(p.kind is p.VAR_KEYWORD for p in params.values()), f.name
    # the dry build: no value given → the declared defaults
    assert expert_options(name) == cls.Options()
    assert [i.name for i in option_infos(name)] == [f.name for f in dataclasses.fields(cls.Options)]


@pytest.mark.parametrize("name", BUILTIN)
def test_unknown_option_is_a_clear_error(name):
    with pytest.raises(ExpertOptionError, match=f"unknown option 'no_such_option' of the {name} expert") as info:
        expert_options(name, ["no_such_option=1"])
    for i in option_infos(name):
        assert f"{i.name} ({i.type}, default {i.default}): {i.help}" in str(info.value)
    if not option_infos(name):
        assert "takes no options" in str(info.value)
    with pytest.raises(ExpertOptionError, match="unknown option 'no_such_option'"):
        build_expert(name, no_such_option=1)


@pytest.mark.parametrize("name", BUILTIN)
def test_dash_x_sets_each_option(name, tmp_path, monkeypatch):
    """``-X KEY=VALUE`` reaches the expert's constructor as the typed value (the build is captured)."""
    cls = EXPERTS.get(name)
    hints = typing.get_type_hints(cls.Options, globalns=vars(sys.modules[cls.Options.__module__]))
    items, want = [], {}
    for f in dataclasses.fields(cls.Options):
        text, value = _other_value(hints[f.name], f.default)
        items += ["-X", f"{f.name}={text}"]
        want[f.name] = value
    assert expert_options(name, items[1::2]) == cls.Options(**want)
    seen = {}
    real_build = experts_pkg.build_expert

    def capture(expert, **kwargs):
        seen.update(kwargs, expert=expert)
        return real_build("prior", parts=kwargs["parts"])

    monkeypatch.setattr(experts_pkg, "build_expert", capture)
    market = make_market(tmp_path / "mk", n_train=2, n_query=0, n_gallery=0)
    res = invoke("ground", "run", market, "-e", name, *items, "--out", tmp_path / "c.sqlite", "--no-progress")
    assert res.exit_code == 0, res.output
    assert seen.pop("expert") == name and seen.pop("parts") == cls.default_parts(None)  # every part it can ground
    assert seen == want


def test_dash_x_builds_the_import_expert(tmp_path):
    import pickle

    import numpy as np

    from muva.grounding.cache import GroundingCache

    market = make_market(tmp_path / "mk", n_train=2, n_query=0, n_gallery=0)
    names = sorted(p.name for p in (market / "bounding_box_train").iterdir())
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump({n: np.zeros((3, 32)) for n in names}, fh)
    out = tmp_path / "imp.sqlite"
    res = invoke("ground", "run", market, "-e", "import", "-X", f"masks={tmp_path / 'm.pkl'}", "-X", "grid=[8,4]",
                 "--splits", "train", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    with GroundingCache.open(out, readonly=True) as c:
        assert c.meta["settings"]["grid"] == [8, 4] and len(c) == 2


def test_deprecated_flags_map_onto_the_options(tmp_path, monkeypatch):
    seen = {}
    real_build = experts_pkg.build_expert

    def capture(expert, **kwargs):
        seen.update(kwargs)
        return real_build("prior")

    monkeypatch.setattr(experts_pkg, "build_expert", capture)
    market = make_market(tmp_path / "mk", n_train=1, n_query=0, n_gallery=0)
    res = invoke("ground", market, "-e", "mllm", "--model", "tiny-random", "--size", "3b", "--prompt", "muva",
                 "--answer-format", "cogvlm", "--device", "cpu", "-X", "device=cuda", "--out", tmp_path / "a.sqlite", "--no-progress")
    assert res.exit_code == 0, res.output
    assert (seen["model"], seen["size"], seen["prompt"], seen["answer_format"]) == ("tiny-random", "3b", "muva", "cogvlm")
    assert seen["device"] == "cuda"  # -X wins over the old flag
    res = invoke("ground", market, "-e", "import", "--masks", tmp_path / "m.pkl", "--grid", "8x4", "--out", tmp_path / "b.sqlite", "--no-progress")
    assert res.exit_code == 0, res.output
    assert seen["masks"] == tmp_path / "m.pkl" and seen["grid"] == (8, 4)
    res = invoke("ground", market, "-e", "pose", "--pose-model", tmp_path / "p.tflite", "--threads", "2", "--out", tmp_path / "c.sqlite", "--no-progress")
    assert res.exit_code == 0, res.output
    assert seen["model_path"] == tmp_path / "p.tflite" and seen["threads"] == 2


def test_mllm_offers_only_formats_it_can_write():
    from muva.grounding.experts.mllm import ANSWER_FORMATS, MLLMOptions
    from muva.grounding.parsers import FORMATS

    assert "gdino" in FORMATS and "gdino" not in ANSWER_FORMATS  # the parser stays for imported answers
    assert set(ANSWER_FORMATS) <= set(FORMATS) and ANSWER_FORMATS == ("qwen2.5", "rel1000", "cogvlm", "florence2")
    hint = typing.get_type_hints(MLLMOptions)["answer_format"]
    assert get_args(hint) == ("auto", *ANSWER_FORMATS)
    with pytest.raises(ExpertOptionError, match="'gdino' is not one of 'auto', 'qwen2.5'"):
        build_expert("mllm", answer_format="gdino")


def test_listing_options_imports_no_model_package():
    code = ("import sys, muva.grounding.experts as e; rows = [i for n in e.EXPERTS for i in e.option_infos(n)]; "
            "print(len(rows), sorted(m for m in ('torch', 'transformers', 'ai_edge_litert', 'mediapipe') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split(None, 1) == [str(sum(len(option_infos(n)) for n in BUILTIN)), "[]\n"]


# ----------------------------------------------------------------------------- bad input on the command line
def test_cli_option_errors_are_one_line(tmp_path):
    market = make_market(tmp_path / "mk", n_train=1, n_query=0, n_gallery=0)
    res = muva("ground", "run", market, "-e", "pose", "-X", "thread=2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "unknown option 'thread' of the pose expert. Did you mean 'threads'?" in res.stderr
    assert "threads (int or none, default none): LiteRT CPU threads" in res.stderr
    res = muva("ground", "run", market, "-e", "pose", "--model", "tiny-random")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--model is an option of the gdino / mllm expert, not of pose" in res.stderr
    res = muva("ground", "run", market, "-e", "mllm", "-X", "answer_format=gdino")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "'gdino' is not one of" in res.stderr
    res = muva("ground", "experts", "mllm")
    assert res.returncode == 0 and "answer_format" in res.stdout and "gdino" not in res.stdout


# ----------------------------------------------------------------------------- a plugin defined here
@dataclasses.dataclass
class ShiftOptions:
    shift: float = option(0.0, "move every prior box down by this share of the image height")
    tag: str = option("toy", "a word recorded in the cache's settings")


class ShiftExpert(GroundingExpert):
    """The prior's boxes moved down (a toy plugin)."""

    Options = ShiftOptions

    def __init__(self, parts=("head", "upper_body", "legs"), shift: float = 0.0, tag: str = "toy", rules=None, fallback=None):
        super().__init__(parts, rules, fallback)
        self.shift, self.tag = shift, tag

    def describe(self) -> dict:
        return {**super().describe(), "shift": self.shift, "tag": self.tag}

    def ground(self, images):
        out = []
        for im in images:
            w, h = im.size
            d = self.shift * h
            out.append({p: PartBox((b.box[0], b.box[1] + d, b.box[2], b.box[3] + d), 1.0, self.name, None)
                        for p, b in prior_boxes(w, h, self.parts).items()})
        return out


@pytest.fixture()
def toy():
    register_expert("toy-shift", aliases=("shifted",), summary="the prior moved down")(ShiftExpert)
    yield ShiftExpert
    EXPERTS.remove("toy-shift")
    assert "toy-shift" not in EXPERTS


def test_runtime_plugin_through_build_expert(toy):
    assert "toy-shift" in EXPERTS.names() and EXPERTS.canonical("shifted") == "toy-shift"
    ex = build_expert("shifted", shift="0.25", parts=("head",))
    assert isinstance(ex, ShiftExpert) and ex.name == "toy-shift" and ex.shift == 0.25 and ex.tag == "toy"
    assert options_dict(expert_options("toy-shift", ["tag=x"])) == {"shift": 0.0, "tag": "x"}
    with pytest.raises(ExpertOptionError, match="Did you mean 'shift'"):
        build_expert("toy-shift", shfit=1)

    class Bad(GroundingExpert):
        @dataclasses.dataclass
        class Options:
            size: int = 3  # no help

    with pytest.raises(TypeError, match="option 'size' has no help"):
        register_expert("toy-bad")(Bad)
    assert "toy-bad" not in EXPERTS


def test_runtime_plugin_through_the_cli(toy, tmp_path):
    from muva.grounding.cache import GroundingCache

    market = make_market(tmp_path / "mk", n_train=2, n_query=0, n_gallery=0)
    out = tmp_path / "toy.sqlite"
    res = invoke("ground", "run", market, "-e", "toy-shift", "-X", "shift=0.1", "-X", "tag=hello", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    with GroundingCache.open(out, readonly=True) as c:
        assert c.meta["expert"] == "toy-shift" and c.meta["settings"]["shift"] == 0.1 and c.meta["settings"]["tag"] == "hello"
        e = next(iter(c))
        assert e.boxes["head"].source == "toy-shift"
        assert e.boxes["head"].box[1] == pytest.approx(prior_boxes(e.width, e.height, ("head",))["head"].box[1] + 0.1 * e.height)
    res = invoke("ground", "experts", "toy-shift")
    assert res.exit_code == 0 and "move every prior box down" in res.output and "shifted" in res.output


def test_the_documented_example_expert_works():
    """The 'Adding an expert' example of docs/grounding.md, run as a module of its own."""
    import re
    import types

    from test_grounding_common import person_image

    doc = (Path(__file__).resolve().parents[1] / "docs" / "grounding.md").read_text()
    section = doc.split("### Adding an expert", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("muva_doc_example_expert")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "grounding.md", "exec"), module.__dict__)
        assert [i.name for i in option_infos("shifted")] == ["shift"]
        ex = build_expert("shift", shift="0.1", parts=("legs",))
        box = ex.ground([person_image(64, 128)])[0]["legs"]
        prior = prior_boxes(64, 128, ("legs",))["legs"]
        assert box.source == "shifted" and box.box[1] == pytest.approx(min(128, prior.box[1] + 12.8))
    finally:
        EXPERTS.remove("shifted")
        del sys.modules[module.__name__]


def test_docs_list_every_option():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "grounding.md").read_text()
    section = doc.split("## Expert options", 1)[1].split("### Adding an expert", 1)[0]
    for name in BUILTIN:
        for i in option_infos(name):
            typ = i.type.replace("|", " \\| ")
            assert f"| `{i.name}` | {typ} | `{i.default}` | {i.help} |" in section, (name, i.name)
        if not option_infos(name):
            assert f"**{name}** takes no options." in section


def test_a_broken_expert_file_does_not_hide_the_others(tmp_path, monkeypatch):
    from muva.grounding.experts.spec import ExpertRegistry
    from muva.registry import RegistryError

    pkg = tmp_path / "toy_expert_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("X = 1\n")
    (pkg / "bad.py").write_text("import no_such_module_for_muva_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = ExpertRegistry("toy expert", "toy_expert_pkg")
    reg.add("ok", object)
    assert reg.names() == ["ok"] and list(reg.broken) == ["toy_expert_pkg.bad"]
    with pytest.raises(RegistryError, match=r"failed to import: toy_expert_pkg\.bad \(ModuleNotFoundError"):
        reg.get("nope")
    for m in ("toy_expert_pkg", "toy_expert_pkg.good"):
        sys.modules.pop(m, None)

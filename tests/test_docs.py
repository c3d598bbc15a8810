"""The guides agree with the program.

* Every ``muva ...`` command line in a code block of README.md or docs/*.md names an
  existing sub-command and only options that command has (checked against the typer
  app itself), every ``key.sub=value`` override of ``train`` / ``eval`` / ``demo`` /
  ``doctor`` / ``protocol run`` / ``synth`` / ``model info`` is a key of that command's
  config dataclass, and every ``-c configs/...`` file exists.
* The guides stand alone: no files outside the repository, no internal words, and
  every relative link points to a file of the repository.
* Code blocks marked with ``<!-- test: run -->`` (or ``<!-- test: run, exit=N -->``) on
  the line before the fence are executed, one command at a time, in a temporary folder
  holding a link to ``configs/``; each command must exit with 0 (or N).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
RUN_MARK = re.compile(r"^<!--\s*test:\s*run(?:\s*,\s*exit\s*=\s*(\d+))?\s*-->$")
OUTPUT_MARK = re.compile(r"^<!--\s*test:\s*output\s*-->$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
FORBIDDEN = ["MUVA.md", "REFERENCE.md", "../shared", "/work/", "the issue", "this machine", "24 GB machine"]
COMMAND_TIMEOUT = 60  # seconds per documented command that the test runs


# ----------------------------------------------------------------------------- parsing the guides
@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list[str]
    run: bool = False
    exit_code: int = 0
    output: bool = False  # marked <!-- test: output -->: text printed by the run block before it

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass
class Command:
    block: Block
    line: int  # 1-based line in the file
    text: str  # the command with continuations joined (heredoc bodies kept for running)
    words: str = ""  # the command line alone (no heredoc body)

    @property
    def where(self) -> str:
        return f"{self.block.path.relative_to(REPO)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a Markdown file, with the ``<!-- test: run -->`` marks before them."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # closing fence
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        before = lines[prev].strip() if prev >= 0 else ""
        mark = RUN_MARK.match(before)
        blocks.append(Block(path, start + 1, lang, body, run=bool(mark), exit_code=int(mark.group(1) or 0) if mark else 0,
                            output=bool(OUTPUT_MARK.match(before))))
    return blocks


def _is_muva_line(text: str) -> bool:
    text = text.strip()
    text = text[2:] if text.startswith("$ ") else text
    return bool(re.match(r"^(time\s+)?(\S*/)?(muva|python3?|torchrun)\s", text)) and "muva" in text


def _balanced(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def block_commands(block: Block) -> list[Command]:
    """The shell commands of a block: continuation lines joined, heredoc bodies attached.

    In ``console`` blocks only lines starting with ``$ `` are commands (the rest is output);
    in blocks without a language only lines that start a muva command count.
    """
    console = block.lang == "console"
    shell = block.lang in SHELL_LANGS
    if not shell and block.lang:
        return []
    out: list[Command] = []
    lines = block.lines
    i = 0
    while i < len(lines):
        raw = lines[i]
        lineno = block.line + 1 + i
        stripped = raw.strip()
        i += 1
        if console:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        elif not shell and not _is_muva_line(stripped):
            continue
        if not stripped or stripped.startswith("#"):
            continue
        text = stripped
        while text.endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            if console and nxt.startswith("$ "):
                break
            text = text[:-1].rstrip() + " " + nxt
            i += 1
        while not _balanced(text) and i < len(lines):  # a quoted string over several lines
            text += "\n" + lines[i]
            i += 1
        cmd = Command(block, lineno, text, words=text)
        m = HEREDOC.search(text)
        if m:
            body = []
            while i < len(lines) and lines[i].strip() != m.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            cmd.text = "\n".join([text, *body, m.group(2)])
        out.append(cmd)
    return out


def all_commands() -> list[Command]:
    return [c for p in DOC_FILES for b in parse_blocks(p) for c in block_commands(b)]


# ----------------------------------------------------------------------------- finding muva invocations
def _segments(words: str) -> list[list[str]]:
    """Shell words of each simple command (split at | && || ; and without redirections)."""
    lex = shlex.shlex(words, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    tokens = list(lex)
    segments: list[list[str]] = [[]]
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok in ("|", "||", "&&", ";", "&", "(", ")"):
            segments.append([])
        elif tok and set(tok) <= set("<>&") and tok not in ("&",):
            if segments[-1] and segments[-1][-1].isdigit():  # 2>&1, 2> file
                segments[-1].pop()
            skip_next = True  # the target of the redirection
        else:
            segments[-1].append(tok)
    return [s for s in segments if s]


def muva_args(words: str) -> list[list[str]]:
    """The argument lists of every muva CLI invocation in a command line."""
    found = []
    for seg in _segments(words):
        while seg and (re.match(r"^[A-Z_][A-Z0-9_]*=", seg[0]) or seg[0] in ("time", "nohup", "exec", "env")):
            seg = seg[1:]
        if not seg:
            continue
        prog = seg[0]
        if prog == "muva" or prog.endswith("/muva"):
            found.append(seg[1:])
        elif Path(prog).name.startswith(("python", "torchrun")):
            for j in range(1, len(seg) - 1):
                if seg[j] == "-m":
                    if seg[j + 1] == "muva":
                        found.append(seg[j + 2:])
                    break
    return found


# ----------------------------------------------------------------------------- the CLI and the configs
def _root_command():
    import muva.cli

    return typer.main.get_command(muva.cli.app)


ROOT = _root_command()


def _config_class(path: tuple[str, ...]):
    if path in (("train",), ("eval",), ("demo",), ("doctor",), ("protocol", "run"), ("sweep", "run")):
        from muva.engine.config import ExperimentConfig

        return ExperimentConfig
    if path == ("synth",):
        from muva.data.synth import SynthConfig

        return SynthConfig
    if path == ("model", "info"):
        from muva.models import ModelConfig

        return ModelConfig
    return None


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_dict_type(tp) -> bool:
    tp = _strip_optional(tp)
    return tp is dict or typing.get_origin(tp) is dict


def config_key_problem(cls, key: str, override: str = "") -> str | None:
    """None when ``key`` can be set on ``cls``: a leaf, a section, or a key inside a dict-typed
    field (``data.dataset_options.msmt17``) that the config loader accepts as ``override``."""
    from muva.config import ConfigError, apply_overrides, config_keys

    leaves = set(config_keys(cls))
    sections = {k.rsplit(".", i)[0] for k in leaves for i in range(1, k.count(".") + 1)}
    if key in leaves or key in sections:
        return None
    node = cls
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            break
        hints = typing.get_type_hints(node)
        if part not in hints:
            break
        tp = _strip_optional(hints[part])
        if _is_dict_type(tp) and depth < len(parts) - 1:  # e.g. grounding.caches.<source>
            try:
                apply_overrides(cls, None, [override or f"{key}=x"])
            except ConfigError as exc:
                return f"{key!r} is refused by the config loader: {exc}"
            return None
        node = tp
    close = sorted(k for k in leaves if k.endswith("." + parts[-1]) or k == parts[-1])
    return f"unknown {cls.__name__} key {key!r}" + (f" (keys ending so: {', '.join(close)})" if close else "")


def _is_group(cmd) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _options(cmd) -> dict:
    """Option name (long, short, --no-x) → parameter of a command (typer's vendored click or click)."""
    opts: dict = {}
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "option":
            for o in (*p.opts, *p.secondary_opts):
                opts[o] = p
    help_names = getattr(cmd, "context_settings", {}).get("help_option_names", ["--help"])
    for h in help_names:
        opts.setdefault(h, None)  # type: ignore[arg-type]
    return opts


def _takes_value(p) -> bool:
    return p is not None and not (getattr(p, "is_flag", False) or getattr(p, "count", False))


def _option(opts: dict, tok: str) -> tuple[bool, int]:
    """``(known, words it consumes after itself)`` for an option word: --x, --x=v, -x, -xVALUE."""
    if tok.startswith("--"):
        name, eq, _ = tok.partition("=")
        return name in opts, 1 if name in opts and _takes_value(opts[name]) and not eq else 0
    if tok in opts:
        return True, 1 if _takes_value(opts[tok]) else 0
    return tok[:2] in opts and _takes_value(opts[tok[:2]]), 0  # -n4: value attached


def _defaults_to_run(group) -> bool:
    """A group whose unknown first word is the start of its ``run`` command (muva ground, muva sweep)."""
    return "run" in group.commands and type(group).__name__ == "_DefaultRunGroup"


def check_invocation(args: list[str], check_keys: bool = True) -> list[str]:
    """Problems of one ``muva ARGS`` invocation (empty when the CLI accepts its shape).

    ``check_keys=False`` leaves out the config-key check (blocks that show a key error on purpose).
    """
    problems: list[str] = []
    cmd, path, positional, i = ROOT, [], [], 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            positional += args[i:]
            break
        if _is_group(cmd) and _defaults_to_run(cmd) and tok not in cmd.commands and tok not in ("--help", "-h"):
            cmd, i = cmd.commands["run"], i - 1  # 'muva ground DATASET' = 'muva ground run DATASET' (also muva sweep)
            path.append("run")
            continue
        if tok.startswith("-") and len(tok) > 1 and not re.match(r"^-\d", tok):
            known, skip = _option(_options(cmd), tok)
            if not known:
                problems.append(f"'muva {' '.join(path)}' has no option {tok.split('=')[0]} "
                                f"(options: {', '.join(sorted(_options(cmd)))})")
            i += skip
        elif _is_group(cmd):
            if tok in cmd.commands:
                cmd = cmd.commands[tok]
            else:
                return [*problems, f"'muva {' '.join([*path, tok])}': no such command (commands of "
                                   f"'muva {' '.join(path)}': {', '.join(sorted(cmd.commands))})"]
            path.append(tok)
        else:
            positional.append(tok)
    cls = _config_class(tuple(path)) if check_keys else None
    for tok in positional if cls is not None else []:
        key, eq, _ = tok.partition("=")
        if eq and re.match(r"^[A-Za-z_][\w.]*$", key) and (problem := config_key_problem(cls, key, tok)):
            problems.append(f"'muva {' '.join(path)}': {problem}")
    for k, tok in enumerate(args):  # -c configs/...: the preset must exist
        value = args[k + 1] if tok in ("-c", "--config") and k + 1 < len(args) else None
        if value and value.startswith("configs/") and not (REPO / value).exists():
            problems.append(f"config file {value} does not exist in the repository")
    return problems


# ----------------------------------------------------------------------------- the checker checks itself
@pytest.mark.parametrize("line, expected", [
    ("muva train -c configs/tiny.yaml stage2.epochs=3 --resume", []),
    ("muva train -c configs/tiny.yaml optim.lr=1e-5", ["unknown ExperimentConfig key 'optim.lr'"]),
    ("muva train -c configs/nope.yaml", ["config file configs/nope.yaml does not exist"]),
    ("muva tran -c configs/tiny.yaml", ["'muva tran': no such command"]),
    ("muva extract M D -o out --flipp", ["has no option --flipp"]),
    ("muva export M -o m.onnx --no-masks --no-check", []),
    ("muva ground runs/x --expert prior --no-progress", []),
    ("muva sweep -c configs/tiny.yaml stage2.epochs=1 --seeds 2 --vary stage2.weights.mask=0,1", []),
    ("muva sweep -c configs/tiny.yaml stage2.epoch=1", ["unknown ExperimentConfig key 'stage2.epoch'"]),
    ("muva sweep report runs/sweep/x --bootstrap 100", []),
    ("muva synth out num_domain=4", ["unknown SynthConfig key 'num_domain'"]),
    ("muva model info -c configs/model/tiny.yaml stride=12", []),
    ("$ time muva demo stage2.epochs=2 2>&1 | tee log.txt", []),
    ("torchrun --nproc_per_node 2 -m muva train -c configs/tiny.yaml 'data.dataset_options={msmt17: {x: 1}}'", []),
    ("python -m muva train -c configs/tiny.yaml data.transforms.pad=10 'grounding.caches={a: b}'", []),
])
def test_checker_catches_drift(line, expected):
    text = line[2:] if line.startswith("$ ") else line
    problems = [p for args in muva_args(text) for p in check_invocation(args)]
    assert len(problems) == len(expected), problems
    for got, want in zip(problems, expected):
        assert want in got


def test_block_parsing(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n\n<!-- test: run, exit=2 -->\n```bash\nmuva train -c configs/tiny.yaml \\\n    a.b=1  # note\n"
                  "python - <<'EOF'\nprint('muva x')\nEOF\n```\n\n```console\n$ muva synth out\nout written\n```\n")
    blocks = parse_blocks(md)
    assert [(b.lang, b.run, b.exit_code) for b in blocks] == [("bash", True, 2), ("console", False, 0)]
    cmds = block_commands(blocks[0])
    assert [c.words for c in cmds] == ["muva train -c configs/tiny.yaml a.b=1  # note", "python - <<'EOF'"]
    assert cmds[1].text == "python - <<'EOF'\nprint('muva x')\nEOF"
    assert muva_args(cmds[0].words) == [["train", "-c", "configs/tiny.yaml", "a.b=1"]]
    assert [c.words for c in block_commands(blocks[1])] == ["muva synth out"]


# ----------------------------------------------------------------------------- the guides
def test_guides_found():
    names = {p.name for p in DOC_FILES}
    assert {"README.md", "training.md", "evaluation.md", "configuration.md"} <= names
    assert len(all_commands()) > 50


def line_problems(where: str, text: str, check_keys: bool = True) -> list[str]:
    """Problems of the muva invocations in one command line (``key=value`` usage placeholders pass)."""
    try:
        invocations = muva_args(text)
    except ValueError as exc:  # unbalanced quotes
        return [f"{where}: cannot split {text!r}: {exc}"]
    problems = []
    for args in invocations:
        args = [a for a in args if not re.match(r"^(key|KEY)(\.sub)*=", a)]
        problems.extend(f"{where}: {p}" for p in check_invocation(args, check_keys))
    return problems


def inline_commands(doc: Path) -> list[tuple[int, str]]:
    """``muva ...`` code spans of the prose (outside code blocks) with their line numbers;
    the square brackets of usage lines (``[--resume]``, ``[key=value ...]``) are dropped."""
    out, in_code = [], False
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            out += [(n, m.group(1).replace("[", " ").replace("]", " ")) for m in re.finditer(r"`(muva [^`]+)`", line)]
    return out


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_documented_commands_match_the_cli(doc):
    problems = []
    for block in parse_blocks(doc):
        # a block documented to fail (exit=N) may show a wrong key on purpose; it is run instead
        check_keys = not (block.run and block.exit_code != 0)
        for cmd in block_commands(block):
            problems += line_problems(cmd.where, cmd.words, check_keys)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_inline_commands_match_the_cli(doc):
    problems = [p for n, text in inline_commands(doc) for p in line_problems(f"{doc.name}:{n}: `{text}`", text)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_guides_stand_alone(doc):
    text = doc.read_text(encoding="utf-8")
    low = text.lower()
    problems = []
    for word in FORBIDDEN:
        start = 0
        while (k := low.find(word.lower(), start)) >= 0:
            line = text.count("\n", 0, k) + 1
            problems.append(f"{doc.name}:{line}: cites {word!r}")
            start = k + 1
    assert not problems, "\n".join(problems)


def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    in_code = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_exist(doc):
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are not links
    problems = []
    for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            problems.append(f"{doc.name}: link to {target} — {dest} does not exist")
            continue
        if REPO not in dest.parents and dest != REPO:
            problems.append(f"{doc.name}: link to {target} leaves the repository")
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{doc.name}: link to {target} — no heading with anchor #{anchor} in {dest.name}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- running the cheap ones
RUN_DOCS = [p for p in DOC_FILES if any(b.run for b in parse_blocks(p))]


def test_some_blocks_are_run():
    assert len(RUN_DOCS) >= 4, [p.name for p in RUN_DOCS]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["MUVA_DATA"] = str(tmp / "data")
    env["MUVA_CACHE"] = str(tmp / "cache")
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "400"  # no wrapped lines in the output compared with the docs
    env.pop("MUVA_POSE_MODEL", None)
    return env


def _flat(text: str) -> str:
    return " ".join(text.split())


def output_problems(expected: Block, printed: str) -> list[str]:
    """Lines of an output block missing from what its run block printed ('…' elides text)."""
    flat = _flat(printed)
    problems = []
    for line in expected.lines:
        pos = 0
        for piece in (p for p in (_flat(x) for x in line.split("…")) if p):
            k = flat.find(piece, pos)
            if k < 0:
                problems.append(f"{expected.where}: documented output {piece!r} was not printed")
                break
            pos = k + len(piece)
    return problems


def test_output_check_compares_text():
    block = Block(REPO / "README.md", 1, "", ["error: unknown key 'x'; did you mean … 'y'?", "done"])
    assert output_problems(block, "error: unknown key\n 'x'; did you mean 'z' or 'y'?\ndone") == []
    assert len(output_problems(block, "error: unknown key 'x'; did you mean 'z'?\ndone")) == 1


@pytest.mark.parametrize("doc", RUN_DOCS, ids=lambda p: p.name)
def test_marked_blocks_run(doc, tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = _env(tmp_path)
    failures = []
    blocks = parse_blocks(doc)
    for n, block in enumerate(blocks):
        if block.output and not (n > 0 and blocks[n - 1].run):
            failures.append(f"{block.where}: an output block must follow a block marked <!-- test: run -->")
        if not block.run:
            continue
        cmds = block_commands(block)
        assert cmds, f"{block.where}: a block marked to run holds no command"
        printed = []
        for cmd in cmds:
            try:
                res = subprocess.run(["bash", "-c", cmd.text], cwd=tmp_path, env=env, capture_output=True, text=True,
                                     timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                failures.append(f"{cmd.where}: {cmd.words!r} ran longer than {COMMAND_TIMEOUT} s")
                continue
            printed.append(res.stdout + "\n" + res.stderr)
            if res.returncode != block.exit_code or "Traceback" in res.stderr:
                failures.append(f"{cmd.where}: {cmd.words!r} exited {res.returncode} (documented: {block.exit_code})\n"
                                f"stdout: {res.stdout[-1500:]}\nstderr: {res.stderr[-1500:]}")
        if n + 1 < len(blocks) and blocks[n + 1].output:
            failures.extend(output_problems(blocks[n + 1], "\n".join(printed)))
    assert not failures, "\n\n".join(failures)

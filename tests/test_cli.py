"""The command line: help texts, light imports, every listed command answers --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from muva.cli import app

HEAVY = ["torch", "torchvision", "open_clip", "transformers", "faiss", "onnx", "onnxruntime", "ai_edge_litert", "numba", "tensorboard", "scipy"]


def _commands(group, prefix=()):
    """Yield the argv of every (sub)command reachable from the click group."""
    import typer.main

    cmd = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, sub in sorted(cmd.commands.items()):
        path = prefix + (name,)
        yield path
        if hasattr(sub, "commands"):
            yield from _commands(sub, path)


def test_root_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "data" in result.output


def test_version():
    from muva import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_every_command_has_working_help():
    paths = list(_commands(app))
    assert ("data", "summary") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


@pytest.mark.parametrize("code", ["import muva", "from muva.cli import app; import typer.main; typer.main.get_command(app)"])
def test_import_and_help_stay_light(code):
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_help_via_console_script_does_not_import_heavy_modules():
    probe = (
        "import sys, json, runpy\n"
        "sys.argv = ['muva', '--help']\n"
        "try:\n    runpy.run_module('muva', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

"""Library modules import muva at the top; lazy imports stay at the command-line and package edges.

A function-level ``import muva...`` in a library module hides a dependency from readers and
from the layers contract's reviewers.  Where one is needed (a real cycle, a module that must
load without torch for ``muva --help``), the line, or the line above it, says why.  Command
modules (``commands.py``), the entry point and package ``__init__`` files are the edges and
may import lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "muva"
EDGES = {"commands.py", "cli.py", "__main__.py", "__init__.py"}
LIBRARY = sorted(p for p in SRC.rglob("*.py") if p.name not in EDGES)


def _lazy_muva_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every ``muva`` import below module level (inside a def or class)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    # imports under a module-level `if TYPE_CHECKING:` / `try:` are module level too
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    lines = path.read_text().splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
            continue
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        if (isinstance(node, ast.ImportFrom) and node.level) or any(n == "muva" or n.startswith("muva.") for n in names):
            out.append((node.lineno, lines[node.lineno - 1].strip()))
    return out


def _explained(path: Path, lineno: int) -> bool:
    lines = path.read_text().splitlines()
    here = lines[lineno - 1]
    above = lines[lineno - 2].strip() if lineno > 1 else ""
    return "#" in here or above.startswith("#")


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(SRC)))
def test_lazy_muva_imports_say_why(path):
    unexplained = [f"{path.relative_to(SRC)}:{n}: {text}" for n, text in _lazy_muva_imports(path) if not _explained(path, n)]
    assert not unexplained, ("move these imports to the top of the module, or say on the line (or the line above) "
                             "why they must be lazy:\n" + "\n".join(unexplained))


def test_the_checker_sees_a_lazy_import(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("import os\n\ndef f():\n    from muva.utils import io\n    return io\n\n"
                   "def g():\n    # a cycle: muva.x imports this module\n    import muva.x\n")
    found = _lazy_muva_imports(mod)
    assert [n for n, _ in found] == [4, 9]
    assert [_explained(mod, n) for n, _ in found] == [False, True]

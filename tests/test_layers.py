"""The package layers point down: the import-linter contracts of pyproject.toml hold.

``muva.utils`` (with the leaves ``muva.registry``, ``muva.config``) ← ``muva.data`` /
``muva.evaluation`` ← ``muva.grounding`` | ``muva.models`` | ``muva.losses`` ←
``muva.engine`` ← ``muva.inference`` | ``muva.viz`` ← ``muva.serve`` ← ``muva.cli``; the command modules
(``*/commands.py``) are the CLI layer.  Imports inside functions count as much as
module-level ones.  A broken contract prints import-linter's report of the offending
import chains; fix the import (move the shared code down), never the contract.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import grimp  # installed with import-linter, a test dependency: pip install -e ".[dev]"
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_contracts_are_kept():
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    for name in ("muva layers point down", "only the entry point imports muva.cli", "only the CLI layer imports command modules"):
        assert f"{name} KEPT" in report, report
    assert "0 broken" in report


@pytest.fixture(scope="module")
def contracts():
    """The contracts of pyproject.toml with the import graph of the installed sources."""
    from importlinter.api import read_configuration
    from importlinter.contracts.forbidden import ForbiddenContract
    from importlinter.contracts.layers import LayersContract

    options = read_configuration(str(ROOT / "pyproject.toml"))
    kinds = {"layers": LayersContract, "forbidden": ForbiddenContract}
    built = {c["id"]: kinds[c["type"]](c["name"], options["session_options"], c) for c in options["contracts_options"]}
    assert set(built) == {"layers", "cli-top", "commands-cli-layer"}
    return built, grimp.build_graph("muva", cache_dir=None)


def _kept(contracts, contract_id: str, planted: tuple[str, str] | None = None) -> bool:
    built, graph = contracts
    graph = copy.deepcopy(graph)
    if planted:
        graph.add_import(importer=planted[0], imported=planted[1], line_number=1, line_contents="planted by the test")
    return built[contract_id].check(graph, verbose=False).kept


@pytest.mark.parametrize(
    "contract_id, importer, imported",
    [
        ("layers", "muva.utils.io", "muva.data.records"),  # the lowest layer imports a higher one
        ("layers", "muva.data.transforms", "muva.engine.config"),  # the violation fixed by muva.data.transform_config
        ("layers", "muva.losses.memory", "muva.engine.distributed"),  # fixed by muva.utils.distributed
        ("layers", "muva.grounding.views", "muva.viz.masks"),  # fixed by muva.utils.draw
        ("layers", "muva.evaluation.io", "muva.inference.search"),  # fixed by muva.utils.featurefiles
        ("layers", "muva.evaluation.metrics", "muva.data.records"),  # evaluation imports only the utilities
        ("layers", "muva.losses.triplet", "muva.models.heads"),  # siblings: losses | models
        ("layers", "muva.models.heads", "muva.grounding.masks"),  # siblings: models | grounding
        ("layers", "muva.inference.search", "muva.viz.ranks"),  # siblings: inference | viz
        ("layers", "muva.registry", "muva.data.records"),  # a leaf stays a leaf
        ("cli-top", "muva.data.commands", "muva.cli"),  # commands use muva.utils.console, not muva.cli
        ("cli-top", "muva.engine.run", "muva.cli"),
        ("commands-cli-layer", "muva.engine.run", "muva.data.commands"),  # only the CLI layer imports commands
        ("commands-cli-layer", "muva.data.records", "muva.data.commands"),  # even in its own package
    ],
)
def test_contract_catches_a_planted_import(contracts, contract_id, importer, imported):
    assert _kept(contracts, contract_id)
    assert not _kept(contracts, contract_id, (importer, imported)), f"{importer} -> {imported} went unnoticed"


@pytest.mark.parametrize(
    "importer, imported",
    [
        ("muva.engine.run", "muva.losses.memory"),  # down
        ("muva.cli", "muva.engine.run"),
        ("muva.viz.ranks", "muva.evaluation.metrics"),
        ("muva.data.records", "muva.registry"),
        ("muva.viz.commands", "muva.inference.extractor"),  # a command module is the CLI layer
    ],
)
def test_downward_imports_are_allowed(contracts, importer, imported):
    assert all(_kept(contracts, cid, (importer, imported)) for cid in ("layers", "cli-top", "commands-cli-layer"))


def test_feature_reader_is_shared_and_muva_data_is_light():
    """The moved code keeps its public names, and ``import muva.data.parts`` loads no dataset parser."""
    code = (
        "import sys\n"
        "import muva.models.config, muva.engine.config\n"
        "assert not [m for m in sys.modules if m.startswith('muva.data.datasets')], sorted(sys.modules)\n"
        "assert 'torch' not in sys.modules\n"
        "from muva.engine.config import TransformConfig\n"
        "from muva.data.transforms import TransformConfig as T2\n"
        "assert TransformConfig is T2\n"
        "import muva.inference as inf, muva.utils.featurefiles as ff\n"
        "assert inf.load_features is ff.load_features and inf.FeatureSet is ff.FeatureSet\n"
        "import muva.engine.distributed as ed, muva.utils.distributed as ud\n"
        "assert ed.all_gather_tensor is ud.all_gather_tensor and ed.gather_by_index is ud.gather_by_index\n"
        "import muva, muva._version\n"
        "assert muva.__version__ == muva._version.__version__\n"
        "from muva.data import DatasetError, open_dataset\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr

"""Shared fixtures.  Real images live in ../shared/data beside the checkout (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MUVA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mini_mars() -> Path:
    """Path of the research-only mini MARS subset; skips the test when it is absent."""
    path = SHARED_DATA / "mini_mars"
    if not (path / "bbox_train").is_dir():
        pytest.skip(f"real images not available: {path} is absent (see docs/datasets.md)")
    return path


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest single-threaded, above all when other processes share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

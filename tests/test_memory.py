"""muva.utils.memory: glibc keeps freed large blocks, so re-allocating them stops page-faulting."""

import subprocess
import sys

import pytest

from muva.utils.memory import tuning_enabled

PROBE = r"""
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from muva.utils.memory import retain_freed_memory
    assert retain_freed_memory(), "mallopt refused"
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def batch():  # like a forward pass: several 16 MiB activations, allocated, touched, freed
    blocks = [np.ones(16 << 18, dtype=np.float32) for _ in range(8)]
    del blocks
batch()
before = faults()
for _ in range(10):
    batch()
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_retained_memory_is_reused_without_page_faults():
    default, tuned = _faults("default"), _faults("tuned")
    # untuned glibc unmaps the blocks and faults them in again every round (≈ 40k faults
    # here, fewer than the 320k pages touched because of transparent huge pages)
    assert default > 2000, f"expected page faults without the tuning, got {default}"
    assert tuned * 50 < default, f"with the tuning freed blocks should be reused: {tuned} faults vs {default}"


def test_tuning_switch_reads_the_environment():
    assert tuning_enabled({})
    assert tuning_enabled({"MUVA_MALLOC_TUNING": "1"})
    for off in ("0", "false", "No", " off "):
        assert not tuning_enabled({"MUVA_MALLOC_TUNING": off})

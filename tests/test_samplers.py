"""P×K sampler invariants: batch structure, disjoint DDP shards, determinism, resume."""

from collections import Counter

import numpy as np
import pytest

from muva.data.samplers import RandomIdentitySampler, SequentialShardSampler


def _pids():
    rng = np.random.default_rng(0)
    # 12 identities with 1..15 images each (some below K)
    return [p for p in range(12) for _ in range(int(rng.integers(1, 16)))]


def _batches(sampler):
    items = list(sampler)
    bs = sampler.local_batch_size
    assert len(items) % bs == 0
    return [items[i:i + bs] for i in range(0, len(items), bs)]


def test_pk_structure():
    pids = _pids()
    s = RandomIdentitySampler(pids, batch_size=16, num_instances=4, seed=3)
    batches = _batches(s)
    assert len(batches) == s.batches_per_epoch() > 0
    for b in batches:
        counts = Counter(pids[i] for i, _ in b)
        assert len(counts) == 4 and set(counts.values()) == {4}
        # identity groups are contiguous
        labels = [pids[i] for i, _ in b]
        assert all(len(set(labels[j:j + 4])) == 1 for j in range(0, 16, 4))


def test_small_identities_sampled_with_replacement():
    pids = [0] * 2 + [1] * 8 + [2] * 8 + [3] * 8
    s = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=0)
    seen0 = [i for b in _batches(s) for i, _ in b if pids[i] == 0]
    assert seen0 and set(seen0) <= {0, 1}


def test_deterministic_and_epoch_dependent():
    pids = _pids()
    a = RandomIdentitySampler(pids, 16, 4, seed=5)
    b = RandomIdentitySampler(pids, 16, 4, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(0)
    assert list(a) != list(b)
    c = RandomIdentitySampler(pids, 16, 4, seed=6)
    assert list(c) != list(RandomIdentitySampler(pids, 16, 4, seed=5))


def test_ddp_shards_are_disjoint_and_cover_the_single_process_stream():
    pids = _pids()
    single = _batches(RandomIdentitySampler(pids, 16, 4, seed=9))
    r0 = _batches(RandomIdentitySampler(pids, 16, 4, seed=9, world_size=2, rank=0))
    r1 = _batches(RandomIdentitySampler(pids, 16, 4, seed=9, world_size=2, rank=1))
    assert len(r0) == len(r1) == len(single)
    for full, a, b in zip(single, r0, r1):
        assert len(a) == len(b) == 8
        assert a + b == full  # the global batch, split in order
        assert not ({pids[i] for i, _ in a} & {pids[i] for i, _ in b})  # whole identities per rank


def test_resume_mid_epoch_continues_the_stream():
    pids = _pids()
    s = RandomIdentitySampler(pids, 16, 4, seed=1)
    s.set_epoch(2)
    full = list(s)
    r = RandomIdentitySampler(pids, 16, 4, seed=1)
    r.load_state_dict({"seed": 1, "epoch": 2, "start_batch": 3})
    assert list(r) == full[3 * 16:]
    with pytest.raises(ValueError):
        r.load_state_dict({"seed": 2, "epoch": 0})


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of images per identity"):
        RandomIdentitySampler([0, 1], batch_size=6, num_instances=4)
    with pytest.raises(ValueError, match="processes"):
        RandomIdentitySampler(_pids(), batch_size=16, num_instances=4, world_size=3)
    with pytest.raises(ValueError, match="identities"):
        RandomIdentitySampler([0, 0, 1, 1], batch_size=16, num_instances=4)


def test_sequential_shards_partition():
    a, b = SequentialShardSampler(7, 2, 0), SequentialShardSampler(7, 2, 1)
    assert sorted(list(a) + list(b)) == list(range(7)) and len(a) == 4 and len(b) == 3

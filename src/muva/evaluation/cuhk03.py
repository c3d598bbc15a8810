"""CUHK03 classic single-gallery-shot CMC, seeded and independent of chunking.

Per query and repeat, one gallery image is drawn for every identity (for the query's own
identity: one of its true matches — the same-camera ones are removed as usual); the
query's Rank is the number of drawn images of *other* identities ranked before the
drawn true match (ranked list order: ascending distance, ties by gallery index).  The
CMC is averaged over the repeats, then over the valid queries.  AP is computed on the
full list by the ordinary path.

The draws come from a counter-based hash of ``(seed, repeat, query index, identity)``,
so the result depends only on the seed — not on the chunk size, the device or the order
the queries are processed in.  (The peers draw with an unseeded global NumPy RNG.)
"""

from __future__ import annotations

import numpy as np

from muva.evaluation.distances import is_torch_tensor

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrap-around arithmetic)."""
    x = (x + _GOLDEN).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, repeat: int, query: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Deterministic uniforms in [0, 1) for each (query, slot) pair (broadcasting)."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        h = _mix(h ^ np.uint64(repeat))
        h = _mix(h ^ np.asarray(query, dtype=np.uint64))
        h = _mix(h ^ np.asarray(slot, dtype=np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def single_shot_ranks(d, cr, q_pids: np.ndarray, groups, q_index: np.ndarray, repeats: int, seed: int):
    """Single-gallery-shot ranks of the valid rows of a chunk, one per repeat.

    Returns a flat array in which each valid row contributes ``repeats`` ranks (0-based);
    their histogram divided by ``repeats × valid queries`` is the CMC's derivative.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    valid = np.flatnonzero(cr.npos > 0)
    if len(valid) == 0:
        return np.zeros(0, dtype=np.int64)
    dist = d.cpu().numpy() if is_torch_tensor(d) else d
    n_ids = len(groups.pids)
    own = groups.lookup(q_pids[valid])  # every valid row has its identity in the gallery
    pos_first = np.concatenate(([0], np.cumsum(cr.npos)))[:-1][valid]
    ids = np.arange(n_ids, dtype=np.uint64)
    qidx = q_index[valid].astype(np.uint64)[:, None]
    rows = valid[:, None]
    out = []
    for t in range(repeats):
        u = hash_uniform(seed, t, qidx, ids[None, :])
        pick = groups.start[None, :] + np.minimum((u * groups.count[None, :]).astype(np.int64), groups.count[None, :] - 1)
        sg = groups.order[pick]  # rows × identities gallery indices
        ds = dist[rows, sg]
        up = hash_uniform(seed, t, qidx[:, 0], np.uint64(n_ids))  # the own identity's true-match draw
        k = pos_first + np.minimum((up * cr.npos[valid]).astype(np.int64), cr.npos[valid] - 1)
        jp, dp = cr.gidx[k], cr.dist[k]
        before = (ds < dp[:, None]) | ((ds == dp[:, None]) & (sg < jp[:, None]))
        before[np.arange(len(valid)), own] = False
        out.append(before.sum(1))
    return np.concatenate(out).astype(np.int64)

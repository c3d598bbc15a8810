"""Fixed query/gallery splits of the small DG targets (VIPeR, PRID2011, QMUL-iLIDS).

Peers draw these splits with unseeded randomness, so every user evaluates on different
ones.  muva ships them as small JSON files under ``muva/resources/splits/``, produced by
this script from the fixed seed :data:`SPLIT_SEED`::

    python -m muva.data.splits            # rewrite src/muva/resources/splits/*.json
    python -m muva.data.splits --check    # exit 1 unless the committed files match

The randomness does not depend on any library's generator: every choice ranks items by
the SHA-256 of ``"{seed}/{dataset}/{split}/{item}"`` (read as an integer), so the files
are the same on every machine and Python / NumPy version.  Construction (the datasets' published protocols):

* **VIPeR** — 632 persons, one image in ``cam_a`` and one in ``cam_b`` each.  Persons are
  numbered by position (0-based) in the sorted list of file-name prefixes.  Per split the
  316 persons with the smallest hash are the test persons, the other 316 train.  Query =
  their ``cam_a`` image, gallery = their ``cam_b`` image.
* **PRID2011 (single-shot)** — persons 1–200 appear in both cameras.  Per split 100 of them
  (smallest hash) are test persons, the other 100 train.  Query = ``cam_a`` images of the
  test persons (100), gallery = ``cam_b`` images of the test persons plus persons 201–749
  of ``cam_b`` (100 + 549 = 649).
* **QMUL-iLIDS** — 119 persons (positions in the sorted list of 4-digit prefixes), 476
  images.  Per split 60 test persons, 59 train.  For each test person the file stores two
  integers ``[a, b]`` (hashes); with its ``n`` images sorted by name, query = image
  ``a mod n`` and gallery = image ``b mod (n-1)``, skipping the query's index (so the two
  differ).  Query images get pseudo-camera 0 and gallery images 1.

GRID's ten splits are not generated: they come from its own ``features_and_partitions.mat``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from muva.data.records import DatasetError
from muva.utils.io import atomic_write_text

SPLIT_SEED = 20260315  # fixed; changing it changes every committed split file
NUM_SPLITS = 10
SPLITS_DIR = Path(__file__).resolve().parents[1] / "resources" / "splits"

# dataset → (number of persons the split indexes, test persons per split, how persons are named)
SPECS: dict[str, dict] = {
    "viper": {"num_persons": 632, "num_test": 316, "ids": "position (0-based) in the sorted list of persons"},
    "prid2011": {"num_persons": 200, "num_test": 100, "ids": "person number 1-200 from person_NNNN.png"},
    "ilids": {"num_persons": 119, "num_test": 60, "ids": "position (0-based) in the sorted list of 4-digit prefixes"},
}


def _hash(*parts: object) -> int:
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _items(dataset: str) -> list[int]:
    n = SPECS[dataset]["num_persons"]
    return list(range(1, n + 1)) if dataset == "prid2011" else list(range(n))


def generate(dataset: str, seed: int = SPLIT_SEED, num_splits: int = NUM_SPLITS) -> dict:
    """The split document of one dataset (what the JSON file holds)."""
    if dataset not in SPECS:
        raise KeyError(f"no generated splits for {dataset!r}; available: {', '.join(SPECS)}")
    spec = SPECS[dataset]
    items = _items(dataset)
    splits = []
    for k in range(num_splits):
        order = sorted(items, key=lambda i: (_hash(seed, dataset, k, i), i))
        test = sorted(order[: spec["num_test"]])
        train = sorted(order[spec["num_test"]:])
        entry: dict = {"train": train, "test": test}
        if dataset == "ilids":
            entry["picks"] = {str(i): [_hash(seed, dataset, k, i, "query") % 2**31, _hash(seed, dataset, k, i, "gallery") % 2**31] for i in test}
        splits.append(entry)
    return {
        "dataset": dataset,
        "seed": seed,
        "num_persons": spec["num_persons"],
        "ids": spec["ids"],
        "generator": "python -m muva.data.splits",
        "splits": splits,
    }


def render(doc: dict) -> str:
    """Stable, compact JSON text: header keys one per line, then one line per split."""
    head = {k: v for k, v in sorted(doc.items()) if k != "splits"}
    lines = ["{"]
    lines += [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "splits": [')
    body = [f"  {json.dumps(s, sort_keys=True, separators=(',', ':'))}" for s in doc["splits"]]
    lines.append(",\n".join(body))
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def split_path(dataset: str) -> Path:
    return SPLITS_DIR / f"{dataset}.json"


def load_splits(dataset: str, path: str | Path | None = None) -> dict:
    """The committed split document of ``dataset`` (or the file at ``path``)."""
    file = Path(path) if path is not None else split_path(dataset)
    if not file.is_file():
        raise DatasetError(f"split file {file} is missing; regenerate it with: python -m muva.data.splits")
    doc = json.loads(file.read_text(encoding="utf-8"))
    if not doc.get("splits"):
        raise DatasetError(f"split file {file} holds no splits")
    return doc


def pick_pair(a: int, b: int, n: int) -> tuple[int, int]:
    """Indices of the query and gallery image among ``n`` sorted images (distinct, see module doc)."""
    if n < 2:
        raise ValueError("a test person needs at least two images")
    q = a % n
    g = b % (n - 1)
    if g >= q:
        g += 1
    return q, g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m muva.data.splits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SPLITS_DIR, help="folder to write the JSON files into")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)
    status = 0
    for dataset in SPECS:
        text = render(generate(dataset))
        target = args.out / f"{dataset}.json"
        if args.check:
            same = target.is_file() and target.read_text(encoding="utf-8") == text
            print(f"{target}: {'ok' if same else 'DIFFERS'}")
            status |= 0 if same else 1
        else:
            atomic_write_text(target, text)
            target.chmod(0o644)
            print(f"wrote {target}")
    return status


if __name__ == "__main__":
    sys.exit(main())

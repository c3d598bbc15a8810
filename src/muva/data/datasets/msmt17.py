"""MSMT17 (Wei et al. 2018), V1 and V2 layouts.

* V1: ``MSMT17_V1/{train,test}/PPPP/*.jpg``
* V2: ``MSMT17_V2/{mask_train_v2,mask_test_v2}/PPPP/*.jpg``

Both come with ``list_{train,val,query,gallery}.txt`` whose lines read ``relpath label``
(train/val paths relative to the train folder, query/gallery to the test folder).  The
camera is the third underscore field of the file name, 1-based (``0000_000_01_…`` → 0).

List labels start at 0, but identity 0 means "distractor" everywhere in muva, so
identities are **list label + 1**.

``train_split`` chooses the training set explicitly: ``train`` (``list_train``, 30,248
images, as torchreid / fast-reid; the default) or ``train+val`` (adds ``list_val``,
32,621 images, as CLIP-ReID / TransReID / M3L).  The choice is kept in
``dataset.info["train_split"]`` so that every result can say which one it used.
"""

from __future__ import annotations

from pathlib import Path

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import _listing, locate, nestings, require_file
from muva.data.records import DatasetError, ImageRecord, ReIDDataset

TRAIN_SPLITS = ("train", "train+val")
_LAYOUTS = {
    "V1": ("train", "test"),
    "V2": ("mask_train_v2", "mask_test_v2"),
}
_NESTINGS = nestings("MSMT17_V1", "MSMT17_V2", "msmt17", "MSMT17", "msmt17_v1", "msmt17_v2")
_LISTS = ("list_train.txt", "list_query.txt", "list_gallery.txt")


def _norm_train_split(value: str) -> str:
    v = str(value).lower().replace(" ", "").replace("_", "+").replace("-", "+")
    if v in ("trainval", "train+val", "all"):
        v = "train+val"
    if v not in TRAIN_SPLITS:
        raise DatasetError(f"MSMT17 train_split {value!r} is unknown; choose 'train' (list_train) or 'train+val' (list_train + list_val)")
    return v


def _find(root: Path) -> tuple[Path, str, Path, Path]:
    """The folder holding the list files, the layout version and its train / test folders."""
    folder = locate(root, "MSMT17", list(_LISTS), _NESTINGS)
    for version, (tr, te) in _LAYOUTS.items():
        for train_dir, test_dir in ((tr, te), (tr.replace("v2", "V2"), te.replace("v2", "V2"))):
            if (folder / train_dir).is_dir() and (folder / test_dir).is_dir():
                return folder, version, folder / train_dir, folder / test_dir
    raise DatasetError(
        f"MSMT17: {folder} holds the list files but not the image folders: expected train/ + test/ (V1) "
        f"or mask_train_v2/ + mask_test_v2/ (V2); {_listing(folder)}."
    )


def read_list(list_file: Path, image_dir: Path, dataset: str = "msmt17") -> list[ImageRecord]:
    """Records of one MSMT17 list file (``relpath label`` per line; blank lines ignored)."""
    records = []
    with open(list_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            try:
                rel, label = parts[0], int(parts[1])
                cam = int(Path(rel).name.split("_")[2]) - 1
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{list_file}:{lineno}: expected 'PPPP/PPPP_III_CC_….jpg LABEL', got {line!r}"
                ) from None
            records.append(ImageRecord(str(image_dir / rel), label + 1, cam, dataset))
    return records


@register_dataset("msmt17", aliases=("msmt", "ms", "msmt17-v1", "msmt17-v2"), standard=True)
def msmt17(root: Path, train_split: str = "train") -> ReIDDataset:
    """MSMT17: 1,041 train ids (30,248 images with ``train``, 32,621 with ``train+val``), 15 cameras."""
    split = _norm_train_split(train_split)
    folder, version, train_dir, test_dir = _find(Path(root))
    train = read_list(folder / "list_train.txt", train_dir)
    if split == "train+val":
        val = require_file(folder / "list_val.txt", "MSMT17 train+val", " (needed for train_split='train+val')")
        train += read_list(val, train_dir)
    return ReIDDataset(
        name="msmt17",
        root=folder,
        train=train,
        query=read_list(folder / "list_query.txt", test_dir),
        gallery=read_list(folder / "list_gallery.txt", test_dir),
        info={"version": version, "train_split": split},
    )


@register_dataset("msmt17-trainval", aliases=("msmt17-train+val",))
def msmt17_trainval(root: Path) -> ReIDDataset:
    """MSMT17 with ``train_split='train+val'`` (as CLIP-ReID / TransReID train)."""
    return msmt17(root, train_split="train+val")

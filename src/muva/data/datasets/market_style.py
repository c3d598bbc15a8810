"""Datasets distributed in the Market-1501 folder layout: DukeMTMC-reID and CUHK03-NP.

* DukeMTMC-reID: ``DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/0001_c2_f0046182.jpg``.
* CUHK03-NP (the widely distributed new-protocol release of Zhong et al.):
  ``cuhk03-np/{labeled,detected}/{bounding_box_train,query,bounding_box_test}/0001_c1_1.png``.
  ``variant`` chooses ``detected`` (default, MUVA's "C3") or ``labeled``.  The original
  ``cuhk-03.mat`` + ``cuhk03_new_protocol_config_*.mat`` form is not read; convert it to
  the NP folders first (see docs/datasets.md).
"""

from __future__ import annotations

from pathlib import Path

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import locate, nestings
from muva.data.datasets.market1501 import MARKET_FOLDERS, read_market_layout
from muva.data.records import DatasetError, ReIDDataset

DUKE_NESTINGS = nestings("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid", "dukemtmc", "DukeMTMC", "duke")


@register_dataset("dukemtmcreid", aliases=("duke", "dukemtmc", "dukemtmc-reid", "d"), standard=True)
def dukemtmcreid(root: Path) -> ReIDDataset:
    """DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): 702 train ids, 8 cameras."""
    folder = locate(Path(root), "DukeMTMC-reID", list(MARKET_FOLDERS.values()), DUKE_NESTINGS)
    return read_market_layout(folder, "dukemtmcreid")


CUHK03_VARIANTS = ("detected", "labeled")
CUHK03_NAMES = ("cuhk03-np", "cuhk03_np", "cuhk03np", "CUHK03-NP", "cuhk03", "CUHK03", "cuhk03-np-jpg")


def _cuhk03_nestings(variant: str) -> tuple[str, ...]:
    out = [variant] + [f"{a}/{variant}" for a in CUHK03_NAMES]
    out += [f"{a}/{b}/{variant}" for a in CUHK03_NAMES for b in CUHK03_NAMES]
    return tuple(dict.fromkeys(out))


@register_dataset("cuhk03np", aliases=("cuhk03-np", "cuhk03", "c3"))
def cuhk03np(root: Path, variant: str = "detected") -> ReIDDataset:
    """CUHK03-NP (new protocol): 767 train / 700 test ids, 2 cameras; ``variant`` detected|labeled."""
    variant = str(variant).lower()
    if variant not in CUHK03_VARIANTS:
        raise DatasetError(f"CUHK03-NP variant {variant!r} is unknown; choose one of {', '.join(CUHK03_VARIANTS)}")
    root = Path(root)
    nest = _cuhk03_nestings(variant)
    if root.name.lower() == variant:  # the variant folder itself was given as root
        nest = ("", *nest)
    folder = locate(root, f"CUHK03-NP ({variant})", list(MARKET_FOLDERS.values()), nest)
    return read_market_layout(folder, "cuhk03np", info={"variant": variant})


@register_dataset("cuhk03np-detected", aliases=("cuhk03-detected", "c3d"), standard=True)
def cuhk03np_detected(root: Path) -> ReIDDataset:
    """CUHK03-NP, detected boxes (MUVA's C3)."""
    return cuhk03np(root, variant="detected")


@register_dataset("cuhk03np-labeled", aliases=("cuhk03-labeled", "c3l"), standard=True)
def cuhk03np_labeled(root: Path) -> ReIDDataset:
    """CUHK03-NP, hand-labelled boxes."""
    return cuhk03np(root, variant="labeled")

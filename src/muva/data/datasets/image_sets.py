"""Training-only sources of Protocol 1: CUHK02 and CUHK-SYSU (DG crops).

Both are used as a whole (every image in ``train``; ``query`` and ``gallery`` empty).

* CUHK02 (Li & Wang 2013): ``Dataset/P1 … P5/{cam1,cam2}/*.png``; the identity is the
  file-name prefix before ``_`` *within its camera pair*, so identities are keyed by
  (pair, prefix) and numbered 1..N in sorted order; camera pair ``Pk`` gives cameras
  ``2(k-1)`` (cam1) and ``2(k-1)+1`` (cam2) → 10 cameras.
* CUHK-SYSU crops: ``cropped_images/p11422_s16929_1.jpg``; identity ``p…``, and one
  pseudo-camera per scene ``s…`` (scenes numbered 0..K-1 in sorted order).
"""

from __future__ import annotations

import re
from pathlib import Path

from muva.data.datasets import register_dataset
from muva.data.datasets.layout import image_files, locate, nestings
from muva.data.datasets.usable import require_usable
from muva.data.records import DatasetError, ImageRecord, ReIDDataset

CUHK02_PAIRS = ("P1", "P2", "P3", "P4", "P5")
CUHK02_NESTINGS = nestings("Dataset", "cuhk02", "CUHK02", "CUHK-02", "cuhk-02")


@register_dataset("cuhk02", aliases=("cuhk-02",), standard=True)
def cuhk02(root: Path) -> ReIDDataset:
    """CUHK02: 1,816 identities, 7,264 images, 5 camera pairs (10 cameras), all in ``train``."""
    folder = locate(Path(root), "CUHK02", list(CUHK02_PAIRS), CUHK02_NESTINGS)
    found: list[tuple[str, str, int, Path]] = []
    for k, pair in enumerate(CUHK02_PAIRS):
        for c, cam in enumerate(("cam1", "cam2")):
            cam_dir = folder / pair / cam
            if not cam_dir.is_dir():
                raise DatasetError(f"CUHK02: expected {cam_dir}/ (each of P1…P5 holds cam1/ and cam2/)")
            for p in image_files(cam_dir):
                found.append((pair, p.name.split("_")[0], 2 * k + c, p))
    ids = {key: i + 1 for i, key in enumerate(sorted({(pair, prefix) for pair, prefix, _, _ in found}))}
    train = [ImageRecord(str(p), ids[(pair, prefix)], cam, "cuhk02") for pair, prefix, cam, p in found]
    return ReIDDataset("cuhk02", folder, train=train, info={"all_in_train": True})


_SYSU_NAME = re.compile(r"^p(\d+)_s(\d+)")
CUHKSYSU_NESTINGS = nestings("cuhksysu", "CUHK-SYSU", "cuhk-sysu", "cuhk_sysu", "CUHK_SYSU", "cuhksysu4reid")


@register_dataset("cuhksysu", aliases=("cuhk-sysu", "sysu"), standard=True)
def cuhksysu(root: Path) -> ReIDDataset:
    """CUHK-SYSU person crops: 11,934 identities, 34,574 images, all in ``train``."""
    folder = locate(Path(root), "CUHK-SYSU", ["cropped_images"], CUHKSYSU_NESTINGS)
    found, skipped = [], []
    for p in image_files(folder / "cropped_images"):
        m = _SYSU_NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), p))
        else:
            skipped.append(str(p))
    scenes = {s: i for i, s in enumerate(sorted({s for _, s, _ in found}))}
    train = [ImageRecord(str(p), pid, scenes[s], "cuhksysu") for pid, s, p in found]
    info = {"all_in_train": True, "cameras": "one pseudo-camera per scene"}
    if skipped:
        info["skipped"] = skipped
    return require_usable(ReIDDataset("cuhksysu", folder, train=train, info=info), ("train",),
                          folders={"train": folder / "cropped_images"}, unparsed={"train": skipped},
                          naming="CUHK-SYSU crop names p<identity>_s<scene>_…, e.g. p11422_s16929_1.jpg")

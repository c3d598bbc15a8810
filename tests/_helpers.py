"""Small helpers shared by test modules (import as ``from _helpers import ...``)."""

from __future__ import annotations

from pathlib import Path


def touch(path: Path) -> Path:
    """Create a placeholder file (and its folders): enough for parsers that read names only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def stats(ds):
    """``{split: (identities, images, cameras)}`` of a ReIDDataset."""
    return {s: (st.num_pids, st.num_images, st.num_cams) for s, st in ds.stats().items()}


def make_market(root: Path, ids: int = 4, cams: int = 2, seed: int = 0, *, train_per_cam: int = 2,
                cam_shift: int = 10, quality: int = 95) -> Path:
    """A tiny Market-1501-layout folder of real JPEGs: one coarse colour pattern per identity.

    Per identity and camera: ``train_per_cam`` training images, one query, two gallery
    images (names ``PPPP_cCs1_KKKKKK_00.jpg``); ``cam_shift`` brightens each camera a little.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for folder, per_cam in (("bounding_box_train", train_per_cam), ("query", 1), ("bounding_box_test", 2)):
        (root / folder).mkdir(parents=True)
        for pid in range(1, ids + 1):
            base = rng.integers(0, 256, (8, 4, 3))
            for cam in range(1, cams + 1):
                for k in range(per_cam):
                    img = np.kron(base, np.ones((16, 16, 1))) + rng.normal(0, 12, (128, 64, 3)) + cam_shift * cam
                    name = f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"
                    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / folder / name, quality=quality)
    return root


def trained_looking_bn(model):
    """Give the BN neck non-trivial running statistics (a fresh one is the identity up to scale)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model


def tiny_checkpoint(path: Path, num_classes: int = 4, seed: int | None = 0) -> Path:
    """A randomly initialised tiny MUVA model saved at ``path`` (weights from ``torch.manual_seed(seed)``;
    ``None`` leaves the generator as it is); returns the file."""
    import torch

    from muva.models import build_model, save_model, tiny_config

    if seed is not None:
        torch.manual_seed(seed)
    return save_model(build_model(tiny_config(), num_classes=num_classes), path)

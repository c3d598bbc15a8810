"""What ``muva serve`` serves: the model, the gallery, the limits, the counters (no HTTP here).

:func:`open_service` loads the model, turns ``--gallery`` into a feature folder (extracting a
folder of images with ``muva extract``'s code, resumable, with progress; an existing feature
folder is used as it is) and opens the :class:`~muva.serve.gallery.Gallery` over it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from muva.data.parts import get_part
from muva.inference.extract import extract_to_folder, gather_rows
from muva.inference.extractor import FeatureExtractor
from muva.serve.gallery import Gallery, GalleryError, feature_folder_complete, is_feature_folder
from muva.serve.limits import Limits

__all__ = ["Service", "open_service", "state_dir_for"]

MASK_THRESHOLD = 0.5  # predicted part probability → 0/1 per patch (as muva viz draws them)


@dataclass
class Service:
    """The model, the gallery and the limits of one running service, plus its counters."""

    extractor: FeatureExtractor
    gallery: Gallery
    limits: Limits = field(default_factory=Limits)
    token: str | None = None
    model_name: str = ""
    counts: dict = field(default_factory=lambda: {"search": 0, "gallery_add": 0, "gallery_delete": 0, "errors_4xx": 0})
    latencies: deque = field(default_factory=lambda: deque(maxlen=2000))  # seconds of recent searches
    model_lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ model
    def embed(self, images: list, masks: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Features ``(N, D)`` and binary part masks ``(N, parts, patches)`` (None without parts) of RGB images."""
        want = masks and bool(self.extractor.parts)
        with self.model_lock:
            out = self.extractor(list(images), return_masks=want)
        feats, m = out if want else (out, None)
        feats = np.atleast_2d(np.asarray(feats, dtype=np.float32))
        if m is None:
            return feats, None
        m = np.asarray(m)
        m = m.reshape(len(images), -1, len(self.extractor.parts), self.extractor.num_patches)[:, -1]  # last layer
        return feats, (m > MASK_THRESHOLD).astype(np.uint8)

    def masks_json(self, m: np.ndarray | None) -> dict | None:
        if m is None:
            return None
        parts = list(self.extractor.parts)
        return {"grid": list(self.extractor.grid), "parts": parts, "colours": [list(get_part(p).colour) for p in parts],
                "values": m.astype(int).tolist()}

    def gallery_masks(self, ids: list[str]) -> dict[str, np.ndarray | None]:
        """Masks of gallery items: stored or cached ones, the others computed from their image now (and cached)."""
        if not self.extractor.parts:
            return {i: None for i in ids}
        out: dict[str, np.ndarray | None] = {}
        todo = []
        for gid in dict.fromkeys(ids):
            m = self.gallery.cached_masks(gid)
            if m is not None:
                out[gid] = m
            else:
                todo.append(gid)
        images, kept = [], []
        for gid in todo:
            try:
                with Image.open(self.gallery.item(gid)["path"]) as im:
                    images.append(im.convert("RGB"))
                kept.append(gid)
            except (OSError, KeyError, ValueError):
                out[gid] = None  # an unreadable gallery file: no masks, the hit stays
        if images:
            _, masks = self.embed(images, masks=True)
            for gid, m in zip(kept, masks if masks is not None else [None] * len(kept)):
                out[gid] = m
                if m is not None:
                    self.gallery.cache_masks(gid, m)
        return out

    # ------------------------------------------------------------------ counters
    def record_search(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def stats(self) -> dict:
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000
        pct = {f"p{p}": (round(float(np.percentile(lat, p)), 3) if len(lat) else 0.0) for p in (50, 90, 99)}
        return {
            "gallery_size": len(self.gallery),
            "index": self.gallery.kind,
            "model": self.model_name,
            "requests": dict(self.counts),
            "latency_ms": pct,
            "limits": self.limits.as_dict(),
        }


def state_dir_for(gallery: Path, root: Path = Path("runs/serve")) -> Path:
    """The default state folder of a gallery: ``runs/serve/<name>-<hash of its absolute path>``."""
    full = str(gallery.expanduser().resolve())
    return root / f"{gallery.resolve().name}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"


def open_service(model: str | Path, gallery: str | Path, *, state: str | Path | None = None, index: str = "exact",
                 device: str = "cpu", batch_size: int = 32, limits: Limits | None = None, token: str | None = None,
                 progress: bool = True) -> Service:
    """Load the model, prepare the gallery's feature folder (extracting it if needed), open the gallery."""
    gallery = Path(gallery)
    if not gallery.is_dir():
        raise GalleryError(f"--gallery {gallery} is not a folder (give a folder of images or a `muva extract` feature folder)")
    state = Path(state) if state is not None else state_dir_for(gallery)
    fx = FeatureExtractor(model, device=device, batch_size=batch_size)
    if is_feature_folder(gallery):
        if not feature_folder_complete(gallery):
            raise GalleryError(f"{gallery} is an unfinished extraction; rerun `muva extract` to complete it")
        base = gallery
    else:
        base = state / "features"
        rows, src = gather_rows(str(gallery), splits=("gallery",))
        extract_to_folder(fx, rows, base, resume=True, progress=progress, source=src)
    g = Gallery(base, state / "changes", index=index, dim=fx.dim)
    if g.dim != fx.dim:
        raise GalleryError(f"the gallery holds {g.dim}-d features but the model makes {fx.dim}-d ones; serve it with the model that extracted it")
    return Service(fx, g, limits or Limits(), token, Path(str(model)).name)

"""From a planned image (identity, camera, image index) to JPEG bytes and its parts record.

:class:`DomainRenderer` holds what is shared by every image of a domain (style, scene
banks per camera, finishers); :meth:`DomainRenderer.render` is a pure function of the
job and the config, so the bytes do not depend on which worker renders an image or in
which order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from muva.data.parts import PART_NAMES
from muva.data.synth.appearance import Identity
from muva.data.synth.backgrounds import scene_bank
from muva.data.synth.config import SynthConfig
from muva.data.synth.figure import sample_pose
from muva.data.synth.parts_file import PartsRecord
from muva.data.synth.render import draw_occluder, draw_person
from muva.data.synth.styles import DomainStyle, Finisher

SCENE_VARIANTS = 3
OCCLUDED_FRACTION = 0.4   # a part is "occluded" when the occluder covers this much of its box


@dataclass(frozen=True)
class Job:
    """One image to render: where it goes and who is in it."""

    split: str          # Market folder: bounding_box_train, query or bounding_box_test
    filename: str
    identity: Identity
    index: int          # image index within the identity (seeds the image)
    camid: int          # 0-based camera


def image_rng(seed: int, domain: int, key: int, index: int) -> np.random.Generator:
    """The random stream of one image: a function of (seed, domain, identity, image index)."""
    return np.random.default_rng([seed, 20, domain, key, index])


def _overlap_fraction(box, rect) -> float:
    x0, y0 = max(box[0], rect[0]), max(box[1], rect[1])
    x1, y1 = min(box[2], rect[2]), min(box[3], rect[3])
    area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
    if area <= 0:
        return 0.0
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / area


class DomainRenderer:
    """Renders the images of one domain."""

    def __init__(self, cfg: SynthConfig, style: DomainStyle):
        self.cfg, self.style = cfg, style
        self.size = (cfg.width, cfg.height)
        self.canvas_size = (cfg.width * 2, cfg.height * 2)
        self.scene_size = (int(self.canvas_size[0] * 1.3), int(self.canvas_size[1] * 1.12))
        self._banks: dict[int, list[Image.Image]] = {}
        self._finishers: dict[int, Finisher] = {}

    def bank(self, camid: int) -> list[Image.Image]:
        if camid not in self._banks:
            self._banks[camid] = scene_bank(self.style.background, [self.cfg.seed, 30, self.style.index, camid],
                                            self.scene_size, SCENE_VARIANTS)
        return self._banks[camid]

    def finisher(self, camid: int) -> Finisher:
        if camid not in self._finishers:
            self._finishers[camid] = Finisher(self.style, self.style.cameras[camid], self.size, self.cfg.seed)
        return self._finishers[camid]

    def render(self, job: Job) -> tuple[bytes, PartsRecord, Image.Image]:
        """JPEG bytes, the parts.jsonl record and the final image of ``job``."""
        cfg, cam = self.cfg, self.style.cameras[job.camid]
        rng = image_rng(cfg.seed, self.style.index, job.identity.key, job.index)
        cw, ch = self.canvas_size
        bank = self.bank(job.camid)
        scene = bank[int(rng.integers(len(bank)))]
        ox = int(rng.integers(0, self.scene_size[0] - cw + 1))
        oy = int(rng.integers(0, self.scene_size[1] - ch + 1))
        canvas = scene.crop((ox, oy, ox + cw, oy + ch))
        if rng.random() < 0.5:
            canvas = canvas.transpose(Image.FLIP_LEFT_RIGHT)
        pose = sample_pose(rng, job.identity, cam.view_probs, cam.scale, self.canvas_size, cfg.occlusion_prob)
        boxes2 = draw_person(canvas, job.identity, pose)
        occluded: list[str] = []
        if pose.occluder is not None:
            rect = draw_occluder(canvas, pose.occluder)
            occluded = [p for p in PART_NAMES if _overlap_fraction(boxes2[p], rect) >= OCCLUDED_FRACTION]
        img = canvas.reduce(2)
        final, data = self.finisher(job.camid).finish(img, rng)
        w, h = self.size
        boxes = {}
        w, h = float(w), float(h)
        for part in PART_NAMES:
            x0, y0, x1, y1 = (v / 2.0 for v in boxes2[part])
            boxes[part] = (round(min(max(x0, 0.0), w), 2), round(min(max(y0, 0.0), h), 2),
                           round(min(max(x1, 0.0), w), 2), round(min(max(y1, 0.0), h), 2))
        record = PartsRecord(f"{job.split}/{job.filename}", cfg.width, cfg.height, boxes, tuple(occluded),
                             pid=job.identity.pid, camid=job.camid, view=pose.view)
        return data, record, final

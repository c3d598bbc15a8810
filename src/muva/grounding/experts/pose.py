"""The pose expert: MediaPipe BlazePose landmarks (tflite, run with LiteRT) → part boxes.

The landmark model (``pose_landmark_full.tflite``, 256×256 RGB in [0, 1], 39 landmarks ×
(x, y, z, visibility, presence) in input pixels plus a pose-presence score) runs
directly on the re-ID crop: a pedestrian crop already is the region of interest that
MediaPipe's detector would produce, so the crop is letterboxed into a square with a
margin (``margin`` = 1.25, like MediaPipe's ROI enlargement) and no detector is needed.

The model file comes from the ``mediapipe==0.10.21`` wheel (the last release bundling
it): on first use it is fetched with ``pip download`` into ``~/.cache/muva/mediapipe``
(or ``$MUVA_CACHE/mediapipe``) and only the .tflite is extracted.  A path can be given
instead (``model_path=`` / ``--pose-model`` / ``$MUVA_POSE_MODEL``).

:func:`keypoints_to_boxes` — the keypoint → part-box rule — is pure NumPy and usable
without the model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from muva.data.parts import DEFAULT_PARTS, require_rules
from muva.grounding.boxes import Fallback, Proposal, ValidationRules
from muva.grounding.experts.base import GroundingExpert
from muva.grounding.experts.spec import option, register_expert
from muva.utils.errors import MuvaError

MEDIAPIPE_VERSION = "0.10.21"
MODEL_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
MODEL_NAME = "pose_landmark_full.tflite"
INPUT_SIZE = 256

# BlazePose landmark indices (33 body points; 33..38 are auxiliary ROI points).
NOSE, L_EYE_IN, L_EYE, L_EYE_OUT, R_EYE_IN, R_EYE, R_EYE_OUT, L_EAR, R_EAR, MOUTH_L, MOUTH_R = range(11)
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
L_HEEL, R_HEEL, L_TOE, R_TOE = 29, 30, 31, 32
FACE = list(range(11))
SHOULDERS = [L_SHOULDER, R_SHOULDER]
ARMS = [L_ELBOW, R_ELBOW, L_WRIST, R_WRIST]
HIPS = [L_HIP, R_HIP]
KNEES = [L_KNEE, R_KNEE]
ANKLES = [L_ANKLE, R_ANKLE]
FEET = [L_HEEL, R_HEEL, L_TOE, R_TOE]


class PoseModelError(MuvaError, RuntimeError):
    """The pose model file cannot be found or fetched."""


# ----------------------------------------------------------------------------- model file
def cache_dir() -> Path:
    base = os.environ.get("MUVA_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "muva") / "mediapipe"


def _extract(wheel: Path, target: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(MODEL_MEMBER)
        except KeyError as exc:
            raise PoseModelError(f"{wheel} does not contain {MODEL_MEMBER}") from exc
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def find_pose_model(model_path: str | Path | None = None, *, download: bool = True) -> Path:
    """Locate the BlazePose landmark model, fetching the mediapipe wheel with pip if needed.

    Order: ``model_path``; ``$MUVA_POSE_MODEL``; the cache directory; a mediapipe wheel
    already in the cache directory; ``pip download --no-deps mediapipe==0.10.21``.
    """
    explicit = model_path or os.environ.get("MUVA_POSE_MODEL")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise PoseModelError(f"pose model {path} does not exist (give the path of {MODEL_NAME})")
        return path
    folder = cache_dir()
    target = folder / MODEL_NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels and download:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            # No wheel for this interpreter: any platform's wheel holds the same model file.
            cmd += ["--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
        if not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise PoseModelError(
                f"could not fetch mediapipe=={MEDIAPIPE_VERSION} with pip into {folder} ({' / '.join(tail)}). "
                f"Download that wheel by hand into {folder}, or pass --pose-model PATH/{MODEL_NAME}."
            )
    if not wheels:
        raise PoseModelError(f"no {MODEL_NAME} in {folder} and downloading is disabled; pass --pose-model PATH")
    path = _extract(wheels[-1], target)
    for wheel in wheels:  # only the .tflite is kept
        wheel.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------- keypoints → boxes
def _pts(kps: np.ndarray, vis: np.ndarray, idx: Sequence[int], thr: float) -> np.ndarray:
    sel = [i for i in idx if vis[i] >= thr]
    return kps[sel] if sel else np.zeros((0, 2), dtype=np.float64)


class _Body:
    """The keypoints of one crop and the quantities shared by the per-part rules."""

    def __init__(self, keypoints, visibility, height: float, min_visibility: float, lower_visibility: float, person_score: float):
        self.kps = np.asarray(keypoints, dtype=np.float64)[:33, :2]
        self.vis = np.asarray(visibility, dtype=np.float64)[:33]
        self.thr = min_visibility
        self.lower_visibility = lower_visibility
        self.person_score = person_score
        self.sh = self.pts(SHOULDERS)
        self.hips = self.pts(HIPS)
        self.shoulder_w = float(np.ptp(self.sh[:, 0])) if len(self.sh) == 2 else 0.0
        torso_h = float(self.hips[:, 1].mean() - self.sh[:, 1].mean()) if len(self.sh) and len(self.hips) else 0.0
        # A body scale that survives side views: torso height, else a fraction of the crop.
        self.scale = torso_h if torso_h > 0.05 * height else 0.3 * height
        self.hip_y = float(self.hips[:, 1].min()) if len(self.hips) else -np.inf

    def pts(self, idx: Sequence[int]) -> np.ndarray:
        return _pts(self.kps, self.vis, idx, self.thr)

    def score(self, idx: Sequence[int]) -> float:
        v = [self.vis[i] for i in idx if self.vis[i] >= self.thr]
        return float(np.mean(v)) * self.person_score if v else 0.0

    def below_hips(self, idx: Sequence[int]) -> np.ndarray:
        pts = _pts(self.kps, self.vis, idx, self.lower_visibility)
        return pts[pts[:, 1] > self.hip_y] if len(pts) else pts


def _head(b: _Body) -> Proposal:
    """Face points (nose, eyes, ears, mouth), sized from their spread and the shoulder width."""
    face = b.pts(FACE)
    if len(face) < 3:
        return Proposal(None, 0.0, "invisible")
    spread = float(np.ptp(face[:, 0]))
    size = max(spread * 1.6, 0.5 * b.shoulder_w, 0.36 * b.scale)
    cx = float(face[:, 0].mean())
    eyes = b.pts([L_EYE, R_EYE, L_EYE_IN, R_EYE_IN, L_EYE_OUT, R_EYE_OUT])
    ey = float(eyes[:, 1].mean()) if len(eyes) else float(face[:, 1].mean())
    h = 1.25 * size
    # Eyes sit a little above the middle of the head (hair above, chin below).
    return Proposal((cx - size / 2, ey - 0.5 * h, cx + size / 2, ey + 0.5 * h), b.score(FACE))


def _upper_body(b: _Body) -> Proposal:
    """Shoulders to hips, widened to include elbows and wrists."""
    if len(b.sh) == 0 or len(b.hips) == 0:
        return Proposal(None, 0.0, "invisible")
    pts = np.concatenate([b.sh, b.hips, b.pts(ARMS)])
    pad = 0.12 * b.scale
    top = float(b.sh[:, 1].min()) - 0.15 * b.scale
    bottom = float(b.hips[:, 1].max()) + 0.08 * b.scale
    return Proposal((float(pts[:, 0].min()) - pad, top, float(pts[:, 0].max()) + pad, bottom), b.score(SHOULDERS + HIPS))


def _legs(b: _Body) -> Proposal:
    """Hips to ankles (knees plus a typical shin length when the ankles are hidden)."""
    lower = b.below_hips(KNEES + ANKLES)
    if len(b.hips) == 0 or len(lower) == 0:
        return Proposal(None, 0.0, "invisible")
    pts = np.concatenate([b.hips, lower])
    pad = 0.12 * b.scale
    ankles = b.below_hips(ANKLES)
    if len(ankles):
        bottom = float(ankles[:, 1].max()) + 0.06 * b.scale
    else:  # knees only: extend by a typical shin length
        bottom = float(lower[:, 1].max()) + 0.9 * b.scale
    top = float(b.hips[:, 1].min()) - 0.05 * b.scale
    return Proposal((float(pts[:, 0].min()) - pad, top, float(pts[:, 0].max()) + pad, bottom), b.score(HIPS))


def _shoes(b: _Body) -> Proposal:
    """Around heels, toes and ankles."""
    feet = b.below_hips(FEET + ANKLES)
    if len(feet) < 2:
        return Proposal(None, 0.0, "invisible")
    pad = 0.08 * b.scale
    return Proposal(
        (float(feet[:, 0].min()) - pad, float(feet[:, 1].min()) - pad, float(feet[:, 0].max()) + pad, float(feet[:, 1].max()) + pad),
        float(np.mean([b.vis[i] for i in FEET + ANKLES])) * b.person_score,
    )


# Part name → keypoint rule; every part of muva.data.parts needs one (checked on import).
PART_RULES: dict[str, Callable[[_Body], Proposal]] = {"head": _head, "upper_body": _upper_body, "legs": _legs, "shoes": _shoes}
require_rules("pose", PART_RULES, "muva.grounding.experts.pose.PART_RULES")


def keypoints_to_boxes(
    keypoints: np.ndarray,
    visibility: np.ndarray,
    width: float,
    height: float,
    parts: Sequence[str] = DEFAULT_PARTS,
    *,
    min_visibility: float = 0.5,
    lower_visibility: float = 0.25,
    person_score: float = 1.0,
) -> dict[str, Proposal]:
    """Map 33 BlazePose keypoints (image pixels) to one proposal per part (:data:`PART_RULES`).

    * head — face points (nose, eyes, ears, mouth): centred on them, sized from the ear /
      eye spread and the shoulder width (a head is ~0.45 of the shoulder span);
    * upper_body — shoulders to hips, widened to include elbows and wrists;
    * legs — hips to ankles (knees when the ankles are hidden);
    * shoes — around heels, toes and ankles.

    A part whose required keypoints are below ``min_visibility`` gets
    ``Proposal(None, reason="invisible")``.  Knees, ankles and feet use the lower
    ``lower_visibility``: BlazePose is conservative about them on small, blurry crops
    even where their positions are right; they must also lie below the hips.  Boxes are
    not clipped here (validation does).
    """
    body = _Body(keypoints, visibility, height, min_visibility, lower_visibility, person_score)
    return {part: PART_RULES[part](body) for part in parts}


# ----------------------------------------------------------------------------- the expert
def letterbox(image, size: int = INPUT_SIZE, margin: float = 1.25) -> tuple[np.ndarray, float, float, float]:
    """Fit an RGB PIL image into a ``size``² float32 canvas in [0, 1], centred with a margin.

    Returns ``(canvas, scale, offset_x, offset_y)``; an input-space point (u, v) maps back
    to image pixels as ``((u - offset_x) / scale, (v - offset_y) / scale)``.
    """
    w, h = image.size
    s = size / (max(w, h) * margin)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    resized = image.resize((nw, nh), Image.BILINEAR)
    canvas[oy : oy + nh, ox : ox + nw] = np.asarray(resized, dtype=np.float32) * (1.0 / 255.0)
    return canvas, s, float(ox), float(oy)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


@dataclass
class PoseOptions:
    """Options of the pose expert."""

    model_path: Path | None = option(None, "pose_landmark_full.tflite to run (default: $MUVA_POSE_MODEL, the cache, or fetched from the mediapipe wheel)")
    threads: int | None = option(None, "LiteRT CPU threads (default: all cores, at most 4)")
    min_visibility: float = option(0.5, "visibility threshold of face, shoulder, arm and hip keypoints")
    lower_visibility: float = option(0.25, "visibility threshold of knee, ankle and foot keypoints")
    min_person: float = option(0.5, "pose-presence score under which every part falls back (invisible)")
    margin: float = option(1.25, "letterbox margin around the crop (1.25 = MediaPipe's ROI enlargement)")


@register_expert("pose", aliases=("blazepose",), summary="BlazePose landmarks (LiteRT, CPU) → part boxes")
class PoseExpert(GroundingExpert):
    """BlazePose (LiteRT) on each crop; keypoints → boxes by :func:`keypoints_to_boxes`.

    Args:
        parts: parts to produce.
        model_path: a ``pose_landmark_full.tflite``; None = cache / pip fetch.
        threads: LiteRT CPU threads (default: all cores, at most 4).
        min_visibility: visibility threshold of face, shoulder, arm and hip keypoints.
        lower_visibility: visibility threshold of knees, ankles and feet.
        min_person: pose-presence score under which every part falls back (``invisible``).
        margin: letterbox margin around the crop (1.25 = MediaPipe's ROI enlargement).
        rules, fallback: validation thresholds and fallback boxes (see :class:`GroundingExpert`).
    """

    name = "pose"
    batch_size = 16
    Options = PoseOptions

    def __init__(
        self,
        parts: Sequence[str] = DEFAULT_PARTS,
        model_path: str | Path | None = None,
        threads: int | None = None,
        min_visibility: float = 0.5,
        lower_visibility: float = 0.25,
        min_person: float = 0.5,
        margin: float = 1.25,
        rules: ValidationRules | None = None,
        fallback: Fallback | None = None,
    ):
        super().__init__(parts, rules, fallback)
        try:
            from ai_edge_litert.interpreter import Interpreter  # lazy: optional (muva[pose])
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise PoseModelError("the pose expert needs LiteRT: pip install 'muva[pose]' (ai-edge-litert)") from exc
        self.model_path = find_pose_model(model_path)
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.min_visibility = min_visibility
        self.lower_visibility = lower_visibility
        self.min_person = min_person
        self.margin = margin
        self._interp = Interpreter(model_path=str(self.model_path), num_threads=self.threads)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        outs = {d["name"]: d for d in self._interp.get_output_details()}
        by_size = {int(np.prod(d["shape"])): d["index"] for d in outs.values()}
        if 195 not in by_size or 1 not in by_size:
            raise PoseModelError(f"{self.model_path} is not a BlazePose landmark model (outputs: {sorted(by_size)})")
        self._landmarks, self._flag = by_size[195], by_size[1]

    def describe(self) -> dict:
        return {**super().describe(), "model": str(self.model_path), "min_visibility": self.min_visibility, "lower_visibility": self.lower_visibility, "margin": self.margin}

    def keypoints(self, image) -> tuple[np.ndarray, np.ndarray, float]:
        """(33×2 keypoints in image pixels, 33 visibilities in [0, 1], pose-presence score)."""
        canvas, s, ox, oy = letterbox(image, INPUT_SIZE, self.margin)
        self._interp.set_tensor(self._input, canvas[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._landmarks).reshape(-1, 5)[:33]
        flag = float(self._interp.get_tensor(self._flag).ravel()[0])
        kps = np.stack([(raw[:, 0] - ox) / s, (raw[:, 1] - oy) / s], axis=1)
        vis = _sigmoid(raw[:, 3]) * _sigmoid(raw[:, 4])
        return kps, vis, flag

    def propose(self, images: Sequence) -> list[dict[str, Proposal]]:
        out = []
        for image in images:
            kps, vis, flag = self.keypoints(image)
            w, h = image.size
            if flag < self.min_person:
                out.append({p: Proposal(None, 0.0, "invisible") for p in self.parts})
                continue
            out.append(keypoints_to_boxes(kps, vis, w, h, self.parts, min_visibility=self.min_visibility, lower_visibility=self.lower_visibility, person_score=flag))
        return out

    def close(self) -> None:
        self._interp = None

"""Answer parsers of grounding models → boxes in the pixels of the asked image.

Every parser returns a :class:`ParsedBox` — a box ``(x0, y0, x1, y1)`` in pixels of the
original crop (x1/y1 exclusive) or ``None`` with a reason; malformed answers never raise.

=========== ================================================================ =====================
format      answer looks like                                                coordinates
=========== ================================================================ =====================
qwen2.5     ``[{"bbox_2d": [x1, y1, x2, y2], "label": "head"}]`` (JSON, maybe pixels of the model's resized
            inside a ```json fence)                                          input
rel1000     Qwen2-VL ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, Qwen3-VL   0–1000 of the image
            JSON ``bbox_2d``, InternVL ``<box>[[x1,y1,x2,y2]]</box>``
cogvlm      ``… [[x0,y0,x1,y1]]`` (several boxes: ``[[a;b]]`` or repeated)   thousandths (000–999)
florence2   post-processed ``{'<CAPTION_TO_PHRASE_GROUNDING>': {'bboxes':   pixels (dict) /
            …, 'labels': …}}`` or raw ``label<loc_a><loc_b><loc_c><loc_d>`` 0–999 bins (raw)
gdino       Grounding DINO ``{"boxes": [[cx, cy, w, h], …], "scores": …}``    normalised cx,cy,w,h
=========== ================================================================ =====================
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

Box = tuple[float, float, float, float]

FORMATS = ("qwen2.5", "rel1000", "cogvlm", "florence2", "gdino")


@dataclass(frozen=True)
class ParsedBox:
    """A parsed answer: ``box`` in crop pixels, or None and ``reason``; ``score`` in [0, 1]."""

    box: Box | None
    score: float = 1.0
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.box is not None


def _fail(why: str) -> ParsedBox:
    return ParsedBox(None, 0.0, f"unparsable: {why}")


def _num4(values: Any) -> Box | None:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        return None
    return tuple(vals)  # type: ignore[return-value]


def _combine(cands: list[tuple[Box, str | None, float]], label: str | None, combine: str) -> tuple[Box, float] | None:
    if not cands:
        return None
    if label:
        words = set(re.findall(r"[a-z]+", label.lower()))
        matching = [c for c in cands if c[1] and words & set(re.findall(r"[a-z]+", c[1].lower()))]
        if matching:
            cands = matching
    if combine == "union":
        xs0, ys0, xs1, ys1 = zip(*(c[0] for c in cands))
        return (min(xs0), min(ys0), max(xs1), max(ys1)), max(c[2] for c in cands)
    if combine == "best":
        best = max(cands, key=lambda c: c[2])
        return best[0], best[2]
    return cands[0][0], cands[0][2]


def _ordered(box: Box) -> Box:
    x0, y0, x1, y1 = box
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _scale(box: Box, sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


# ----------------------------------------------------------------------------- JSON helpers
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def _load_json_like(text: str) -> Any:
    """Parse the first JSON-ish value of a text (fenced or bare; Python literals accepted)."""
    m = _FENCE.search(text)
    candidates = [m.group(1)] if m else []
    start = min([i for i in (text.find("["), text.find("{")) if i >= 0], default=-1)
    if start >= 0:
        candidates.append(text[start:])
    for cand in candidates:
        cand = cand.strip()
        for loader in (json.loads, ast.literal_eval):
            try:
                return loader(cand)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
        # Trailing prose after the value: cut at one of the last closing brackets and retry.
        ends = [i + 1 for i, c in enumerate(cand) if c in "]}"][-32:]
        for end in reversed(ends):
            try:
                return json.loads(cand[:end])
            except ValueError:
                continue
    return None


def _json_boxes(obj: Any) -> list[tuple[Box, str | None, float]]:
    items = obj if isinstance(obj, list) else [obj]
    out = []
    for item in items:
        if isinstance(item, dict):
            raw = item.get("bbox_2d", item.get("bbox", item.get("box")))
            box = _num4(raw) if raw is not None else None
            label = item.get("label") if isinstance(item.get("label"), str) else None
            score = item.get("score", 1.0)
            score = float(score) if isinstance(score, (int, float)) and math.isfinite(score) else 1.0
        else:
            box, label, score = _num4(item) if isinstance(item, (list, tuple)) else None, None, 1.0
        if box is not None:
            out.append((_ordered(box), label, min(max(score, 0.0), 1.0)))
    return out


# ----------------------------------------------------------------------------- formats
def parse_qwen25(answer: str, image_size: tuple[int, int], input_size: tuple[int, int] | None = None, *, label: str | None = None, combine: str = "first") -> ParsedBox:
    """Qwen2.5-VL JSON boxes in pixels of the model input (``input_size`` = (W, H) the
    processor resized to; None = the crop itself) → crop pixels."""
    if not isinstance(answer, str) or not answer.strip():
        return _fail("empty answer")
    obj = _load_json_like(answer)
    if obj is None:
        return _fail("no JSON value")
    picked = _combine(_json_boxes(obj), label, combine)
    if picked is None:
        return _fail("no bbox_2d with four numbers")
    w, h = image_size
    iw, ih = input_size or image_size
    return ParsedBox(_scale(picked[0], w / iw, h / ih), picked[1])


_QWEN2_BOX = re.compile(r"<\|box_start\|>\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*,\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*<\|box_end\|>")
_QWEN2_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>\s*<\|box_start\|>")
_INTERNVL_BOX = re.compile(r"<box>\s*\[\[(.*?)\]\]\s*</box>", re.S)
_INTERNVL_REF = re.compile(r"<ref>(.*?)</ref>\s*<box>")


def parse_rel1000(answer: str, image_size: tuple[int, int], *, label: str | None = None, combine: str = "first") -> ParsedBox:
    """Boxes in 0–1000 relative coordinates (Qwen2-VL tokens, InternVL tags, Qwen3-VL JSON)."""
    if not isinstance(answer, str) or not answer.strip():
        return _fail("empty answer")
    cands: list[tuple[Box, str | None, float]] = []
    refs = _QWEN2_REF.findall(answer)
    for i, m in enumerate(_QWEN2_BOX.finditer(answer)):
        box = _num4(m.groups())
        if box:
            cands.append((_ordered(box), refs[i] if i < len(refs) else None, 1.0))
    refs = _INTERNVL_REF.findall(answer)
    for i, m in enumerate(_INTERNVL_BOX.finditer(answer)):
        for j, chunk in enumerate(re.split(r"\]\s*,\s*\[", m.group(1))):
            box = _num4(chunk.split(","))
            if box:
                cands.append((_ordered(box), refs[i] if i < len(refs) else None, 1.0))
    if not cands:
        obj = _load_json_like(answer)
        if obj is not None:
            cands = _json_boxes(obj)
    picked = _combine(cands, label, combine)
    if picked is None:
        return _fail("no 0-1000 box found")
    w, h = image_size
    return ParsedBox(_scale(picked[0], w / 1000.0, h / 1000.0), picked[1])


_COG_BOXES = re.compile(r"\[\[([\d\s,;.]+)\]\]")


def parse_cogvlm(answer: str, image_size: tuple[int, int], *, label: str | None = None, combine: str = "first") -> ParsedBox:
    """CogVLM grounding answers ``[[x0,y0,x1,y1]]`` (thousandths, ``;`` between boxes)."""
    if not isinstance(answer, str) or not answer.strip():
        return _fail("empty answer")
    cands: list[tuple[Box, str | None, float]] = []
    for m in _COG_BOXES.finditer(answer):
        for chunk in m.group(1).split(";"):
            box = _num4([v for v in chunk.split(",") if v.strip()])
            if box:
                cands.append((_ordered(box), None, 1.0))
    picked = _combine(cands, None, combine)
    if picked is None:
        return _fail("no [[x0,y0,x1,y1]] found")
    w, h = image_size
    return ParsedBox(_scale(picked[0], w / 1000.0, h / 1000.0), 1.0)


_FLORENCE_LOC = re.compile(r"([^<]*?)((?:<loc_\d+>){4})")


def parse_florence2(answer: Any, image_size: tuple[int, int], *, label: str | None = None, combine: str = "first") -> ParsedBox:
    """Florence-2 phrase grounding: post-processed dict (pixels) or raw ``<loc_k>`` text (0–999 bins)."""
    w, h = image_size
    if isinstance(answer, str):
        obj = _load_json_like(answer) if answer.lstrip().startswith("{") else None
        if obj is None:
            cands = []
            for phrase, locs in _FLORENCE_LOC.findall(answer):
                bins = [int(v) for v in re.findall(r"<loc_(\d+)>", locs)]
                # Bin k covers [k, k+1) thousandths: its centre is (k + 0.5) / 1000.
                box = ((bins[0] + 0.5) * w / 1000, (bins[1] + 0.5) * h / 1000, (bins[2] + 0.5) * w / 1000, (bins[3] + 0.5) * h / 1000)
                cands.append((_ordered(box), phrase.strip() or None, 1.0))
            picked = _combine(cands, label, combine)
            return ParsedBox(picked[0], picked[1]) if picked else _fail("no <loc_> box found")
        answer = obj
    if not isinstance(answer, dict):
        return _fail("expected a dict or <loc_> text")
    inner = answer.get("<CAPTION_TO_PHRASE_GROUNDING>", answer.get("<OPEN_VOCABULARY_DETECTION>", answer))
    if not isinstance(inner, dict):
        return _fail("no grounding result in the dict")
    boxes = inner.get("bboxes") or []
    labels = inner.get("labels") or inner.get("bboxes_labels") or []
    cands = []
    for i, raw in enumerate(boxes if isinstance(boxes, (list, tuple)) else []):
        box = _num4(raw)
        if box:
            lab = labels[i] if i < len(labels) and isinstance(labels[i], str) else None
            cands.append((_ordered(box), lab, 1.0))
    picked = _combine(cands, label, combine)
    return ParsedBox(picked[0], picked[1]) if picked else _fail("no bboxes in the dict")


def parse_gdino(answer: Any, image_size: tuple[int, int], *, label: str | None = None, combine: str = "best") -> ParsedBox:
    """Grounding DINO raw boxes: normalised (cx, cy, w, h), with optional scores / labels."""
    if isinstance(answer, str):
        answer = _load_json_like(answer)
        if answer is None:
            return _fail("no JSON value")
    if isinstance(answer, dict):
        boxes, scores, labels = answer.get("boxes"), answer.get("scores"), answer.get("labels") or answer.get("text_labels")
    else:
        boxes, scores, labels = answer, None, None
    if boxes is not None and hasattr(boxes, "tolist"):
        boxes = boxes.tolist()
    if scores is not None and hasattr(scores, "tolist"):
        scores = scores.tolist()
    if _num4(boxes) is not None:
        boxes = [boxes]
    if not isinstance(boxes, (list, tuple)):
        return _fail("no boxes")
    w, h = image_size
    cands = []
    for i, raw in enumerate(boxes):
        b = _num4(raw)
        if b is None:
            continue
        cx, cy, bw, bh = b
        if bw < 0 or bh < 0:
            continue
        score = 1.0
        if isinstance(scores, (list, tuple)) and i < len(scores) and isinstance(scores[i], (int, float)) and math.isfinite(scores[i]):
            score = min(max(float(scores[i]), 0.0), 1.0)
        lab = labels[i] if isinstance(labels, (list, tuple)) and i < len(labels) and isinstance(labels[i], str) else None
        cands.append((((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h), lab, score))
    picked = _combine(cands, label, combine)
    return ParsedBox(picked[0], picked[1]) if picked else _fail("no (cx, cy, w, h) box")


PARSERS: dict[str, Callable[..., ParsedBox]] = {
    "qwen2.5": parse_qwen25,
    "rel1000": parse_rel1000,
    "cogvlm": parse_cogvlm,
    "florence2": parse_florence2,
    "gdino": parse_gdino,
}
ALIASES = {"qwen25": "qwen2.5", "qwen2_5": "qwen2.5", "qwen2": "rel1000", "qwen3": "rel1000", "internvl": "rel1000", "florence": "florence2", "grounding-dino": "gdino"}


def parse_answer(answer: Any, fmt: str, image_size: tuple[int, int], *, input_size: tuple[int, int] | None = None, label: str | None = None, combine: str | None = None) -> ParsedBox:
    """Parse an answer of format ``fmt`` (see :data:`FORMATS`) into crop pixels; never raises on bad answers.

    ``input_size`` (W, H) is only used by ``qwen2.5`` (pixels of the resized model input).
    ``combine``: ``first`` box, ``union`` of all (label-matching) boxes, or ``best`` score;
    None = the format's default (``best`` for gdino, which gives scores; else ``first``).
    """
    key = ALIASES.get(fmt.lower(), fmt.lower())
    if key not in PARSERS:
        raise ValueError(f"unknown answer format {fmt!r}; choose from {', '.join(FORMATS)}")
    kwargs: dict = {"label": label}
    if combine is not None:
        kwargs["combine"] = combine
    try:
        if key == "qwen2.5":
            return parse_qwen25(answer, image_size, input_size, **kwargs)
        return PARSERS[key](answer, image_size, **kwargs)
    except Exception as exc:  # a parser bug must not stop a long run: record it as unparsable
        return _fail(f"{type(exc).__name__}: {exc}")


def union_of(boxes: Sequence[Box]) -> Box:
    xs0, ys0, xs1, ys1 = zip(*boxes)
    return (min(xs0), min(ys0), max(xs1), max(ys1))

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

from muva.data.parts import get_part

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
# Each format's reader turns an answer into candidates (box in crop pixels, label, score), or
# raises _Unparsable.  A single-part parse combines the candidates (label-matching first);
# a multi-part parse (parse_parts) hands each candidate to the part its label names.
Cand = tuple[Box, "str | None", float]


class _Unparsable(ValueError):
    pass


def _text(answer: Any) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise _Unparsable("empty answer")
    return answer


def _scaled(cands: list[Cand], sx: float, sy: float) -> list[Cand]:
    return [(_scale(b, sx, sy), lab, sc) for b, lab, sc in cands]


def _read_qwen25(answer: Any, image_size: tuple[int, int], input_size: tuple[int, int] | None) -> list[Cand]:
    obj = _load_json_like(_text(answer))
    if obj is None:
        raise _Unparsable("no JSON value")
    cands = _json_boxes(obj)
    if not cands:
        raise _Unparsable("no bbox_2d with four numbers")
    (w, h), (iw, ih) = image_size, input_size or image_size
    return _scaled(cands, w / iw, h / ih)


_QWEN2_BOX = re.compile(r"<\|box_start\|>\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*,\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*<\|box_end\|>")
_QWEN2_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>\s*<\|box_start\|>")
_INTERNVL_BOX = re.compile(r"<box>\s*\[\[(.*?)\]\]\s*</box>", re.S)
_INTERNVL_REF = re.compile(r"<ref>(.*?)</ref>\s*<box>")


def _read_rel1000(answer: Any, image_size: tuple[int, int], input_size=None) -> list[Cand]:
    answer = _text(answer)
    cands: list[Cand] = []
    refs = _QWEN2_REF.findall(answer)
    for i, m in enumerate(_QWEN2_BOX.finditer(answer)):
        box = _num4(m.groups())
        if box:
            cands.append((_ordered(box), refs[i] if i < len(refs) else None, 1.0))
    refs = _INTERNVL_REF.findall(answer)
    for i, m in enumerate(_INTERNVL_BOX.finditer(answer)):
        for chunk in re.split(r"\]\s*,\s*\[", m.group(1)):
            box = _num4(chunk.split(","))
            if box:
                cands.append((_ordered(box), refs[i] if i < len(refs) else None, 1.0))
    if not cands:
        obj = _load_json_like(answer)
        if obj is not None:
            cands = _json_boxes(obj)
    if not cands:
        raise _Unparsable("no 0-1000 box found")
    w, h = image_size
    return _scaled(cands, w / 1000.0, h / 1000.0)


_COG_BOXES = re.compile(r"\[\[([\d\s,;.]+)\]\]")


def _read_cogvlm(answer: Any, image_size: tuple[int, int], input_size=None) -> list[Cand]:
    """``[[x0,y0,x1,y1]]`` thousandths; a box's label is the text since the previous box
    ("the head [[…]] and the legs [[…]]")."""
    answer = _text(answer)
    cands: list[Cand] = []
    last = 0
    for m in _COG_BOXES.finditer(answer):
        label = answer[last : m.start()].strip(" ,.;:\n") or None
        last = m.end()
        for chunk in m.group(1).split(";"):
            box = _num4([v for v in chunk.split(",") if v.strip()])
            if box:
                cands.append((_ordered(box), label, 1.0))
    if not cands:
        raise _Unparsable("no [[x0,y0,x1,y1]] found")
    w, h = image_size
    return _scaled(cands, w / 1000.0, h / 1000.0)


_FLORENCE_LOC = re.compile(r"([^<]*?)((?:<loc_\d+>){4})")


def _read_florence2(answer: Any, image_size: tuple[int, int], input_size=None) -> list[Cand]:
    """Post-processed dict (pixels) or raw ``<loc_k>`` text (0–999 bins)."""
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
            if not cands:
                raise _Unparsable("no <loc_> box found")
            return cands
        answer = obj
    if not isinstance(answer, dict):
        raise _Unparsable("expected a dict or <loc_> text")
    inner = answer.get("<CAPTION_TO_PHRASE_GROUNDING>", answer.get("<OPEN_VOCABULARY_DETECTION>", answer))
    if not isinstance(inner, dict):
        raise _Unparsable("no grounding result in the dict")
    boxes = inner.get("bboxes") or []
    labels = inner.get("labels") or inner.get("bboxes_labels") or []
    cands = []
    for i, raw in enumerate(boxes if isinstance(boxes, (list, tuple)) else []):
        box = _num4(raw)
        if box:
            lab = labels[i] if i < len(labels) and isinstance(labels[i], str) else None
            cands.append((_ordered(box), lab, 1.0))
    if not cands:
        raise _Unparsable("no bboxes in the dict")
    return cands


def _read_gdino(answer: Any, image_size: tuple[int, int], input_size=None) -> list[Cand]:
    """Raw boxes: normalised (cx, cy, w, h), with optional scores / labels."""
    if isinstance(answer, str):
        answer = _load_json_like(answer)
        if answer is None:
            raise _Unparsable("no JSON value")
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
        raise _Unparsable("no boxes")
    w, h = image_size
    cands: list[Cand] = []
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
    if not cands:
        raise _Unparsable("no (cx, cy, w, h) box")
    return cands


READERS: dict[str, Callable[..., list[Cand]]] = {
    "qwen2.5": _read_qwen25,
    "rel1000": _read_rel1000,
    "cogvlm": _read_cogvlm,
    "florence2": _read_florence2,
    "gdino": _read_gdino,
}
ALIASES = {"qwen25": "qwen2.5", "qwen2_5": "qwen2.5", "qwen2": "rel1000", "qwen3": "rel1000", "internvl": "rel1000", "florence": "florence2", "grounding-dino": "gdino"}
# gdino answers carry scores: pick the best box; the others list boxes in the model's order.
_DEFAULT_COMBINE = {"gdino": "best"}


def format_key(fmt: str) -> str:
    """The canonical name of an answer format (aliases accepted); a ``ValueError`` for an unknown one."""
    key = ALIASES.get(fmt.lower(), fmt.lower())
    if key not in READERS:
        raise ValueError(f"unknown answer format {fmt!r}; choose from {', '.join(FORMATS)}")
    return key


def candidates(answer: Any, fmt: str, image_size: tuple[int, int], *, input_size: tuple[int, int] | None = None) -> list[Cand] | ParsedBox:
    """Every box of an answer as ``(box in crop pixels, label or None, score)``; a failed
    :class:`ParsedBox` with the reason when there is none.  Never raises on bad answers."""
    key = format_key(fmt)
    try:
        return READERS[key](answer, image_size, input_size)
    except _Unparsable as exc:
        return _fail(str(exc))
    except Exception as exc:  # a reader bug must not stop a long run: record it as unparsable
        return _fail(f"{type(exc).__name__}: {exc}")


def parse_answer(answer: Any, fmt: str, image_size: tuple[int, int], *, input_size: tuple[int, int] | None = None, label: str | None = None, combine: str | None = None) -> ParsedBox:
    """Parse an answer of format ``fmt`` (see :data:`FORMATS`) about one part into crop pixels; never raises on bad answers.

    ``input_size`` (W, H) is only used by ``qwen2.5`` (pixels of the resized model input).
    ``combine``: ``first`` box, ``union`` of all (label-matching) boxes, or ``best`` score;
    None = the format's default (``best`` for gdino, which gives scores; else ``first``).
    """
    key = format_key(fmt)
    cands = candidates(answer, key, image_size, input_size=input_size)
    if isinstance(cands, ParsedBox):
        return cands
    picked = _combine(cands, label, combine or _DEFAULT_COMBINE.get(key, "first"))
    return ParsedBox(picked[0], picked[1]) if picked else _fail("no box")


def _bound(fmt: str, with_input: bool = False) -> Callable[..., ParsedBox]:
    """``parse_<fmt>(answer, image_size[, input_size], label=, combine=)``: :func:`parse_answer` for one format."""

    def parse(answer: Any, image_size: tuple[int, int], input_size: tuple[int, int] | None = None, *, label: str | None = None,
              combine: str | None = None) -> ParsedBox:
        return parse_answer(answer, fmt, image_size, input_size=input_size if with_input else None, label=label, combine=combine)

    parse.__doc__ = f"One part's box from a {fmt} answer (see :func:`parse_answer`)."
    return parse


parse_qwen25 = _bound("qwen2.5", with_input=True)
parse_rel1000 = _bound("rel1000")
parse_cogvlm = _bound("cogvlm")
parse_florence2 = _bound("florence2")
parse_gdino = _bound("gdino")
PARSERS: dict[str, Callable[..., ParsedBox]] = {"qwen2.5": parse_qwen25, "rel1000": parse_rel1000, "cogvlm": parse_cogvlm,
                                               "florence2": parse_florence2, "gdino": parse_gdino}


# ----------------------------------------------------------------------------- several parts in one answer
def label_words(label: Any) -> list[str]:
    """The words of a box label: lowercase, ``_`` as a space, special tokens (``[SEP]``,
    ``<|im_end|>``) and ``##`` word-piece marks dropped, plural ``s`` cut (``Shoes`` → ``shoe``)."""
    text = re.sub(r"\[[a-z]+\]|<\|?[a-z_]+\|?>", " ", str(label).lower()).replace("##", "").replace("_", " ")
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in re.findall(r"[a-z]+", text)]


def _contains(words: list[str], term: list[str]) -> bool:
    n = len(term)
    return n > 0 and any(words[i : i + n] == term for i in range(len(words) - n + 1))


def match_part(label: str | None, terms: dict[str, Sequence[str]]) -> str | None:
    """The part whose longest term (phrase or synonym) the label contains; None when no term
    matches or two parts match equally well (``"body"`` alone names no part)."""
    if not label:
        return None
    words = label_words(label)
    best: dict[str, int] = {}
    for part, names in terms.items():
        lengths = [len(t) for t in (label_words(n) for n in names) if _contains(words, t)]
        if lengths:
            best[part] = max(lengths)
    if not best:
        return None
    top = max(best.values())
    winners = [p for p, n in best.items() if n == top]
    return winners[0] if len(winners) == 1 else None


def parse_parts(answer: Any, fmt: str, image_size: tuple[int, int], parts: Sequence[str], *,
                input_size: tuple[int, int] | None = None) -> dict[str, ParsedBox]:
    """One answer naming several parts → a box per part (crop pixels); never raises on bad answers.

    Each box goes to the part its label names (:func:`match_part` over the part records'
    phrase and synonyms); boxes without a label, or whose label names no part of ``parts``
    or several equally, are left out.  A part with several boxes takes their union when its
    record says so (left and right legs), else the best scored (the first on ties).  Parts
    no box names get a failed :class:`ParsedBox` saying so, so the caller can ask about
    them again.
    """
    records = [get_part(p) for p in parts]
    terms = {r.name: r.terms for r in records}
    cands = candidates(answer, fmt, image_size, input_size=input_size)
    if isinstance(cands, ParsedBox):
        return {p: cands for p in terms}
    named: dict[str, list[Cand]] = {p: [] for p in terms}
    for cand in cands:
        part = match_part(cand[1], terms)
        if part is not None:
            named[part].append(cand)
    out = {}
    for rec in records:
        picked = _combine(named[rec.name], None, "union" if rec.union else "best")
        out[rec.name] = ParsedBox(picked[0], picked[1]) if picked else _fail(f"no box labelled {rec.phrase!r} in the answer")
    return out


def union_of(boxes: Sequence[Box]) -> Box:
    xs0, ys0, xs1, ys1 = zip(*boxes)
    return (min(xs0), min(ys0), max(xs1), max(ys1))

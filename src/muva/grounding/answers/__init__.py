"""Grounding answers made elsewhere (any model, any environment) → a muva grounding cache.

A JSON Lines file holds the raw answers of a grounding model, one JSON object a line::

    {"image": "bounding_box_train/0001_c1s1_000151_01.jpg", "part": "head", "answer": "[[380,10,730,170]]"}
    {"image": "...", "answers": {"head": "...", "upper_body": "..."}}      several parts, one answer each
    {"image": "...", "answer": "<one answer naming every part>"}          read by parse_parts
    optional: "input_size": [W, H] (qwen2.5 pixel answers), "format": "..." (overrides the default)

``image`` (alias ``path``) is relative to the dataset root, absolute, or a file name that is
unique in the dataset; parts are muva names (``upper_body``) or phrases (``upper body``).
Other keys are ignored.  The answers are parsed (:mod:`muva.grounding.parsers`), validated and
completed per part with the body prior exactly as ``muva ground run`` does
(:func:`muva.grounding.boxes.validate_parts`), and written one entry per answered image.

Bad lines (not JSON, not an object, no image, no answer, unknown part / image / format, a bad
``input_size``) are counted per kind with their line numbers and skipped.  The same image and
part answered twice: the later line wins (the earlier is counted as superseded).  Importing
rewrites the entries of the images it answers, so importing a file again gives the same cache.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

from muva.data.parts import DEFAULT_PARTS, PART_NAMES, PARTS, check_parts
from muva.grounding import parsers
from muva.grounding.boxes import Proposal, ValidationRules, prior_boxes, validate_parts
from muva.grounding.cache import CacheEntry, GroundingCache
from muva.grounding.run import ImageSet, iter_sizes, load_image, parts_to_ground
from muva.utils.errors import MuvaError

# Kinds of bad lines, in the order they are reported.
BAD_KINDS = ("not JSON", "not an object", "no image", "no answer", "unknown part", "unknown image", "unknown format", "bad input_size")
KEEP_LOCATIONS = 20  # line numbers kept per kind (the counts are complete)


class AnswersError(MuvaError):
    """Nothing could be imported from the answer file(s)."""


# ----------------------------------------------------------------------------- names
def _norm_part(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


_PART_BY_NAME = {_norm_part(n): n for n in PART_NAMES} | {_norm_part(p.phrase): n for n, p in PARTS.items()}


def part_of(text: Any) -> str | None:
    """The muva part a name or phrase denotes (``upper_body``, ``Upper body``, ``upper-body``); None when none."""
    return _PART_BY_NAME.get(_norm_part(text)) if isinstance(text, str) else None


def default_expert_name(fmt: str) -> str:
    """``answers-<format>``: the source of the imported boxes and the default cache name."""
    return f"answers-{parsers.format_key(fmt)}"


class ImageIndex:
    """Cache keys of a dataset's images (relative to its root, as :meth:`GroundingCache.key`) and how to find them."""

    def __init__(self, images: ImageSet):
        self.root = Path(images.root)
        self.paths: dict[str, str] = {}  # key → absolute path
        for p in images.paths:
            self.paths[self._key(Path(p))] = p
        self._by_abs = {str(Path(p)): k for k, p in self.paths.items()}
        names: dict[str, str | None] = {}
        for key in self.paths:
            name = posixpath.basename(key)
            names[name] = None if name in names else key  # None: the name is not unique
        self._by_name = names

    def _key(self, p: Path) -> str:
        if p.is_absolute():
            for a, b in ((p, self.root), (p.resolve(), self.root.resolve())):
                try:
                    return a.relative_to(b).as_posix()
                except ValueError:
                    continue
        return p.as_posix()

    def lookup(self, image: str) -> tuple[str | None, bool]:
        """``(key, by_name)`` of an image string (relative, absolute or a unique file name); key None when unknown."""
        text = image.strip().replace("\\", "/")
        if not text:
            return None, False
        p = Path(text)
        if p.is_absolute():
            key = self._key(p)
            if key in self.paths:
                return key, False
            if str(p) in self._by_abs:
                return self._by_abs[str(p)], False
        else:
            key = posixpath.normpath(text)
            if key in self.paths:
                return key, False
        name = self._by_name.get(posixpath.basename(text))
        return (name, True) if name else (None, False)


# ----------------------------------------------------------------------------- reading
@dataclass
class Claim:
    """One answer for one image: of one ``part``, or (``part`` None) naming every part."""

    seq: int  # order in the input (later wins)
    where: str  # file:line
    part: str | None
    answer: Any
    fmt: str
    input_size: tuple[int, int] | None


@dataclass
class Collected:
    """What the answer files hold, validated: claims per image key, and the bad lines."""

    claims: dict[str, list[Claim]] = field(default_factory=dict)
    lines: int = 0  # non-blank lines read
    good: int = 0
    bad: dict[str, int] = field(default_factory=dict)  # kind → count
    bad_where: dict[str, list[str]] = field(default_factory=dict)  # kind → first locations
    examples: dict[str, str] = field(default_factory=dict)  # kind → the first offending value (image, part, format)
    named_parts: set[str] = field(default_factory=set)
    joint: int = 0  # lines with one answer naming every part
    by_name: int = 0  # lines whose image was found by its file name only
    no_input_size: int = 0  # qwen2.5 lines without input_size (read as crop pixels)

    def reject(self, kind: str, where: str, value: Any = None) -> None:
        self.bad[kind] = self.bad.get(kind, 0) + 1
        if value is not None:
            self.examples.setdefault(kind, str(value)[:120])
        locs = self.bad_where.setdefault(kind, [])
        if len(locs) < KEEP_LOCATIONS:
            locs.append(where)


def _input_size(value: Any) -> tuple[int, int]:
    """``[W, H]`` of positive numbers → ints; else a ``ValueError``."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) in (int, float) and math.isfinite(v) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(value)


def _line_claims(obj: dict, seq: int, where: str, default_fmt: str) -> tuple[list[Claim], str | None, Any]:
    """Claims of one parsed line, or ``([], kind, offending value)`` for a bad line (image lookup aside)."""
    fmt = default_fmt
    if obj.get("format") is not None:
        try:
            fmt = parsers.format_key(str(obj["format"]))
        except ValueError:
            return [], "unknown format", obj["format"]
    size = None
    if obj.get("input_size") is not None:
        try:
            size = _input_size(obj["input_size"])
        except ValueError:
            return [], "bad input_size", obj["input_size"]
    has_one, has_many = "answer" in obj, "answers" in obj
    if has_many:
        answers = obj["answers"]
        if has_one or "part" in obj or not isinstance(answers, dict) or not answers:
            return [], "no answer", None
        parts = [part_of(k) for k in answers]
        if None in parts:
            return [], "unknown part", next(k for k, p in zip(answers, parts) if p is None)
        return [Claim(seq, where, p, a, fmt, size) for p, a in zip(parts, answers.values())], None, None
    if not has_one:
        return [], "no answer", None
    if obj.get("part") is None:
        return [Claim(seq, where, None, obj["answer"], fmt, size)], None, None
    part = part_of(obj["part"])
    if part is None:
        return [], "unknown part", obj["part"]
    return [Claim(seq, where, part, obj["answer"], fmt, size)], None, None


def read_answers(files: Sequence[str | Path], index: ImageIndex, default_fmt: str) -> Collected:
    """Read and validate JSON Lines answer files against a dataset's images (see the module doc)."""
    default_fmt = parsers.format_key(default_fmt)
    out = Collected()
    seq = 0
    for file in files:
        with open(file, encoding="utf-8-sig", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                out.lines += 1
                seq += 1
                where = f"{Path(file).name}:{lineno}"
                try:
                    obj = json.loads(line)
                except ValueError:
                    out.reject("not JSON", where)
                    continue
                if not isinstance(obj, dict):
                    out.reject("not an object", where)
                    continue
                image = obj.get("image", obj.get("path"))
                if not isinstance(image, str) or not image.strip():
                    out.reject("no image", where)
                    continue
                claims, kind, value = _line_claims(obj, seq, where, default_fmt)
                if kind is None:
                    key, by_name = index.lookup(image)
                    kind, value = ("unknown image", image) if key is None else (None, None)
                if kind is not None:
                    out.reject(kind, where, value)
                    continue
                out.good += 1
                out.by_name += by_name
                out.no_input_size += claims[0].fmt == "qwen2.5" and claims[0].input_size is None
                out.named_parts.update(c.part for c in claims if c.part)
                out.joint += claims[0].part is None
                out.claims.setdefault(key, []).extend(claims)
    return out


def import_parts(collected: Collected, requested: Sequence[str] | None = None) -> tuple[str, ...]:
    """The parts to import: ``requested``, else the parts the lines name, with MUVA's default parts
    when some lines answer for every part at once (give ``requested`` to read shoes from those)."""
    if requested:
        return check_parts(list(requested))
    named = collected.named_parts | (set(DEFAULT_PARTS) if collected.joint else set())
    return tuple(p for p in PART_NAMES if p in named)


# ----------------------------------------------------------------------------- parsing and validation
@dataclass
class PartCounts:
    """Per part: answered (a line gave an answer), parsed (a box came out), kept (it passed validation), reasons of fallbacks."""

    answered: Counter = field(default_factory=Counter)
    parsed: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=dict)
    superseded: list[str] = field(default_factory=list)  # file:line (part) of answers a later line replaced
    ignored: Counter = field(default_factory=Counter)  # answers of parts not imported


def _winners(claims: list[Claim], parts: Sequence[str], counts: PartCounts) -> dict[str, Claim]:
    """Per part, the latest claim answering it (a per-part line or a multi-part answer)."""
    out: dict[str, Claim] = {}
    for part in parts:
        cands = sorted((c for c in claims if c.part in (part, None)), key=lambda c: c.seq)
        if cands:
            out[part] = cands[-1]
            counts.superseded.extend(f"{c.where} ({part})" for c in cands[:-1])
    for c in claims:
        if c.part is not None and c.part not in parts:
            counts.ignored[c.part] += 1
    return out


def _proposals(winners: dict[str, Claim], size: tuple[int, int]) -> dict[str, Proposal]:
    """Parse the winning answers of one image into proposals (``via``: ``single`` or ``joint``)."""
    props: dict[str, Proposal] = {}
    joint: dict[int, list[str]] = {}
    for part, c in winners.items():
        if c.part is None:
            joint.setdefault(c.seq, []).append(part)
            continue
        rec = PARTS[part]
        pb = parsers.parse_answer(c.answer, c.fmt, size, input_size=c.input_size, label=rec.phrase, combine="union" if rec.union else None)
        props[part] = Proposal(pb.box, pb.score, None if pb.ok else "unparsable", "single")
    for seq, names in joint.items():
        c = winners[names[0]]
        whole = parsers.candidates(c.answer, c.fmt, size, input_size=c.input_size)
        got = parsers.parse_parts(c.answer, c.fmt, size, names, input_size=c.input_size)
        for part in names:
            pb = got[part]
            # No box at all: unparsable; boxes, none naming this part: missing.
            why = None if pb.ok else ("unparsable" if isinstance(whole, parsers.ParsedBox) else "missing")
            props[part] = Proposal(pb.box, pb.score, why, "joint")
    return props


def build_entries(collected: Collected, parts: Sequence[str], sizes: dict[str, tuple[int, int] | str], source: str,
                  rules: ValidationRules | None = None) -> tuple[list[CacheEntry], PartCounts]:
    """One cache entry per answered image (``sizes``: key → (W, H), or the "unreadable: ..." reason).

    Images whose answers are all about parts outside ``parts`` get no entry."""
    rules = rules or ValidationRules()
    counts = PartCounts()
    entries = []
    for key in sorted(collected.claims):
        winners = _winners(collected.claims[key], parts, counts)
        if not winners:
            continue
        size = sizes[key]
        if isinstance(size, str):
            entries.append(CacheEntry(key, "unreadable", 0, 0, {}, size))
            continue
        w, h = size
        props = _proposals(winners, size)
        boxes = validate_parts(props, parts, w, h, source=source, fallback=prior_boxes(w, h, parts), rules=rules)
        for part, box in boxes.items():
            counts.answered[part] += part in winners
            counts.parsed[part] += part in props and props[part].box is not None
            if box.reason:
                counts.reasons.setdefault(part, Counter())[box.reason] += 1
            else:
                counts.kept[part] += 1
        entries.append(CacheEntry(key, "ok", w, h, boxes))
    return entries, counts


def image_sizes(keys: Iterable[str], index: ImageIndex, advance: Callable[[int], None] = lambda n: None) -> dict[str, tuple[int, int] | str]:
    """Sizes from the file headers (no decoding); for a file that cannot be read, load_image's reason."""
    keys = list(keys)
    out: dict[str, tuple[int, int] | str] = {}
    for key, size in zip(keys, iter_sizes(index.paths[k] for k in keys)):
        if size is None or size[0] < 1 or size[1] < 1:
            out[key] = load_image(index.paths[key])[1] or "unreadable: cannot read the image header"
        else:
            out[key] = (int(size[0]), int(size[1]))
        advance(1)
    return out


# ----------------------------------------------------------------------------- the whole import
@dataclass
class ImportReport:
    """What an import did (printed by the command, written by ``--report``)."""

    out: str
    expert: str
    dataset: str
    parts: list[str]
    files: list[str]
    lines: int
    good_lines: int
    bad: dict[str, int]
    bad_where: dict[str, list[str]]
    bad_examples: dict[str, str]
    dataset_images: int
    answered: int  # images with an answer for at least one imported part
    written: int
    unreadable: int
    unanswered: int  # dataset images without any answer: not written
    part_counts: dict[str, dict[str, Any]]
    superseded: int
    superseded_where: list[str]
    ignored_parts: dict[str, int]
    by_name: int
    no_input_size: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@contextmanager
def _no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n=1: None


def _describe_bad(col: Collected) -> str:
    return "; ".join(f"{k} {col.bad[k]} (at {', '.join(col.bad_where[k][:5])}{' …' if col.bad[k] > 5 else ''}"
                     f"{f', e.g. {col.examples[k]!r}' if k in col.examples else ''})" for k in BAD_KINDS if k in col.bad)


def import_answers(files: Sequence[str | Path], images: ImageSet, out: str | Path, fmt: str, *, parts: Sequence[str] | None = None,
                   expert: str | None = None, rules: ValidationRules | None = None,
                   progress: Callable[[str, int], ContextManager[Callable[[int], None]]] | None = None) -> ImportReport:
    """Import answer files of ``images``' dataset into the cache ``out``; an :class:`AnswersError` when nothing can be.

    ``parts`` default: the parts the lines name; an existing cache keeps its parts (and gains new ones).
    ``expert``: the name recorded as the boxes' source and the cache's expert (default ``answers-<fmt>``).
    ``progress``: ``(description, total) → context manager yielding advance(n)`` shown while image headers are read
    (e.g. :func:`muva.utils.progress.progress_bar`).
    """
    fmt = parsers.format_key(fmt)
    expert = expert or default_expert_name(fmt)
    index = ImageIndex(images)
    col = read_answers(files, index, fmt)
    names = ", ".join(str(f) for f in files)
    if not col.claims:
        what = f"{col.lines} line(s), none usable: {_describe_bad(col)}" if col.lines else "no answer line"
        raise AnswersError(f"nothing to import from {names}: {what}. Each line must be a JSON object with \"image\" "
                           f"(a path of {images.name}) and \"part\" + \"answer\", \"answers\" {{part: answer}} or one \"answer\" naming every part")
    job_parts = parts_to_ground(import_parts(col, parts), out)
    answered = sorted(k for k, cl in col.claims.items() if any(c.part is None or c.part in job_parts for c in cl))
    if not answered:
        raise AnswersError(f"nothing to import from {names}: its answers are about {', '.join(sorted(col.named_parts))}, "
                           f"not the parts imported ({', '.join(job_parts)}); give --parts")
    with (progress or _no_progress)(f"reading image sizes of {images.name}", len(answered)) as advance:
        sizes = image_sizes(answered, index, advance)
    entries, counts = build_entries(col, job_parts, sizes, expert, rules)
    meta = {"root": str(images.root), "parts": list(job_parts), "expert": expert, "dataset": images.name,
            "settings": {"expert": expert, "format": fmt, "files": [Path(f).name for f in files]}}
    with GroundingCache.open(out, meta=meta, widen_parts=True) as cache:
        for i in range(0, len(entries), 2000):  # one transaction per batch: a killed import resumes by running it again
            cache.add_many(entries[i : i + 2000])
    per_part = {p: {"answered": counts.answered[p], "parsed": counts.parsed[p], "kept": counts.kept[p],
                    "fallbacks": dict(counts.reasons.get(p, {}))} for p in job_parts}
    return ImportReport(
        str(out), expert, images.name, list(job_parts), [str(f) for f in files], col.lines, col.good, dict(col.bad), col.bad_where, col.examples,
        len(index.paths), len(answered), len(entries), sum(e.status != "ok" for e in entries), len(index.paths) - len(answered),
        per_part, len(counts.superseded), counts.superseded[:KEEP_LOCATIONS], dict(counts.ignored), col.by_name, col.no_input_size,
    )


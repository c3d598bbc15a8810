"""Score grounding results against ground-truth part boxes (mean IoU, share with IoU ≥ 0.5).

Ground truth is the ``parts.jsonl`` of ``muva synth``, read by
:func:`muva.data.synth.parts_file.read_parts_jsonl` into
:class:`~muva.data.synth.parts_file.PartsRecord` (path, width, height, boxes in pixels with
x1/y1 exclusive, occluded parts).  Parts listed as occluded are left out of the scores by
default (their box is not visible evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from muva.data.synth.parts_file import PartsRecord, read_parts_jsonl
from muva.grounding.boxes import box_iou
from muva.grounding.cache import GroundingCache

__all__ = ["PartScore", "read_parts_jsonl", "score_boxes", "score_cache"]


@dataclass
class PartScore:
    """Scores of one part: over all scored images and over those the expert itself boxed."""

    part: str
    n: int = 0
    iou_sum: float = 0.0
    hits: int = 0
    own_n: int = 0
    own_iou_sum: float = 0.0
    skipped_occluded: int = 0

    @property
    def mean_iou(self) -> float:
        return self.iou_sum / self.n if self.n else float("nan")

    @property
    def hit_rate(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def own_mean_iou(self) -> float:
        return self.own_iou_sum / self.own_n if self.own_n else float("nan")

    def to_dict(self) -> dict:
        return {
            "part": self.part, "n": self.n, "mean_iou": self.mean_iou, "iou>=0.5": self.hit_rate,
            "own_n": self.own_n, "own_mean_iou": self.own_mean_iou, "occluded_skipped": self.skipped_occluded,
        }


def score_boxes(
    predictions: Mapping[str, Mapping[str, object]],
    truth: Iterable[PartsRecord],
    parts: Sequence[str],
    *,
    expert: str | None = None,
    include_occluded: bool = False,
    threshold: float = 0.5,
) -> dict[str, PartScore]:
    """IoU scores per part; ``predictions``: gt path → {part: PartBox or box}.

    Images without a prediction are not scored (the caller reports how many matched).
    ``expert`` names the proposing expert, to score its own (non-fallback) boxes apart.
    """
    scores = {p: PartScore(p) for p in parts}
    for gt in truth:
        pred = predictions.get(gt.path)
        if pred is None:
            continue
        for part in parts:
            if part not in gt.boxes or part not in pred:
                continue
            if part in gt.occluded and not include_occluded:
                scores[part].skipped_occluded += 1
                continue
            pb = pred[part]
            iou = box_iou(getattr(pb, "box", pb), gt.boxes[part])
            s = scores[part]
            s.n += 1
            s.iou_sum += iou
            s.hits += iou >= threshold
            if expert is not None and getattr(pb, "source", expert) == expert:
                s.own_n += 1
                s.own_iou_sum += iou
    return scores


def score_cache(cache_path: str | Path, gt_path: str | Path, parts: Sequence[str] | None = None, *, include_occluded: bool = False) -> tuple[dict[str, PartScore], dict]:
    """Score a grounding cache against ``parts.jsonl``; returns per-part scores and match counts."""
    truth = read_parts_jsonl(gt_path)
    preds: dict[str, dict] = {}
    with GroundingCache.open(cache_path, readonly=True) as cache:
        parts = list(parts or cache.parts())
        expert = cache.meta.get("expert")
        for gt in truth:
            entry = cache.get(gt.path)
            if entry is not None and entry.status == "ok":
                preds[gt.path] = entry.boxes
    scores = score_boxes(preds, truth, parts, expert=expert, include_occluded=include_occluded)
    return scores, {"truth": len(truth), "matched": len(preds), "expert": expert}

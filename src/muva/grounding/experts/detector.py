"""The open-vocabulary detector expert: every part phrase of a batch of crops in one forward pass.

Default: Grounding DINO (``IDEA-Research/grounding-dino-base``; ``size=tiny`` selects
``IDEA-Research/grounding-dino-tiny``).  ``model=`` takes any Hugging Face id or local
folder of a Grounding DINO or MM-Grounding-DINO checkpoint (e.g.
``openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det``; the architecture is
read from the checkpoint's model type).  ``family=owlv2`` selects OWLv2
(``google/owlv2-base-patch16-ensemble``, ``size=large``: ``-large-patch14-ensemble``).

Grounding DINO reads one text prompt naming every part, lowercase, each phrase ending with
a dot (``head. upper body. legs. shoes.``, from :attr:`muva.data.parts.Part.phrase`); OWLv2
reads the phrases as separate queries.  A batch of crops (padded by the processor) goes
through the model once; ``post_process_grounded_object_detection`` gives boxes in each
crop's pixels, their scores and text labels.  :func:`assign_parts` then gives each part
the best-scoring box whose label names it — parts with :attr:`~muva.data.parts.Part.union`
(legs, shoes) the union of those boxes; a part without one is ``missing`` (the base class
falls back to the prior).

Labels are matched word by word (plural ``s`` ignored, word pieces and special tokens
dropped): a word names the one part whose phrase holds it; a word of several phrases or of
none names nothing.  A label naming one part only (``upper``, ``body``, ``upper body``)
outranks labels naming several (``head upper body``, a token span the text threshold merged).

Crops are resized by the processor (Grounding DINO: shorter side 800, longer side at most
1333 — a 64×128 crop becomes 666×1333); ``longest_edge=`` sets a smaller input for speed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from muva.data.parts import DEFAULT_PARTS, get_part
from muva.grounding.boxes import Box, Fallback, Proposal, ValidationRules
from muva.grounding.experts import detector_tiny
from muva.grounding.experts.base import GroundingExpert
from muva.grounding.experts.hub import ModelLoadError, load_pretrained, local_only
from muva.grounding.experts.spec import option, register_expert
from muva.grounding.parsers import label_words

MODEL_IDS = {
    ("gdino", "tiny"): "IDEA-Research/grounding-dino-tiny",
    ("gdino", "base"): "IDEA-Research/grounding-dino-base",
    ("owlv2", "base"): "google/owlv2-base-patch16-ensemble",
    ("owlv2", "large"): "google/owlv2-large-patch14-ensemble",
}
MM_GROUNDING_DINO = "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
# Detection score kept by default: Grounding DINO's usual box threshold; OWLv2 scores run lower.
DEFAULT_THRESHOLDS = {"gdino": 0.25, "owlv2": 0.1}
TINY_MODELS = ("tiny-random", "tiny-random-mm", "tiny-random-owlv2")
_OWL_TYPES = ("owlv2", "owlvit")


class DetectorError(ModelLoadError):
    """The open-vocabulary detector cannot be loaded or run."""


# ----------------------------------------------------------------------------- prompt and label matching
def prompt_text(parts: Sequence[str]) -> str:
    """Grounding DINO's prompt: the parts' phrases, lowercase, each ending with a dot."""
    return " ".join(f"{get_part(p).phrase.strip().lower().rstrip('.')}." for p in parts)


def label_parts(label: str, parts: Sequence[str]) -> tuple[str, ...]:
    """The parts a label names (in ``parts`` order): those owning one of its words alone."""
    owners: dict[str, set[str]] = {}
    for part in parts:
        for word in label_words(get_part(part).phrase):
            owners.setdefault(word, set()).add(part)
    named = {next(iter(owners[w])) for w in label_words(label) if len(owners.get(w, ())) == 1}
    return tuple(p for p in parts if p in named)


@dataclass(frozen=True)
class Detection:
    """One post-processed detection: a box in crop pixels, its score and its text label."""

    box: Box
    score: float
    label: str


def detections_of(result: Mapping, queries: Sequence[str] = ()) -> list[Detection]:
    """The detections of one post-processed result (``scores``, ``boxes``, ``text_labels`` or query indices ``labels``)."""
    boxes = result["boxes"].float().tolist() if hasattr(result["boxes"], "float") else list(result["boxes"])
    scores = result["scores"].float().tolist() if hasattr(result["scores"], "float") else list(result["scores"])
    labels = result.get("text_labels")
    if labels is None:  # OWL-style results without text labels: indices into the queries
        idx = result["labels"].tolist() if hasattr(result["labels"], "tolist") else result["labels"]
        labels = [queries[int(i)] for i in idx]
    return [Detection(tuple(float(v) for v in b), float(s), str(t)) for b, s, t in zip(boxes, scores, labels)]


def assign_parts(detections: Sequence[Detection], parts: Sequence[str], threshold: float) -> dict[str, Proposal]:
    """Each part's proposal from one crop's detections (see the module doc).

    Detections scoring ``threshold`` or less are ignored.  A part takes the best-scoring
    detection whose label names it alone, else the best of those naming it among others;
    a union part (:attr:`Part.union`) joins all of that group (score: the best).  No
    detection → ``Proposal(None, 0.0, "missing")``.
    """
    named = [(d, label_parts(d.label, parts)) for d in detections if d.score > threshold]
    out: dict[str, Proposal] = {}
    for part in parts:
        alone = [d for d, names in named if names == (part,)]
        shared = [d for d, names in named if part in names and len(names) > 1]
        pool = alone or shared
        if not pool:
            out[part] = Proposal(None, 0.0, "missing")
        elif get_part(part).union:
            x0, y0, x1, y1 = zip(*(d.box for d in pool))
            out[part] = Proposal((min(x0), min(y0), max(x1), max(y1)), max(d.score for d in pool))
        else:
            best = max(pool, key=lambda d: d.score)
            out[part] = Proposal(best.box, best.score)
    return out


def _check_edge(family: str, longest_edge: int) -> None:
    if family == "gdino" and 0 < longest_edge < 128:  # its coarsest feature map is 1/64 of the input
        raise DetectorError(f"-X longest_edge={longest_edge} is too small for Grounding DINO: use 0 (the processor's size) or at least 128")


# ----------------------------------------------------------------------------- the expert
@dataclass
class DetectorOptions:
    """Options of the open-vocabulary detector expert."""

    model: str | None = option(None, "Hugging Face id or local folder of a Grounding DINO / MM-Grounding-DINO / OWLv2 model "
                                     "(default: the family's model of size; tiny-random, tiny-random-mm, tiny-random-owlv2 = offline smoke tests)")
    family: Literal["gdino", "owlv2"] = option("gdino", "detector family when no model is given: gdino (Grounding DINO) or owlv2")
    size: Literal["base", "tiny", "large"] = option("base", "model size when no model is given: tiny or base (gdino), base or large (owlv2)")
    box_threshold: float | None = option(None, "smallest detection score kept (none: 0.25 for Grounding DINO, 0.1 for OWLv2)")
    text_threshold: float = option(0.25, "smallest token score for a word to enter a box's label (Grounding DINO)")
    longest_edge: int = option(0, "longer side of the model input in pixels (0: the processor's, 1333 for Grounding DINO, 960 for OWLv2)")
    batch_size: int = option(8, "crops per forward pass (also the default --batch-size)")
    device: str = option("auto", "cuda, cuda:N, cpu or auto (cuda when available)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "weights dtype (auto: float32; half precision shifts scores near the thresholds)")
    local_files_only: bool = option(False, "never reach the network (use the local Hugging Face cache)")


@register_expert("gdino", aliases=("grounding-dino", "detector"),
                 summary="an open-vocabulary detector (Grounding DINO) grounding every part phrase of a batch in one forward pass")
class DetectorExpert(GroundingExpert):
    """Ground every part of a batch of crops with one open-vocabulary detection pass.

    Args:
        parts: parts to ground (their phrases make the prompt).
        model: Hugging Face id or local folder (default: :data:`MODEL_IDS` of ``family`` and
            ``size``); ``tiny-random`` / ``tiny-random-mm`` / ``tiny-random-owlv2`` build a
            tiny random Grounding DINO / MM-Grounding-DINO / OWLv2 offline (smoke tests).
        family: ``gdino`` or ``owlv2`` (default model and threshold; a loaded model's type decides how it is run).
        size: ``tiny`` / ``base`` (gdino), ``base`` / ``large`` (owlv2).
        box_threshold: smallest detection score kept (None: :data:`DEFAULT_THRESHOLDS`).
        text_threshold: smallest token probability for a word to enter a label (Grounding DINO).
        longest_edge: longer side of the model input (0: the processor's setting).
        batch_size: crops per forward pass.
        device, dtype, local_files_only: as for the MLLM expert (dtype ``auto`` = float32).
        model_obj, processor_obj: an already built model / processor (tests, notebooks).
        rules, fallback: validation thresholds and fallback boxes (see :class:`GroundingExpert`).

    Attributes:
        calls: model forward passes so far; crops: crops proposed so far.
    """

    name = "gdino"
    batch_size = 8
    Options = DetectorOptions

    @classmethod
    def check_options(cls, options: DetectorOptions) -> None:
        if options.model is None and (options.family, options.size) not in MODEL_IDS:
            sizes = [s for f, s in MODEL_IDS if f == options.family]
            raise DetectorError(f"the {options.family} family has no size {options.size!r}; choose -X size={'|'.join(sizes)} or -X model=ID")
        for key in ("box_threshold", "text_threshold"):
            value = getattr(options, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise DetectorError(f"-X {key}={value}: a score threshold must be in [0, 1)")
        if options.batch_size < 1 or options.longest_edge < 0:
            raise DetectorError("-X batch_size must be at least 1 and -X longest_edge at least 0")

    def __init__(
        self,
        parts: Sequence[str] = DEFAULT_PARTS,
        model: str | None = None,
        family: str = "gdino",
        size: str = "base",
        box_threshold: float | None = None,
        text_threshold: float = 0.25,
        longest_edge: int = 0,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        local_files_only: bool = False,
        model_obj=None,
        processor_obj=None,
        rules: ValidationRules | None = None,
        fallback: Fallback | None = None,
    ):
        super().__init__(parts, rules, fallback)
        self.check_options(DetectorOptions(model=model, family=family, size=size, box_threshold=box_threshold,  # type: ignore[arg-type]
                                           text_threshold=text_threshold, longest_edge=longest_edge, batch_size=batch_size))
        self.model_id = model or MODEL_IDS[(family, size)]
        self.text_threshold = text_threshold
        self.longest_edge = longest_edge
        self.batch_size = batch_size
        self.calls = 0
        self.crops = 0
        self.missing: Counter[str] = Counter()
        _check_edge(family if model is None else "", longest_edge)
        if model_obj is None and self.model_id not in TINY_MODELS:  # a missing folder or model: said before torch loads
            local_only(self.model_id, local_files_only, "open-vocabulary detector", DetectorError)
        import torch  # lazy: listing experts imports this module and must not load torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        if model_obj is None or processor_obj is None:
            model_obj, processor_obj = self._load(local_files_only)
        self.model = model_obj.to(device=device, dtype=self.dtype).eval()
        self.processor = processor_obj
        self.model_type = str(getattr(self.model.config, "model_type", ""))
        self.family = "owlv2" if self.model_type in _OWL_TYPES else "gdino"
        self.box_threshold = DEFAULT_THRESHOLDS[self.family] if box_threshold is None else box_threshold
        self.queries = [get_part(p).phrase.strip().lower() for p in self.parts]
        self.prompt = prompt_text(self.parts) if self.family == "gdino" else self.queries
        _check_edge(self.family, longest_edge)

    def _load(self, local_files_only: bool):
        if self.model_id in TINY_MODELS:  # offline smoke tests of the whole path
            if self.model_id == "tiny-random-owlv2":
                return detector_tiny.build_tiny_owlv2()
            return detector_tiny.build_tiny_grounding_dino(mm=self.model_id == "tiny-random-mm")

        def load(offline: bool):
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor  # lazy: optional (muva[mllm]), heavy

            processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=offline)
            return AutoModelForZeroShotObjectDetection.from_pretrained(self.model_id, dtype=self.dtype, local_files_only=offline), processor

        return load_pretrained(self.model_id, load, local_files_only=local_files_only, what="open-vocabulary detector",
                               error=DetectorError, hint="Use -X size=tiny for a smaller model.")

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_id, "model_type": self.model_type, "family": self.family,
                "prompt": self.prompt, "box_threshold": self.box_threshold, "text_threshold": self.text_threshold,
                "longest_edge": self.longest_edge}

    # ------------------------------------------------------------------ detection
    def detect(self, images: Sequence) -> list[list[Detection]]:
        """One forward pass over ``images`` (PIL RGB): each crop's detections in its own pixels."""
        import torch  # lazy: listing experts imports this module and must not load torch

        kwargs, forward = {}, {}
        if self.longest_edge:
            kwargs["size"] = ({"shortest_edge": self.longest_edge, "longest_edge": self.longest_edge} if self.family == "gdino"
                              else {"height": self.longest_edge, "width": self.longest_edge})
            if self.family == "owlv2":
                forward["interpolate_pos_encoding"] = True  # its position embeddings are for the trained input size
        texts = [self.prompt] * len(images) if self.family == "gdino" else [list(self.queries)] * len(images)
        inputs = self.processor(images=list(images), text=texts, padding=True, return_tensors="pt", **kwargs)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs, **forward)
        self.calls += 1
        sizes = [(im.size[1], im.size[0]) for im in images]  # (H, W) of each crop: boxes come back in its pixels
        if self.family == "gdino":
            results = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold, target_sizes=sizes)
        else:  # OWLv2 pads each image to a square; its post-processing scales by the longer side
            results = self.processor.post_process_grounded_object_detection(
                outputs, threshold=self.box_threshold, target_sizes=sizes, text_labels=[list(self.queries)] * len(images))
        return [detections_of(r, self.queries) for r in results]

    def propose(self, images: Sequence) -> list[dict[str, Proposal]]:
        out: list[dict[str, Proposal]] = []
        for start in range(0, len(images), self.batch_size):
            for dets in self.detect(images[start : start + self.batch_size]):
                props = assign_parts(dets, self.parts, self.box_threshold)
                self.missing.update(p for p, prop in props.items() if prop.box is None)
                out.append(props)
        self.crops += len(images)
        return out

    def notes(self) -> list[str]:
        if not self.crops:
            return []
        lines = [f"{self.name}: {self.calls} forward pass(es) for {self.crops} crop(s) ({self.model_id})"]
        if self.missing:
            counts = ", ".join(f"{p} {self.missing[p]}" for p in self.parts if self.missing[p])
            lines.append(f"{self.name}: no box above the threshold {self.box_threshold:g} (fell back to the prior): {counts} of {self.crops} crop(s)")
        return lines

    def close(self) -> None:
        self.model = None

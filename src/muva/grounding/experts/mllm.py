"""The MLLM expert: a vision-language model (``transformers``) asked where the parts are.

Models: Qwen2.5-VL (``family=qwen2.5``, default, 7B; ``size=3b|7b|32b|72b``) or Qwen3-VL
(``family=qwen3``, 8B; ``size=2b|4b|8b|32b``), or any Hugging Face id or local folder of
an image-text-to-text model (``model=``).  Small re-ID crops (128×256 or less) are
upscaled so their height is at least ``upscale_to`` pixels before asking — MLLMs see too
few vision tokens otherwise.

How it asks (``ask=``):

* ``joint`` — one question naming every part per crop, so **one generation per crop**; the
  answer's boxes go to the parts their labels name (:func:`muva.grounding.parsers.parse_parts`).
  A part the answer does not give is asked again on its own (a second, smaller batch).
* ``each`` — one question per part (MUVA's way: ``len(parts)`` generations per crop).
* ``auto`` (default) — ``joint``, except ``each`` with ``prompt=muva`` (the paper's instruction
  is about one part).

Every box records the way it was asked (:attr:`muva.grounding.boxes.PartBox.via`:
``joint`` or ``single``), ``muva ground stats`` counts them, and the run's notes give the
generations per crop.  Prompts: :mod:`muva.grounding.experts.mllm_prompts`.

Answer format (``answer_format=``): ``auto`` picks from the model type (Qwen2.5-VL →
``qwen2.5``, pixels of the resized input recovered from ``image_grid_thw``; Qwen2-VL /
Qwen3-VL / InternVL → ``rel1000``; else ``cogvlm``) and falls back to the other formats when
the first finds no box.

Offline: a Hugging Face id is looked up in the local cache first when downloads cannot
happen (:mod:`muva.grounding.experts.hub`); absent there, :class:`MLLMError` says so at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, Sequence, get_args

from PIL import Image

from muva.data.parts import DEFAULT_PARTS, get_part
from muva.grounding.boxes import Fallback, Proposal, ValidationRules
from muva.grounding.experts.base import GroundingExpert
from muva.grounding.experts.mllm_tiny import build_tiny_qwen25vl, build_tiny_qwen3vl
from muva.grounding.experts.spec import option, register_expert
from muva.grounding.experts.hub import ModelLoadError, load_pretrained
from muva.grounding.experts.mllm_prompts import PROMPTS, joint_question, question  # noqa: F401 - question is part of this module's API
from muva.grounding.parsers import FORMATS, parse_answer, parse_parts
from muva.utils.network import network_problem  # noqa: F401 - network_problem is part of this module's API

MODEL_IDS = {
    "qwen2.5": {"3b": "Qwen/Qwen2.5-VL-3B-Instruct", "7b": "Qwen/Qwen2.5-VL-7B-Instruct", "32b": "Qwen/Qwen2.5-VL-32B-Instruct",
                "72b": "Qwen/Qwen2.5-VL-72B-Instruct"},
    "qwen3": {"2b": "Qwen/Qwen3-VL-2B-Instruct", "4b": "Qwen/Qwen3-VL-4B-Instruct", "8b": "Qwen/Qwen3-VL-8B-Instruct",
              "32b": "Qwen/Qwen3-VL-32B-Instruct"},
}
DEFAULT_SIZE = {"qwen2.5": "7b", "qwen3": "8b"}
# Tiny random models with the real architecture and processor, built offline (smoke tests, benchmarks).
TINY_MODELS = {"tiny-random": build_tiny_qwen25vl, "tiny-random-qwen3": build_tiny_qwen3vl}
# Answer length limits when max_new_tokens=0: one part's JSON entry is ~25 tokens.
_AUTO_TOKENS_SINGLE, _AUTO_TOKENS_PER_PART = 64, 40
# The answer formats a generative model can produce as text.  ``gdino`` (Grounding DINO's
# box tensors) is a detector's output, not a text answer: its parser stays for importing
# such answers (muva.grounding.parsers), but this expert does not offer it.
AnswerFormat = Literal["auto", "qwen2.5", "rel1000", "cogvlm", "florence2"]
ANSWER_FORMATS = tuple(f for f in get_args(AnswerFormat) if f != "auto")
assert set(ANSWER_FORMATS) <= set(FORMATS), "every MLLM answer format needs a parser"
_FORMAT_BY_MODEL_TYPE = {"qwen2_5_vl": "qwen2.5", "qwen2_vl": "rel1000", "qwen3_vl": "rel1000", "qwen3_vl_moe": "rel1000", "internvl": "rel1000"}


class MLLMError(ModelLoadError):
    """The vision-language model cannot be loaded or run."""


def upscale(image, upscale_to: int):
    """Enlarge an image (bicubic, aspect kept) so its height is at least ``upscale_to``."""
    w, h = image.size
    if upscale_to <= 0 or h >= upscale_to:
        return image
    f = upscale_to / h
    return image.resize((max(1, round(w * f)), upscale_to), Image.BICUBIC)


@dataclass
class MLLMOptions:
    """Options of the MLLM expert."""

    model: str | None = option(None, "Hugging Face id or local folder (default: the family's model of size; "
                               "tiny-random / tiny-random-qwen3 = offline smoke test)")
    family: Literal["qwen2.5", "qwen3"] = option("qwen2.5", "model family when no model is given: qwen2.5 (Qwen2.5-VL) or qwen3 (Qwen3-VL)")
    size: str = option("auto", "model size when no model is given: qwen2.5 3b/7b/32b/72b (auto = 7b), qwen3 2b/4b/8b/32b (auto = 8b)")
    prompt: Literal["qwen", "muva"] = option("qwen", "qwen (JSON boxes) or muva (MUVA's CogVLM-style instruction)")
    ask: Literal["auto", "joint", "each"] = option("auto", "joint = one question naming every part (one generation per crop; "
                                                   "parts it misses asked again alone), each = one per part, auto = joint (each with prompt=muva)")
    answer_format: AnswerFormat = option("auto", "how answers are parsed; auto = from the model type")
    upscale_to: int = option(448, "minimum crop height fed to the model (0 = never upscale)")
    device: str = option("auto", "cuda, cuda:N, cpu or auto (cuda when available)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = option("auto", "weights dtype (auto: bfloat16 on GPU, float32 on CPU)")
    max_new_tokens: int = option(0, f"answer length limit in tokens (0 = {_AUTO_TOKENS_SINGLE} for one part, "
                                 f"{_AUTO_TOKENS_PER_PART} per part for a joint question)")
    min_new_tokens: int = option(0, "generate at least this many tokens (speed measurements with random weights)")
    local_files_only: bool = option(False, "never reach the network (use the local Hugging Face cache)")


def model_id_for(family: str, size: str) -> str:
    """The Hugging Face id of a family's model of ``size`` (``auto`` = the family's default)."""
    if family not in MODEL_IDS:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(MODEL_IDS)}")
    size = DEFAULT_SIZE[family] if size in ("auto", "", None) else str(size).lower()
    if size not in MODEL_IDS[family]:
        raise ValueError(f"unknown size {size!r} for {family}; choose from {', '.join(MODEL_IDS[family])}, or pass model=")
    return MODEL_IDS[family][size]


@register_expert("mllm", aliases=("qwen", "vlm"),
                 summary="a vision-language model (Qwen2.5-VL, Qwen3-VL) asked about every part in one question per crop")
class MLLMExpert(GroundingExpert):
    """Ask a vision-language model for the parts' boxes.

    Args:
        parts: parts to ask for.
        model: Hugging Face id or local folder (default: the ``family``'s model of ``size``);
            ``tiny-random`` / ``tiny-random-qwen3`` build a tiny random model offline.
        family, size: see :func:`model_id_for`.
        prompt: ``qwen`` or ``muva`` (:mod:`~muva.grounding.experts.mllm_prompts`).
        ask: ``joint``, ``each`` or ``auto`` (see the module doc).
        answer_format: ``auto`` or one of :data:`ANSWER_FORMATS`.
        upscale_to: minimum crop height fed to the model (0 = never upscale).
        device: ``cuda``, ``cuda:N``, ``cpu`` or ``auto`` (cuda when available).
        dtype: ``auto`` (bfloat16 on GPU, float32 on CPU), ``bfloat16``, ``float16``, ``float32``.
        max_new_tokens: answer length limit (0 = automatic, longer for a joint question).
        min_new_tokens: shortest answer (pins the length when measuring speed with random weights).
        batch_size: crops per generate call (default 8 with ``ask=each``, 8 × parts with
            ``ask=joint``: the same sequences, so the same memory, per call).
        local_files_only: never reach the network (use the local Hugging Face cache).
        model_obj, processor_obj: an already built model / processor (tests, notebooks).
        rules, fallback: validation thresholds and fallback boxes (see :class:`GroundingExpert`).

    Attributes:
        calls: ``generate`` calls made; generations: sequences generated; crops: crops asked about.
        paths: crops per way answered — ``joint`` (one answer gave every part), ``joint+single``
            (some parts asked again), ``single`` (one question per part).
    """

    name = "mllm"
    batch_size = 8
    Options = MLLMOptions

    def __init__(
        self,
        parts: Sequence[str] = DEFAULT_PARTS,
        model: str | None = None,
        family: str = "qwen2.5",
        size: str = "auto",
        prompt: str = "qwen",
        ask: str = "auto",
        answer_format: str = "auto",
        upscale_to: int = 448,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 0,
        min_new_tokens: int = 0,
        batch_size: int | None = None,
        local_files_only: bool = False,
        model_obj=None,
        processor_obj=None,
        rules: ValidationRules | None = None,
        fallback: Fallback | None = None,
    ):
        super().__init__(parts, rules, fallback)
        if prompt not in PROMPTS:
            raise ValueError(f"unknown prompt style {prompt!r}; choose from {', '.join(PROMPTS)}")
        if ask not in ("auto", "joint", "each"):
            raise ValueError(f"unknown ask {ask!r}; choose from auto, joint, each")
        if answer_format != "auto" and answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer format {answer_format!r} is not one a vision-language model writes; choose from auto, {', '.join(ANSWER_FORMATS)}")
        self.model_id = model or model_id_for(family, size)
        self.prompt = prompt
        self.ask = ("each" if prompt == "muva" else "joint") if ask == "auto" else ask
        if len(self.parts) == 1:
            self.ask = "each"
        self.upscale_to = upscale_to
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        # Crops per call.  Default: 8 crops' worth of sequences — 8 with ask=each (8 x parts
        # sequences), 8 x parts with ask=joint (one sequence each): the same memory per call.
        self.batch_size = batch_size or (type(self).batch_size * (len(self.parts) if self.ask == "joint" else 1))
        self.calls = self.generations = self.crops = 0
        self.paths: Counter = Counter()
        import torch  # lazy: listing experts imports this module and must not load torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if model_obj is None or processor_obj is None:
            model_obj, processor_obj = self._load(dtype, local_files_only)
        self.model = model_obj.to(device).eval()
        self.processor = processor_obj
        tok = getattr(processor_obj, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only batched generation
        model_type = getattr(self.model.config, "model_type", "")
        self.answer_format = _FORMAT_BY_MODEL_TYPE.get(model_type, "cogvlm") if answer_format == "auto" else answer_format
        if prompt == "muva" and answer_format == "auto":
            self.answer_format = "cogvlm"
        self._fallback_formats = [f for f in ("qwen2.5", "rel1000", "cogvlm") if f != self.answer_format] if answer_format == "auto" else []

    def _load(self, dtype: str, local_files_only: bool):
        import torch  # lazy: listing experts imports this module and must not load torch

        if self.model_id in TINY_MODELS:  # offline smoke test of the whole path
            return TINY_MODELS[self.model_id]()
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)

        def load(offline: bool):
            from transformers import AutoModelForImageTextToText, AutoProcessor  # lazy: optional (muva[mllm]), heavy

            processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=offline)
            return AutoModelForImageTextToText.from_pretrained(self.model_id, dtype=torch_dtype, local_files_only=offline), processor

        return load_pretrained(self.model_id, load, local_files_only=local_files_only, what="vision-language model",
                               error=MLLMError, hint="Use -X size=3b (or a smaller size of the family) for a smaller GPU.")

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_id, "prompt": self.prompt, "ask": self.ask, "answer_format": self.answer_format,
                "upscale_to": self.upscale_to}

    # ------------------------------------------------------------------ generation
    def _token_limit(self, parts: int) -> int:
        if self.max_new_tokens > 0:
            return self.max_new_tokens
        return _AUTO_TOKENS_SINGLE if parts == 1 else _AUTO_TOKENS_PER_PART * parts

    def generate(self, images: Sequence, texts: Sequence[str], max_new_tokens: int | None = None) -> tuple[list[str], list[tuple[int, int]]]:
        """Ask ``texts[i]`` about ``images[i]`` in one batched, left-padded ``generate``; returns
        the answers and the model-input sizes (W, H)."""
        import torch  # lazy: listing experts imports this module and must not load torch

        conversations = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]
        prompts = [self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        inputs = self.processor(text=prompts, images=list(images), padding=True, return_tensors="pt").to(self.device)
        grid = inputs.get("image_grid_thw")
        if grid is not None:
            patch = getattr(getattr(self.processor, "image_processor", None), "patch_size", 14) or 14
            sizes = [(int(g[2]) * patch, int(g[1]) * patch) for g in grid.tolist()]
        else:
            sizes = [im.size for im in images]
        limit = max_new_tokens or self._token_limit(1)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=limit, min_new_tokens=min(self.min_new_tokens, limit), do_sample=False)
        self.calls += 1
        self.generations += len(texts)
        new = out[:, inputs["input_ids"].shape[1] :]
        decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        return decode(new, skip_special_tokens=True), sizes

    def _formats(self) -> list[str]:
        return [self.answer_format, *self._fallback_formats]

    def parse(self, answer: str, part: str, crop_size: tuple[int, int], input_size: tuple[int, int]) -> Proposal:
        """An answer about one part → a proposal in crop pixels (tries the fallback formats on failure)."""
        record = get_part(part)
        # Parts that may come as several boxes (left / right) are joined (Part.union).
        combine = "union" if record.union else "first"
        for fmt in self._formats():
            parsed = parse_answer(answer, fmt, crop_size, input_size=input_size, label=record.phrase, combine=combine)
            if parsed.ok:
                return Proposal(parsed.box, parsed.score, via="single")
        return Proposal(None, 0.0, "unparsable", via="single")

    def parse_joint(self, answer: str, crop_size: tuple[int, int], input_size: tuple[int, int]) -> dict[str, Proposal]:
        """An answer about every part → the proposals of the parts it names (each part from the
        first format that finds it); parts it does not name are absent."""
        found: dict[str, Proposal] = {}
        for fmt in self._formats():
            for part, parsed in parse_parts(answer, fmt, crop_size, self.parts, input_size=input_size).items():
                if parsed.ok and part not in found:
                    found[part] = Proposal(parsed.box, parsed.score, via="joint")
            if len(found) == len(self.parts):
                break
        return found

    def propose(self, images: Sequence) -> list[dict[str, Proposal]]:
        asked = [upscale(im, self.upscale_to) for im in images]
        out: list[dict[str, Proposal]] = [{} for _ in images]
        answers: list[str] = []
        if self.ask == "joint":
            texts = [joint_question(self.parts, self.prompt)] * len(images)
            joint, sizes = self.generate(asked, texts, self._token_limit(len(self.parts)))
            answers += joint
            for i, (answer, size) in enumerate(zip(joint, sizes)):
                out[i] = self.parse_joint(answer, images[i].size, size)
        pending = [(i, part) for i in range(len(images)) for part in self.parts if part not in out[i]]
        # The parts a joint answer missed (at most as many sequences per call as the joint call
        # had), or every part when asking about each.
        chunk = max(self.batch_size, len(images)) if self.ask == "joint" else len(pending)
        for start in range(0, len(pending), max(1, chunk)):
            todo = pending[start : start + chunk]
            single, sizes = self.generate([asked[i] for i, _ in todo], [question(p, self.prompt) for _, p in todo])
            answers += single
            for (i, part), answer, size in zip(todo, single, sizes):
                out[i][part] = self.parse(answer, part, images[i].size, size)
        again = {i for i, _ in pending}
        for i in range(len(images)):
            self.paths["single" if self.ask == "each" else "joint+single" if i in again else "joint"] += 1
        self.crops += len(images)
        self.last_answers = answers
        return out

    def notes(self) -> list[str]:
        if not self.crops:
            return []
        line = f"{self.generations / self.crops:.2f} generations per crop ({self.generations:,} for {self.crops:,} crops in {self.calls:,} batched calls)"
        if self.ask == "joint":
            line += (f"; one joint answer gave every part for {self.paths['joint']:,} crops, "
                     f"{self.paths['joint+single']:,} had parts asked again alone")
        return [line]

    def close(self) -> None:
        self.model = None

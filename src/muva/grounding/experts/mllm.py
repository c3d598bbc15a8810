"""The MLLM expert: a vision-language model (``transformers``) asked where each part is.

Default: Qwen2.5-VL-7B-Instruct (``size="3b"`` selects the 3B model; ``model=`` any
Hugging Face id or local folder of an image-text-to-text model).  For every crop and
every part one question is asked; the answer is parsed by :mod:`muva.grounding.parsers`
and mapped back to crop pixels.  Small re-ID crops (128×256 or less) are upscaled so
their height is at least ``upscale_to`` pixels before asking — MLLMs see too few vision
tokens otherwise.

Prompts (``prompt=``):

* ``qwen`` — "Locate the <part> of the person in the image and output its bbox
  coordinates in JSON format." (Qwen2.5-VL's grounding style; answers in pixels of the
  processor's resized input, recovered from ``image_grid_thw``);
* ``muva`` — MUVA's instruction, "Guide me to the location of the <part> of the person
  within the image by providing its bounding boxes" (CogVLM grounding style, answers
  ``[[x0,y0,x1,y1]]`` in thousandths).

Answer format (``answer_format=``): ``auto`` picks from the model type (Qwen2.5-VL →
``qwen2.5``; Qwen2-VL / Qwen3-VL / InternVL → ``rel1000``; else ``cogvlm``) and falls
back to the other formats when the first finds no box.

Offline: a Hugging Face id is looked up in the local cache first when downloads cannot
happen (``MUVA_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set, or the hub
does not accept a TCP connection within a second or two); absent there, :class:`MLLMError`
says so at once instead of the hub retrying every file for minutes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, get_args

from PIL import Image

from muva.data.parts import DEFAULT_PARTS, get_part
from muva.grounding.boxes import Fallback, Proposal, ValidationRules
from muva.grounding.experts.base import GroundingExpert
from muva.grounding.experts.mllm_tiny import build_tiny_qwen25vl
from muva.grounding.experts.spec import option, register_expert
from muva.grounding.parsers import FORMATS, parse_answer
from muva.utils.errors import MuvaError
from muva.utils.network import hub_offline, network_problem  # noqa: F401 - network_problem is part of this module's API

MODEL_IDS = {"7b": "Qwen/Qwen2.5-VL-7B-Instruct", "3b": "Qwen/Qwen2.5-VL-3B-Instruct"}
PROMPTS = {
    "qwen": "Locate the {phrase} of the person in the image and output its bbox coordinates in JSON format.",
    "muva": "Guide me to the location of the {phrase} of the person within the image by providing its bounding boxes",
}
# The answer formats a generative model can produce as text.  ``gdino`` (Grounding DINO's
# box tensors) is a detector's output, not a text answer: its parser stays for importing
# such answers (muva.grounding.parsers), but this expert does not offer it.
AnswerFormat = Literal["auto", "qwen2.5", "rel1000", "cogvlm", "florence2"]
ANSWER_FORMATS = tuple(f for f in get_args(AnswerFormat) if f != "auto")
assert set(ANSWER_FORMATS) <= set(FORMATS), "every MLLM answer format needs a parser"
_FORMAT_BY_MODEL_TYPE = {"qwen2_5_vl": "qwen2.5", "qwen2_vl": "rel1000", "qwen3_vl": "rel1000", "qwen3_vl_moe": "rel1000", "internvl": "rel1000"}


class MLLMError(MuvaError, RuntimeError):
    """The vision-language model cannot be loaded or run."""


def _in_hub_cache(model_id: str) -> bool:
    """Whether the Hugging Face cache holds this model (its config.json; the weights are checked on loading)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: comes with transformers (muva[mllm])
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str) and os.path.isfile(found)


def _fix(model_id: str) -> str:
    return (f"Fix: download it on a machine with internet (`hf download {model_id}`) and copy its Hugging Face cache "
            "folder here (HF_HOME); or pass a local copy with --model /path/to/folder; or use an expert that needs no "
            "model download: -e pose or -e prior.")


def question(part: str, prompt: str = "qwen") -> str:
    """The question asked for one part."""
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt style {prompt!r}; choose from {', '.join(PROMPTS)}")
    return PROMPTS[prompt].format(phrase=get_part(part).phrase)


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

    model: str | None = option(None, "Hugging Face id or local folder (default: Qwen2.5-VL of size; tiny-random = offline smoke test)")
    size: Literal["7b", "3b"] = option("7b", "Qwen2.5-VL size when no model is given")
    prompt: Literal["qwen", "muva"] = option("qwen", "qwen (JSON pixel boxes) or muva (MUVA's CogVLM-style instruction)")
    answer_format: AnswerFormat = option("auto", "how answers are parsed; auto = from the model type")
    upscale_to: int = option(448, "minimum crop height fed to the model (0 = never upscale)")
    device: str = option("auto", "cuda, cpu or auto (cuda when available)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = option("auto", "weights dtype (auto: bfloat16 on GPU, float32 on CPU)")
    max_new_tokens: int = option(64, "answer length limit in tokens")
    local_files_only: bool = option(False, "never reach the network (use the local Hugging Face cache)")


@register_expert("mllm", aliases=("qwen", "vlm"), summary="a vision-language model (Qwen2.5-VL) asked one question per part")
class MLLMExpert(GroundingExpert):
    """Ask a vision-language model for each part's box.

    Args:
        parts: parts to ask for.
        model: Hugging Face id or local folder (default: Qwen2.5-VL of ``size``);
            ``tiny-random`` builds a tiny random Qwen2.5-VL offline (smoke tests).
        size: ``7b`` (default) or ``3b``.
        prompt: ``qwen`` or ``muva`` (see the module doc).
        answer_format: ``auto`` or one of :data:`ANSWER_FORMATS` (the text formats of
            :data:`muva.grounding.parsers.FORMATS`).
        upscale_to: minimum crop height fed to the model (0 = never upscale).
        device: ``cuda``, ``cpu`` or ``auto`` (cuda when available).
        dtype: ``auto`` (bfloat16 on GPU, float32 on CPU), ``bfloat16``, ``float16``, ``float32``.
        max_new_tokens: answer length limit.
        batch_size: crops per generate call (each crop asks len(parts) questions).
        local_files_only: never reach the network (use the local Hugging Face cache).
        model_obj, processor_obj: an already built model / processor (tests, notebooks).
        rules, fallback: validation thresholds and fallback boxes (see :class:`GroundingExpert`).
    """

    name = "mllm"
    batch_size = 4
    Options = MLLMOptions

    def __init__(
        self,
        parts: Sequence[str] = DEFAULT_PARTS,
        model: str | None = None,
        size: str = "7b",
        prompt: str = "qwen",
        answer_format: str = "auto",
        upscale_to: int = 448,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 64,
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
        if answer_format != "auto" and answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer format {answer_format!r} is not one a vision-language model writes; choose from auto, {', '.join(ANSWER_FORMATS)}")
        if size not in MODEL_IDS and model is None:
            raise ValueError(f"unknown size {size!r}; choose from {', '.join(MODEL_IDS)} or pass model=")
        self.model_id = model or MODEL_IDS[size]
        self.prompt = prompt
        self.upscale_to = upscale_to
        self.max_new_tokens = max_new_tokens
        if batch_size:
            self.batch_size = batch_size
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

        if self.model_id == "tiny-random":  # offline smoke test of the whole path
            return build_tiny_qwen25vl()
        local = Path(self.model_id).expanduser()
        if local.exists() or self.model_id.startswith(("/", "./", "../", "~")) or self.model_id.count("/") > 1:
            if not (local / "config.json").is_file():
                raise MLLMError(f"--model {self.model_id}: no model folder there (expected a folder holding config.json "
                                "and the weights, as `hf download` or save_pretrained writes it)")
            local_files_only = True
        elif not local_files_only:
            problem = network_problem()
            if problem:
                if not _in_hub_cache(self.model_id):
                    raise MLLMError(f"the vision-language model {self.model_id} is not in the local Hugging Face cache "
                                    f"and {problem}, so it cannot be downloaded. {_fix(self.model_id)}")
                local_files_only = True  # in the cache: read it from there without asking the hub
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor  # lazy: optional (muva[mllm]), heavy
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MLLMError("the mllm expert needs transformers: pip install 'muva[mllm]'") from exc
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        try:
            with hub_offline() if local_files_only else contextlib.nullcontext():
                processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=local_files_only)
                model = AutoModelForImageTextToText.from_pretrained(self.model_id, dtype=torch_dtype, local_files_only=local_files_only)
        except Exception as exc:  # noqa: BLE001 - hub, file and config errors come in many types
            raise MLLMError(
                f"cannot load {self.model_id!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}). "
                f"{_fix(self.model_id)} Use --size 3b for a smaller GPU."
            ) from exc
        return model, processor

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_id, "prompt": self.prompt, "answer_format": self.answer_format, "upscale_to": self.upscale_to}

    # ------------------------------------------------------------------ generation
    def generate(self, images: Sequence, texts: Sequence[str]) -> tuple[list[str], list[tuple[int, int]]]:
        """Ask ``texts[i]`` about ``images[i]``; returns answers and the model-input sizes (W, H)."""
        import torch  # lazy: listing experts imports this module and must not load torch

        conversations = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]
        prompts = [self.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        inputs = self.processor(text=prompts, images=list(images), padding=True, return_tensors="pt").to(self.device)
        sizes: list[tuple[int, int]] = []
        grid = inputs.get("image_grid_thw")
        if grid is not None:
            patch = getattr(getattr(self.processor, "image_processor", None), "patch_size", 14) or 14
            sizes = [(int(g[2]) * patch, int(g[1]) * patch) for g in grid.tolist()]
        else:
            sizes = [im.size for im in images]
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        return decode(new, skip_special_tokens=True), sizes

    def parse(self, answer: str, part: str, crop_size: tuple[int, int], input_size: tuple[int, int]) -> Proposal:
        """An answer → a proposal in crop pixels (tries the fallback formats on failure)."""
        record = get_part(part)
        # Parts that may come as several boxes (left / right) are joined (Part.union).
        combine = "union" if record.union else "first"
        label = record.phrase
        for fmt in [self.answer_format, *self._fallback_formats]:
            parsed = parse_answer(answer, fmt, crop_size, input_size=input_size, label=label, combine=combine)
            if parsed.ok:
                return Proposal(parsed.box, parsed.score)
        return Proposal(None, 0.0, "unparsable")

    def propose(self, images: Sequence) -> list[dict[str, Proposal]]:
        asked = [upscale(im, self.upscale_to) for im in images]
        pairs = [(i, part) for i in range(len(images)) for part in self.parts]
        answers, sizes = self.generate([asked[i] for i, _ in pairs], [question(p, self.prompt) for _, p in pairs])
        self.last_answers = answers
        out: list[dict[str, Proposal]] = [{} for _ in images]
        for (i, part), answer, size in zip(pairs, answers, sizes):
            out[i][part] = self.parse(answer, part, images[i].size, size)
        return out

    def close(self) -> None:
        self.model = None

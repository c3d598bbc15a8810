"""The questions the MLLM expert asks: one part at a time, or every part in one question.

Two styles (``prompt=``):

* ``qwen`` — Qwen-VL's grounding wording: "Locate the <part> of the person in the image and
  output its bbox coordinates in JSON format."  Asked about several parts at once it asks
  for one labelled JSON entry per part, which is how Qwen-VL lists several objects
  (``[{"bbox_2d": [...], "label": "head"}, ...]``).
* ``muva`` — MUVA's instruction to CogVLM, per part: "Guide me to the location of the
  <part> of the person within the image by providing its bounding boxes".

The part words come from the part records (:attr:`muva.data.parts.Part.phrase`).
"""

from __future__ import annotations

from typing import Sequence

from muva.data.parts import get_part

PROMPTS = {
    "qwen": "Locate the {phrase} of the person in the image and output its bbox coordinates in JSON format.",
    "muva": "Guide me to the location of the {phrase} of the person within the image by providing its bounding boxes",
}
JOINT_PROMPTS = {
    "qwen": "Locate the {phrases} of the person in the image and output the bbox coordinates of each in JSON format, "
            "one entry per part labelled {labels}.",
    "muva": "Guide me to the locations of the {phrases} of the person within the image by providing their bounding boxes, "
            "each after its name",
}
assert set(PROMPTS) == set(JOINT_PROMPTS), "every prompt style asks about one part and about several"


def _check(prompt: str) -> None:
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt style {prompt!r}; choose from {', '.join(PROMPTS)}")


def _listing(words: Sequence[str], article: str = "") -> str:
    items = [f"{article}{w}" for w in words]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def question(part: str, prompt: str = "qwen") -> str:
    """The question asked about one part."""
    _check(prompt)
    return PROMPTS[prompt].format(phrase=get_part(part).phrase)


def joint_question(parts: Sequence[str], prompt: str = "qwen") -> str:
    """One question about every part of ``parts`` (their boxes labelled with the part phrases)."""
    _check(prompt)
    phrases = [get_part(p).phrase for p in parts]
    return JOINT_PROMPTS[prompt].format(phrases=_listing(phrases, "the "), labels=_listing(phrases))

"""``bench_grounding.py --models``: throughput of the transformers-backed grounding experts.

Generation is pinned to a real answer's length (``min_new_tokens = max_new_tokens``), so
random weights cost what real ones would.  Lengths, counted with Qwen's tokenizer rules
(every digit is one token): one part's answer ```` ```json\\n[{"bbox_2d": [84, 9, 140, 72],
"label": "head"}]\\n``` ```` ≈ 36 tokens; the three parts in one answer ≈ 96.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test_grounding_common: drawn person crops

from muva.data.datasets.official import OFFICIAL
from muva.grounding.experts import build_expert
from muva.grounding.experts.mllm import upscale
from muva.grounding.experts.mllm_prompts import joint_question, question

SINGLE_TOKENS, JOINT_TOKENS = 36, 96
MSMT17 = sum(OFFICIAL["msmt17/train+val"][s][1] for s in ("train", "query", "gallery"))


def _qwen25_config(size: str, tokenizer):
    """Qwen2.5-VL-3B / 7B architecture (their published config.json), with the tiny tokenizer's special ids."""
    from transformers import Qwen2_5_VLConfig  # lazy: optional (muva[mllm])

    from muva.grounding.experts.mllm_tiny import _token_ids

    text = {"3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       vocab_size=151936, tie_word_embeddings=True),
            "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       vocab_size=152064)}[size]
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=text["hidden_size"],
                  fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    text["max_position_embeddings"] = 128000
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_token_ids(tokenizer))


def _full_mllm(size: str, device: str):
    import torch  # lazy
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor  # lazy: optional

    from muva.grounding.experts.mllm_tiny import CHAT_TEMPLATE, _tokenizer

    tok = _tokenizer()
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok, chat_template=CHAT_TEMPLATE)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(_qwen25_config(size, tok), dtype=torch.bfloat16)
    return model.eval(), processor


def _full_gdino(device: str):
    """Grounding DINO-T's architecture (transformers' default GroundingDinoConfig: Swin-T + BERT-base,
    900 queries) with random weights, the real image processor (800 / 1333) and the tiny vocabulary."""
    import torch  # lazy
    from transformers import BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection  # lazy: optional
    from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor  # lazy: optional

    from muva.grounding.experts.detector_tiny import tiny_vocab

    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(),
                                       tokenizer=BertTokenizer(vocab=tiny_vocab(), do_lower_case=True))
    with torch.device(device):
        model = GroundingDinoForObjectDetection(GroundingDinoConfig())
    return model.eval(), processor


def _time_generation(expert, crops, batch: int, joint: bool) -> tuple[float, int]:
    """Seconds for every batch's generation (after one warm-up batch) and the sequences generated."""
    import torch  # lazy

    parts = expert.parts

    def one(images):
        asked = [upscale(im, expert.upscale_to) for im in images]
        if joint:
            return expert.generate(asked, [joint_question(parts)] * len(asked), JOINT_TOKENS)
        pairs = [(im, p) for im in asked for p in parts]
        return expert.generate([im for im, _ in pairs], [question(p) for _, p in pairs], SINGLE_TOKENS)

    one(crops[:batch])
    sync = torch.cuda.synchronize if expert.device.startswith("cuda") else (lambda: None)
    sync()
    before = expert.generations
    t0 = time.perf_counter()
    for i in range(0, len(crops), batch):
        one(crops[i : i + batch])
    sync()
    return time.perf_counter() - t0, expert.generations - before


def _time_detector(expert, crops, batch: int) -> tuple[float, int]:
    import torch  # lazy

    expert.ground(crops[:batch])
    sync = torch.cuda.synchronize if str(getattr(expert, "device", "cpu")).startswith("cuda") else (lambda: None)
    sync()
    before = expert.calls
    t0 = time.perf_counter()
    for i in range(0, len(crops), batch):
        expert.ground(crops[i : i + batch])
    sync()
    return time.perf_counter() - t0, expert.calls - before


def bench_models(n: int, batch: int, device: str | None, full: str) -> None:
    import torch  # lazy

    from test_grounding_common import person_image  # noqa: E402 - tests/ put on sys.path above

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    full_models = [m for m in (full.split(",") if full else (["qwen2.5-3b", "qwen2.5-7b", "gdino-tiny"] if device.startswith("cuda") else [])) if m]
    crops = [person_image(128, 256, seed=i) for i in range(n)]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{n} drawn 128x256 crops, batches of {batch}, on {name}; answers pinned to {SINGLE_TOKENS} tokens "
          f"(one part) / {JOINT_TOKENS} (three parts)\n")
    if not device.startswith("cuda"):
        print("(no CUDA device: full-size models only with --full; the projected hours are for this CPU)\n")
    print("| model | plan | crops/s | generations (forward passes) per crop | speed-up vs ask=each | MSMT17, hours |")
    print("|---|---|---:|---:|---:|---:|")

    def row(model: str, plan: str, rate: float, per_crop: float, up: float | None = None) -> None:
        print(f"| {model} | {plan} | {rate:.2f} | {per_crop:.3f} | {'' if up is None else f'{up:.2f}x'} | {MSMT17 / rate / 3600:.2f} |", flush=True)

    mllms = [("tiny Qwen2.5-VL", dict(model="tiny-random")), ("tiny Qwen3-VL", dict(model="tiny-random-qwen3"))]
    for size in ("3b", "7b"):
        if f"qwen2.5-{size}" in full_models:
            mllms.append((f"Qwen2.5-VL-{size.upper()} (random)", dict(model_size=size)))
    for label, kw in mllms:
        if "model_size" in kw:
            model, processor = _full_mllm(kw["model_size"], device)
            expert = build_expert("mllm", model_obj=model, processor_obj=processor, device=device, batch_size=batch)
        else:
            expert = build_expert("mllm", device=device, batch_size=batch, **kw)
        expert.min_new_tokens = JOINT_TOKENS  # generate() caps it at each call's max_new_tokens
        wide = batch * len(expert.parts)  # as many sequences per call as ask=each runs
        each_s, each_g = _time_generation(expert, crops, batch, joint=False)
        joint_s, joint_g = _time_generation(expert, crops, batch, joint=True)
        wide_s, wide_g = _time_generation(expert, crops, wide, joint=True)
        row(label, f"ask=each: one question per part, {batch} crops = {wide} sequences per call", n / each_s, each_g / n, 1.0)
        row(label, f"ask=joint: one question per crop, {batch} crops = {batch} sequences per call", n / joint_s, joint_g / n, each_s / joint_s)
        row(label, f"ask=joint, {wide} crops = {wide} sequences per call (same memory as ask=each)", n / wide_s, wide_g / n, each_s / wide_s)
        expert.close()
        del expert
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    detectors = [("tiny Grounding DINO", dict(model="tiny-random"))]
    if "gdino-tiny" in full_models:
        detectors.append(("Grounding DINO-T (random)", dict(full=True)))
    for label, kw in detectors:
        try:
            if kw.pop("full", False):
                model, processor = _full_gdino(device)
                kw = dict(model_obj=model, processor_obj=processor)
            expert = build_expert("gdino", device=device, batch_size=batch, **kw)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other rows
            print(f"{label}: not measured ({type(exc).__name__}: {exc})")
            continue
        secs, calls = _time_detector(expert, crops, batch)
        row(label, "all phrases, one forward pass per batch", n / secs, calls / n)
    print(f"\nMSMT17 = {MSMT17:,} crops (train + query + gallery); hours = crops / (crops/s) for one process on this device.")

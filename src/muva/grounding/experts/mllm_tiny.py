"""Tiny, randomly initialised Qwen2.5-VL and Qwen3-VL models (model + processor + tokenizer), built offline.

It has the real architecture (vision tower with window attention, patch merger, M-RoPE
decoder) and the real processor (``Qwen2VLImageProcessor`` + ``Qwen2_5_VLProcessor``),
with a byte-level BPE tokenizer trained on a few sentences and a minimal chat template,
so the whole MLLM expert — chat template, image tokens, batched ``generate``, decoding,
parsing, fallback — runs on a CPU in a second without downloading anything.  Its
answers are garbage, which exercises the failure handling.

Used by the tests, the benchmark and by ``muva ground run ... -e mllm -X model=tiny-random``
(``tiny-random-qwen3`` for Qwen3-VL).
"""

from __future__ import annotations

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "Locate the head of the person in the image and output its bbox coordinates in JSON format.",
    "Guide me to the location of the upper body of the person within the image by providing its bounding boxes",
    'The legs and shoes: [{"bbox_2d": [12, 40, 96, 230], "label": "legs"}] [[120,300,860,990]] 0123456789',
    "system user assistant",
]


def _tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences, with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # lazy: optional (muva[mllm])
    from transformers import PreTrainedTokenizerFast  # lazy: optional (muva[mllm]), heavy

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.padding_side = "left"
    return tokenizer


def _video_processor(name: str):
    try:  # absent from older transformers: the processor builds without one
        import transformers  # lazy: optional (muva[mllm]), heavy

        return getattr(transformers, name)()
    except Exception:
        return None


def _text_config(tokenizer, ids: list[int], **extra) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0], **extra)


def _token_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    return dict(image_token_id=ids[5], video_token_id=ids[6], vision_start_token_id=ids[3], vision_end_token_id=ids[4])


def build_tiny_qwen25vl(seed: int = 0, max_pixels: int = 224 * 224):
    """Return ``(model, processor)`` of a ~0.1 M-parameter random Qwen2.5-VL."""
    import torch  # lazy: listing experts imports this package's modules and must not load torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor  # lazy: optional, heavy

    tokenizer = _tokenizer()
    image = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=_video_processor("Qwen2VLVideoProcessor"),
                                    chat_template=CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(tokenizer, ids, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[1], window_size=56),
        **_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval(), processor


def build_tiny_qwen3vl(seed: int = 0, max_pixels: int = 256 * 256):
    """Return ``(model, processor)`` of a tiny random Qwen3-VL (16-pixel patches, DeepStack, 0–1000 boxes)."""
    import torch  # lazy: listing experts imports this package's modules and must not load torch
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor  # lazy: optional, heavy

    tokenizer = _tokenizer()
    image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=64 * 64, max_pixels=max_pixels,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=_video_processor("Qwen3VLVideoProcessor"),
                                 chat_template=CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    config = Qwen3VLConfig(
        text_config=_text_config(tokenizer, ids, head_dim=8,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
                           spatial_merge_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        **_token_ids(tokenizer),
    )
    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config).eval(), processor

"""A tiny, randomly initialised Qwen2.5-VL (model + processor + tokenizer), built offline.

It has the real architecture (vision tower with window attention, patch merger, M-RoPE
decoder) and the real processor (``Qwen2VLImageProcessor`` + ``Qwen2_5_VLProcessor``),
with a byte-level BPE tokenizer trained on a few sentences and a minimal chat template,
so the whole MLLM expert — chat template, image tokens, batched ``generate``, decoding,
parsing, fallback — runs on a CPU in a second without downloading anything.  Its
answers are garbage, which exercises the failure handling.

Used by the tests and by ``muva ground run ... --expert mllm --model tiny-random``.
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


def build_tiny_qwen25vl(seed: int = 0, max_pixels: int = 224 * 224):
    """Return ``(model, processor)`` of a ~0.1 M-parameter random Qwen2.5-VL."""
    import torch  # lazy: listing experts imports this package's modules and must not load torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # lazy: optional (muva[mllm])
    from transformers import (  # lazy: optional (muva[mllm]), heavy
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.padding_side = "left"
    try:
        from transformers import Qwen2VLVideoProcessor  # lazy: optional; absent from older transformers

        video = Qwen2VLVideoProcessor()
    except Exception:  # older transformers: the processor builds without one
        video = None
    image = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0],
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[1], window_size=56),
        image_token_id=ids[5], video_token_id=ids[6], vision_start_token_id=ids[3], vision_end_token_id=ids[4],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    return model, processor

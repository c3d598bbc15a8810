"""A tiny, randomly initialised Grounding DINO (model + processor + tokenizer), built offline.

It has the real architecture (Swin backbone, BERT text encoder, feature enhancer,
language-guided query selection, cross-modality decoder) and the real processor
(``GroundingDinoImageProcessor`` + a WordPiece ``BertTokenizer`` + ``GroundingDinoProcessor``),
scaled down to ~0.2 M parameters and 128×256 inputs, so the whole detector expert — prompt,
batched forward pass, ``post_process_grounded_object_detection``, label matching, fallback —
runs on a CPU in a fraction of a second without downloading anything.  Its detections are
random, which exercises the failure handling.

The vocabulary is made from the words of the part phrases (:data:`muva.data.parts.PART_PHRASES`),
so every part's phrase is tokenised into real word pieces, never ``[UNK]``.

Used by the tests and by ``muva ground run ... -e gdino -X model=tiny-random`` (``tiny-random-mm``:
the same as an MM-Grounding-DINO).
"""

from __future__ import annotations

import re

from muva.data.parts import PART_PHRASES

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_EXTRA_WORDS = ["a", "the", "person", "of", "and", "left", "right", "leg", "shoe", "arm", "face", "##s"]


def tiny_vocab() -> dict[str, int]:
    """Word piece → id: the special tokens, punctuation, the part phrases' words and a few more."""
    words: list[str] = []
    for phrase in PART_PHRASES.values():
        words += re.findall(r"[a-z]+", phrase.lower())
    tokens = [*SPECIAL_TOKENS, ".", ",", *words, *_EXTRA_WORDS]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def build_tiny_grounding_dino(seed: int = 0, mm: bool = False, longest_edge: int = 256):
    """Return ``(model, processor)`` of a random Grounding DINO (``mm=True``: MM-Grounding-DINO)."""
    import torch  # lazy: listing experts imports this package's modules and must not load torch
    from transformers import (  # lazy: optional (muva[mllm]), heavy
        BertConfig,
        BertTokenizer,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    vocab = tiny_vocab()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    image = GroundingDinoImageProcessor(size={"shortest_edge": longest_edge // 2, "longest_edge": longest_edge})
    processor = GroundingDinoProcessor(image_processor=image, tokenizer=tokenizer)
    backbone = SwinConfig(image_size=longest_edge // 2, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=64, pad_token_id=vocab["[PAD]"])
    sizes = dict(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32,
                 decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_feature_levels=4,
                 encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    if mm:
        from transformers import MMGroundingDinoConfig, MMGroundingDinoForObjectDetection  # lazy: heavy

        config, cls = MMGroundingDinoConfig(**sizes), MMGroundingDinoForObjectDetection
    else:
        from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection  # lazy: heavy

        config, cls = GroundingDinoConfig(**sizes), GroundingDinoForObjectDetection
    torch.manual_seed(seed)
    model = cls(config).eval()
    return model, processor


def build_tiny_owlv2(seed: int = 0, image_size: int = 64):
    """Return ``(model, processor)`` of a random OWLv2 (CLIP-style towers, 4×4 patches of 16 px)."""
    import string

    import torch  # lazy: listing experts imports this package's modules and must not load torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor  # lazy: heavy

    # A character-level BPE vocabulary (no merges): every lowercase word is spelt letter by letter.  The special
    # tokens come last, as in CLIP's vocabulary: OWL treats a query whose first id is 0 as padding.
    chars = [*string.ascii_lowercase, ".", ","]
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    image = Owlv2ImageProcessor(size={"height": image_size, "width": image_size})
    processor = Owlv2Processor(image_processor=image, tokenizer=tokenizer)
    config = Owlv2Config(
        text_config=dict(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=32, bos_token_id=len(tokens) - 2, eos_token_id=len(tokens) - 1,
                         pad_token_id=len(tokens) - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=image_size, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    return model, processor

"""Ask CogVLM MUVA's body-part question about every pedestrian crop; write the answers as JSON Lines.

Runs in its own environment, without muva: CogVLM's remote code needs the transformers of
late 2023 and a GPU with about 40 GB (bfloat16), e.g.

    python -m venv cogvlm && . cogvlm/bin/activate
    pip install torch torchvision "transformers>=4.35,<4.41" accelerate sentencepiece einops xformers
    python docs/recipes/cogvlm_grounding.py --images /data/Market-1501-v15.09.15 --out answers.jsonl

then, where muva is installed:

    muva ground import-answers answers.jsonl --format cogvlm --dataset /data/Market-1501-v15.09.15

One line per image and part: {"image": <path relative to --images>, "part": "head", "answer": "...",
"query": "...", "model": "..."}.  Run it again to resume: pairs already in --out are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODEL = "THUDM/cogvlm-grounding-generalist-hf"
TOKENIZER = "lmsys/vicuna-7b-v1.5"  # CogVLM ships no tokenizer; its model card uses Vicuna's
# MUVA's instruction to its grounding expert, one question per part.
INSTRUCTION = "Guide me to the location of the {phrase} of the person within the image by providing its bounding boxes"
# muva part name -> the words asked (the `phrase` of muva's part records, muva.data.parts; stated here
# because this script runs without muva).
PHRASES = {"head": "head", "upper_body": "upper body", "legs": "legs", "shoes": "shoes"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def images_under(root: Path) -> list[Path]:
    """Every image below ``root`` (hidden files and folders left out), sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def done_pairs(out: Path) -> set[tuple[str, str]]:
    """(image, part) pairs already answered in ``out`` (a half-written last line is ignored)."""
    pairs = set()
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
                pairs.add((obj["image"], obj["part"]))
            except (ValueError, KeyError, TypeError):
                continue
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="dataset folder (paths are written relative to it)")
    ap.add_argument("--out", type=Path, required=True, help="JSON Lines file to append to")
    ap.add_argument("--parts", default="head,upper_body,legs", help=f"comma-separated, of {', '.join(PHRASES)}")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--tokenizer", default=TOKENIZER)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--limit", type=int, default=None, help="stop after this many images (trials)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PHRASES]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PHRASES)}")

    import torch  # heavy: imported only when the script runs
    from PIL import Image
    from transformers import AutoModelForCausalLM, LlamaTokenizer

    dtype = getattr(torch, args.dtype)
    tokenizer = LlamaTokenizer.from_pretrained(args.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=dtype, low_cpu_mem_usage=True,
                                                 trust_remote_code=True).to(args.device).eval()
    done = done_pairs(args.out)
    images = images_under(args.images)[: args.limit]
    print(f"{len(images)} image(s) under {args.images}, {len(done)} answer(s) already in {args.out}", file=sys.stderr)
    with open(args.out, "a", encoding="utf-8") as fh:
        for n, path in enumerate(images, 1):
            rel = path.relative_to(args.images).as_posix()
            todo = [p for p in parts if (rel, p) not in done]
            if not todo:
                continue
            image = Image.open(path).convert("RGB")
            for part in todo:
                query = INSTRUCTION.format(phrase=PHRASES[part])
                # 'base' template: the query as it is, as for the grounding models' own examples.
                built = model.build_conversation_input_ids(tokenizer, query=query, history=[], images=[image], template_version="base")
                inputs = {
                    "input_ids": built["input_ids"].unsqueeze(0).to(args.device),
                    "token_type_ids": built["token_type_ids"].unsqueeze(0).to(args.device),
                    "attention_mask": built["attention_mask"].unsqueeze(0).to(args.device),
                    "images": [[built["images"][0].to(args.device).to(dtype)]],
                }
                with torch.no_grad():
                    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
                answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:]).split("</s>")[0].strip()
                fh.write(json.dumps({"image": rel, "part": part, "answer": answer, "query": query, "model": args.model}) + "\n")
            fh.flush()
            if n % 100 == 0:
                print(f"{n}/{len(images)} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

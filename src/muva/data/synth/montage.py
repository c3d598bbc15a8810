"""A montage PNG of a generated benchmark: a few identities per domain under several cameras."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from muva.data.synth.parts_file import PARTS_FILE, PartsRecord, read_parts_jsonl


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _pick_identities(domain_dir: Path, records: list[PartsRecord], n: int) -> list[tuple[int, str]]:
    """Identities to show: an outfit-twin pair first (when there is one), then others."""
    by_pid = defaultdict(list)
    for r in records:
        if r.path.startswith("bounding_box_train/"):
            by_pid[r.pid].append(r)
    idents = [json.loads(line) for line in (domain_dir / "identities.jsonl").open()]
    chosen: list[tuple[int, str]] = []
    for ident in idents:
        if ident["split"] == "train" and ident["twin_of"] > 0 and ident["twin_of"] in by_pid:
            chosen = [(ident["twin_of"], "twin A"), (ident["pid"], "twin B")]
            break
    for pid in sorted(by_pid):
        if len(chosen) >= n:
            break
        if pid not in {p for p, _ in chosen}:
            chosen.append((pid, ""))
    return chosen[:n]


def make_montage(out_dir: str | Path, path: str | Path, *, ids_per_domain: int = 4, images_per_id: int = 4,
                 max_domains: int = 4, thumb: tuple[int, int] = (64, 128)) -> Path:
    """Write a PNG grid: one block per domain, rows = identities, columns = images (cameras).

    Each block is titled with the domain's background family and season; each row with the
    identity number (an outfit-twin pair, when present, comes first and is marked).
    """
    out = Path(out_dir)
    meta = json.loads((out / "synth.json").read_text())
    domains = meta["domains"][:max_domains]
    tw, th = thumb
    label_h, title_h, gap, pad = 14, 30, 14, 6
    block_w = images_per_id * (tw + 2) + 2
    width = pad * 2 + len(domains) * block_w + (len(domains) - 1) * gap
    height = pad * 2 + title_h + ids_per_domain * (th + label_h + 2)
    sheet = Image.new("RGB", (width, height), (245, 245, 242))
    draw = ImageDraw.Draw(sheet)
    f_title, f_label = _font(13), _font(10)
    for b, dom in enumerate(domains):
        ddir = out / dom["path"]
        records = read_parts_jsonl(ddir / PARTS_FILE)
        x0 = pad + b * (block_w + gap)
        draw.text((x0, pad), f"{dom['name']}: {dom['background']}, {dom['season']}", fill=(20, 20, 20), font=f_title)
        by_pid = defaultdict(list)
        for r in records:
            by_pid[r.pid].append(r)
        for row, (pid, tag) in enumerate(_pick_identities(ddir, records, ids_per_domain)):
            y = pad + title_h + row * (th + label_h + 2)
            draw.text((x0, y), f"id {pid:04d} {tag}".strip(), fill=(150, 20, 20) if tag else (60, 60, 60), font=f_label)
            # Prefer images from distinct cameras.
            recs, seen = [], set()
            for r in sorted(by_pid[pid], key=lambda r: r.path):
                if r.camid not in seen:
                    recs.append(r)
                    seen.add(r.camid)
            recs += [r for r in by_pid[pid] if r not in recs]
            for col, r in enumerate(recs[:images_per_id]):
                img = Image.open(ddir / r.path).convert("RGB").resize((tw, th), Image.BILINEAR)
                xx = x0 + col * (tw + 2)
                sheet.paste(img, (xx, y + label_h))
                draw.text((xx + 2, y + label_h + th - 12), f"c{r.camid + 1}", fill=(255, 255, 255), font=f_label,
                          stroke_width=1, stroke_fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path

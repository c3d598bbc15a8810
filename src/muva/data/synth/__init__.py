"""Synthetic multi-domain pedestrian re-ID benchmark with ground-truth part boxes.

``muva synth OUT`` (or :func:`generate`) writes ``OUT/domain_0 …`` in the Market-1501
layout, each with ``parts.jsonl`` (head / upper_body / legs / shoes boxes per image),
``domain.json`` (its style) and ``identities.jsonl`` (attributes, outfit twins), plus
``OUT/synth.json`` and the resolved ``OUT/config.yaml``.  See docs/synthetic.md.

    >>> from muva.data.synth import SynthConfig, generate
    >>> cfg = SynthConfig(num_domains=2, ids_per_domain=4, test_ids_per_domain=4)
    >>> meta = generate(cfg, "runs/tiny_synth", progress=False, overwrite=True)  # doctest: +SKIP
"""

from muva.data.synth.appearance import Identity, make_identities
from muva.data.synth.config import BACKGROUND_FAMILIES, SynthConfig
from muva.data.synth.generate import SPLIT_FOLDERS, SynthError, format_filename, generate, parse_filename, plan_domain
from muva.data.synth.montage import make_montage
from muva.data.synth.parts_file import PartsFileError, PartsRecord, read_parts, read_parts_jsonl
from muva.data.synth.styles import DomainStyle, make_domain_style

__all__ = [
    "BACKGROUND_FAMILIES",
    "DomainStyle",
    "Identity",
    "PartsFileError",
    "PartsRecord",
    "SPLIT_FOLDERS",
    "SynthConfig",
    "SynthError",
    "format_filename",
    "generate",
    "make_domain_style",
    "make_identities",
    "make_montage",
    "parse_filename",
    "plan_domain",
    "read_parts",
    "read_parts_jsonl",
]

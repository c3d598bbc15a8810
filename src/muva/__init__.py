"""muva: domain-generalised person re-identification with CLIP (MUVA).

``import muva`` is light: heavy packages (torch, open_clip, transformers, faiss, onnx)
are imported only by the modules that need them.  Public entry points:

* :mod:`muva.data` — records, dataset parsers, the synthetic benchmark generator;
* :mod:`muva.grounding` — part boxes from grounding experts and patch masks;
* :mod:`muva.models` — the MUVA model on open_clip (and the CLIP-ReID baseline);
* :mod:`muva.engine` — two-stage training, checkpoints, DDP, the demo;
* :mod:`muva.evaluation` — exact, memory-bounded re-ID metrics and re-ranking;
* :class:`muva.FeatureExtractor`, :mod:`muva.inference`, :mod:`muva.viz` — using a trained model;
* :mod:`muva.config` — typed YAML configs with ``key=value`` overrides;
* the ``muva`` command line (``muva --help``).
"""

from muva._version import __version__

__all__ = ["__version__", "FeatureExtractor"]


def __getattr__(name: str):
    # Lazy: ``import muva`` must not import torch; ``muva.FeatureExtractor`` does on first use.
    if name == "FeatureExtractor":
        from muva.inference.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'muva' has no attribute {name!r}")

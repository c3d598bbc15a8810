"""muva: domain-generalised person re-identification with CLIP (MUVA).

``import muva`` is light: heavy packages (torch, open_clip, transformers, faiss, onnx)
are imported only by the modules that need them.  Public entry points:

* :mod:`muva.data` — records, dataset parsers, the synthetic benchmark generator;
* :mod:`muva.config` — typed YAML configs with ``key=value`` overrides;
* the ``muva`` command line (``muva --help``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

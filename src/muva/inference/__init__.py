"""Using a trained model: features, gallery search, ONNX export.

* :class:`FeatureExtractor` — features (and predicted part masks) for paths, PIL
  images, numpy arrays or tensors, with the PyTorch or ONNX Runtime backend;
* :mod:`muva.inference.features` — the feature folder format (``muva extract``);
* :class:`GalleryIndex` — faiss search over gallery features (``muva search``);
* :func:`export_onnx` — ONNX export with a dynamic batch axis (``muva export``).

Names are imported lazily so that ``import muva.inference`` stays light.
"""

from __future__ import annotations

from muva.utils.lazy import lazy_exports

_LAZY = {
    "FeatureExtractor": "muva.inference.extractor",
    "InferenceError": "muva.inference.extractor",
    "ModelInfo": "muva.inference.extractor",
    "FeatureSet": "muva.inference.features",
    "FeatureWriter": "muva.inference.features",
    "FeatureFileError": "muva.inference.features",
    "load_features": "muva.inference.features",
    "GalleryIndex": "muva.inference.search",
    "SearchError": "muva.inference.search",
    "SearchResult": "muva.inference.search",
    "export_onnx": "muva.inference.export",
    "check_onnx_parity": "muva.inference.export",
    "Preprocess": "muva.inference.images",
    "extract_to_folder": "muva.inference.extract",
    "gather_rows": "muva.inference.extract",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

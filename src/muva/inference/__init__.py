"""Using a trained model: features, gallery search, ONNX export.

* :class:`FeatureExtractor` — features (and predicted part masks) for paths, PIL
  images, numpy arrays or tensors, with the PyTorch or ONNX Runtime backend
  (:mod:`muva.inference.backends`; :func:`open_model` loads a saved model for inference);
* :func:`load_features` / :class:`FeatureSet` / :class:`FeatureWriter` — feature folders
  (``muva extract``) and single feature files, defined in :mod:`muva.utils.featurefiles`;
* :class:`GalleryIndex` — faiss search over gallery features (``muva search``);
* :func:`export_onnx` — ONNX export with a dynamic batch axis (``muva export``);
* :class:`ModelInfo` — a model's input size, normalisation, parts and grid
  (:mod:`muva.models.meta`; :attr:`FeatureExtractor.info`).

Names are imported lazily so that ``import muva.inference`` stays light.
"""

from __future__ import annotations

from muva.utils.lazy import lazy_exports

_LAZY = {
    "FeatureExtractor": "muva.inference.extractor",
    "FileFeatures": "muva.inference.files",
    "InferenceError": "muva.inference.backends",
    "open_model": "muva.inference.backends",
    "ModelInfo": "muva.models.meta",
    "FeatureSet": "muva.utils.featurefiles",
    "FeatureWriter": "muva.utils.featurefiles",
    "FeatureFileError": "muva.utils.featurefiles",
    "load_features": "muva.utils.featurefiles",
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

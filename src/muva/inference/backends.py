"""Opening a model for inference and running batches through it: PyTorch or ONNX Runtime.

:func:`open_model` loads a ``save_model`` file for inference (without the
identity-dependent tensors).  A backend holds the model and its
:class:`~muva.models.meta.ModelInfo` (``info``) and runs one preprocessed ``N×3×H×W``
batch: ``run(batch, flip=..., masks=...)`` → ``(features, masks or None)``, features
L2-normalised, masks as probabilities ``N×layers×R×L``.  :class:`TorchBackend` takes a
built model, :class:`OnnxBackend` a file written by ``muva export`` (its preprocessing
read from the file's ``muva`` metadata).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from muva.models.io import load_model
from muva.models.meta import ModelInfo
from muva.utils.errors import MuvaError

__all__ = ["BACKENDS", "InferenceError", "OnnxBackend", "TorchBackend", "open_model", "stack_masks"]

BACKENDS = ("auto", "torch", "onnx")
ONNX_SUFFIXES = (".onnx",)


class InferenceError(MuvaError, RuntimeError):
    """A checkpoint or input that the extractor cannot use (with what to do about it)."""


def open_model(checkpoint: str | os.PathLike, device: str = "cpu"):
    """The model of a ``save_model`` file, for inference: identity-dependent tensors are skipped."""
    path = Path(checkpoint)
    if not path.exists():
        raise InferenceError(f"checkpoint {path} does not exist; pass the file written by training (save_model) or by `muva export`")
    try:
        return load_model(path, num_classes=None, device=device)
    except MuvaError:  # ModelFileError & co. already name the file and the fix
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise InferenceError(f"cannot load {path}: {exc}") from exc


def stack_masks(layer_masks):
    """Per-layer list of ``B×R×L`` masks → one ``B×layers×R×L`` tensor of probabilities."""
    if isinstance(layer_masks, torch.Tensor):
        stacked = layer_masks if layer_masks.ndim == 4 else layer_masks[:, None]
    else:
        if len(layer_masks) == 0:
            return None
        stacked = torch.stack(list(layer_masks), dim=1)
    stacked = stacked.float()
    if stacked.numel() and (stacked.min() < 0 or stacked.max() > 1):
        stacked = stacked.sigmoid()  # logits → probabilities
    return stacked


class TorchBackend:
    """A built MUVA model on a torch device."""

    def __init__(self, model, device: str, before_bn: bool):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.before_bn = before_bn
        self.info = ModelInfo.of(model)

    def run(self, batch, *, flip: bool, masks: bool):
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        x = x.to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model.extract(x, before_bn=self.before_bn, return_masks=masks)
            feats, layer_masks = (out if masks else (out, None))
            if flip:
                flipped = self.model.extract(x.flip(-1), before_bn=self.before_bn)
                feats = torch.nn.functional.normalize(feats + flipped, dim=-1)
            if layer_masks is not None:
                layer_masks = stack_masks(layer_masks)
        return feats, layer_masks


class OnnxBackend:
    """An exported ``.onnx`` file on ONNX Runtime (the CUDA provider for ``device="cuda"`` when installed)."""

    def __init__(self, path: Path, device: str, threads: int | None):
        try:
            import onnxruntime as ort  # optional (muva[onnx]): only this backend needs it
        except ImportError as exc:
            raise InferenceError("the ONNX backend needs onnxruntime: pip install 'muva[onnx]'") from exc
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "muva" not in meta:
            raise InferenceError(f"{path} has no muva metadata; export it with `muva export CHECKPOINT --format onnx`")
        self.info = ModelInfo.from_json(meta["muva"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch, *, flip: bool, masks: bool):
        x = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if masks and "masks" not in self.outputs:
            raise InferenceError("this ONNX file was exported without masks; re-export with `muva export --masks`")
        names = ["features", "masks"] if masks else ["features"]
        res = self.session.run(names, {self.input_name: x})
        feats = res[0]
        if flip:
            other = self.session.run(["features"], {self.input_name: np.ascontiguousarray(x[..., ::-1])})[0]
            feats = feats + other
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return feats, (res[1] if masks else None)

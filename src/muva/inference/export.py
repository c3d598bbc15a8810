"""ONNX export of the inference model (``muva export --format onnx``).

The exported graph takes ``images`` — ``N×3×H×W`` float32, already resized and
normalised (see :class:`muva.inference.images.Preprocess`) — with a dynamic batch axis
``N``, and returns ``features`` (``N×D``, L2-normalised BN-neck features, as
:meth:`MuvaModel.extract` gives) and, for models with parts, ``masks``
(``N×layers×R×L`` predicted part-mask probabilities).  The model's preprocessing
(input size, mean, std), parts and patch grid travel in the file's metadata under the
key ``muva``, so :class:`~muva.inference.FeatureExtractor` can run the file through
ONNX Runtime with the same preprocessing as the PyTorch model.

The TorchScript-based exporter (``dynamo=False``) is used by default: its graph has
fewer transposes than the torch.export-based one (``dynamo=True``, same outputs), and
ONNX Runtime runs it about 5 % faster on CPU.

``onnx`` and ``onnxruntime`` are optional (``pip install 'muva[onnx]'``): they are
imported by the functions that need them, and their absence is an
:class:`~muva.inference.backends.InferenceError` saying how to install them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.jit import TracerWarning

from muva._version import __version__
from muva.inference.backends import InferenceError, open_model
from muva.models.meta import ModelInfo
from muva.utils.errors import EXIT_FAILURE

#: the export check's bounds: float32 must match PyTorch to this, int8 stay above the cosine
PARITY_MAX_ABS_DIFF = 1e-4
INT8_MIN_COSINE = 0.9


class ParityError(InferenceError):
    """The exported file's outputs differ from PyTorch's beyond the check's bound (the export ran and failed)."""

    exit_code = EXIT_FAILURE


@dataclass
class ExportReport:
    """What :func:`export_onnx` produced and how closely it matches PyTorch."""

    path: Path
    opset: int
    outputs: list[str]
    seconds: float
    file_bytes: int
    parity: dict = field(default_factory=dict)
    quantized: str | None = None

    @property
    def max_abs_diff(self) -> float:
        return float(self.parity.get("features_max_abs_diff", float("nan")))

    @property
    def parity_ok(self) -> bool:
        """Whether the check passed: features within 1e-4 of PyTorch's, or (int8) a lowest cosine above 0.9."""
        p = self.parity
        return p["features_max_abs_diff"] <= PARITY_MAX_ABS_DIFF or (
            self.quantized is not None and p["features_min_cosine"] > INT8_MIN_COSINE)


def _onnx():
    try:
        import onnx  # optional (muva[onnx]): only the export needs it
    except ImportError as exc:
        raise InferenceError(f"{exc}: ONNX export needs onnx and onnxruntime (pip install 'muva[onnx]')") from exc
    return onnx


def _onnxruntime():
    try:
        import onnxruntime  # optional (muva[onnx]): the parity check and int8 quantisation run on it
    except ImportError as exc:
        raise InferenceError(f"{exc}: ONNX export needs onnx and onnxruntime (pip install 'muva[onnx]')") from exc
    return onnxruntime


def _export_module(model, with_masks: bool, sigmoid: bool):
    class InferenceGraph(torch.nn.Module):
        """images → (features, masks): the model's ``extract`` with masks stacked."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            if not with_masks:
                return self.model.extract(images)
            feats, layer_masks = self.model.extract(images, return_masks=True)
            masks = torch.stack(list(layer_masks), dim=1).float()
            if sigmoid:
                masks = masks.sigmoid()
            return feats, masks

    return InferenceGraph().eval()


def _masks_are_logits(model, info: ModelInfo) -> bool | None:
    """Run one dummy image: None when the model predicts no masks, else whether they are logits."""
    if not info.parts:
        return None
    x = torch.zeros(1, 3, *info.input_size)
    with torch.inference_mode():
        out = model.extract(x, return_masks=True)
    if not isinstance(out, tuple) or out[1] is None or len(out[1]) == 0:
        return None
    m = torch.stack(list(out[1]))
    return bool(m.min() < 0 or m.max() > 1)


def export_onnx(
    checkpoint,
    out_path: str | Path,
    *,
    opset: int = 17,
    masks: bool = True,
    dynamo: bool = False,
    check: bool = True,
    check_batch: int = 3,
    seed: int = 0,
    quantize: str | None = None,
) -> ExportReport:
    """Export a checkpoint (path) or built model to ONNX with a dynamic batch axis.

    Args:
        checkpoint: a ``save_model`` file or a built MUVA model.
        out_path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        masks: also output the predicted part masks (models with parts only).
        dynamo: use the torch.export-based exporter instead of the TorchScript one.
        check: run ONNX Runtime on a random batch of ``check_batch`` images (a batch
            size other than the one traced, proving the axis is dynamic) and record the
            largest absolute difference to PyTorch in the report.
        quantize: ``None`` (float32, the default) or ``"int8"`` (dynamic int8 MatMuls:
            faster on CPU, features close to but not equal to PyTorch's).
    """
    if quantize not in (None, "int8"):
        raise InferenceError(f"quantize must be None or 'int8', not {quantize!r}")
    _onnx()  # say now, before the export runs, when the optional packages are missing
    if check or quantize:
        _onnxruntime()
    model = open_model(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    model = model.cpu().eval()
    info = ModelInfo.of(model)
    logits = _masks_are_logits(model, info) if masks else None
    with_masks = logits is not None
    graph = _export_module(model, with_masks, bool(logits))
    dummy = torch.randn(2, 3, *info.input_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = graph(dummy)
    feats = ref[0] if with_masks else ref
    info.dim = int(feats.shape[1])
    if with_masks:
        info.num_layers = int(ref[1].shape[1])
        if not info.grid or not all(info.grid):
            raise InferenceError("the model does not expose its patch grid (model.grid)")
    outputs = ["features", "masks"] if with_masks else ["features"]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {"images": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=TracerWarning)
        tmp = out_path.with_name(out_path.name + ".tmp")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
                    torch.onnx.export(graph, (dummy,), str(tmp), dynamo=True, input_names=["images"], output_names=outputs,
                                      dynamic_shapes={"images": {0: batch}}, opset_version=max(opset, 18),
                                      external_data=False, verbose=False)
            except Exception as exc:  # noqa: BLE001 - report the exporter's reason in one line
                cause = exc.__cause__ or exc
                raise InferenceError(
                    f"the torch.export-based ONNX exporter failed ({str(cause).splitlines()[0][:300]}); "
                    "use the default TorchScript exporter (without --dynamo)"
                ) from exc
        else:
            try:
                torch.onnx.export(graph, (dummy,), str(tmp), dynamo=False, input_names=["images"], output_names=outputs,
                                  dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
            except RuntimeError as exc:  # e.g. an opset the exporter does not support
                raise InferenceError(f"the ONNX exporter failed with opset {opset}: {str(exc).splitlines()[0][:300]}; "
                                     "choose another --opset (17 is the default)") from exc
    if quantize:
        _quantize_int8(tmp, info)
    _write_metadata(tmp, info, opset)
    os.replace(tmp, out_path)
    report = ExportReport(out_path, opset, outputs, time.perf_counter() - t0, out_path.stat().st_size, quantized=quantize)
    if check:
        report.parity = check_onnx_parity(model, out_path, batch=check_batch, seed=seed + 1)
    return report


def _quantize_int8(path: Path, info: ModelInfo) -> None:
    """Dynamic int8 quantisation of the transformer's weight MatMuls.

    Weights are quantised per output channel once; activations per tensor at run time,
    so a feature depends slightly on the other images of its batch.  The mask
    predictors stay in float32: they hold a few percent of the FLOPs, and their
    thresholded outputs decide which patches each part token attends to, where a
    rounding error flips a decision rather than nudging a value.  Several times faster
    on CPUs with int8 dot-product instructions (VNNI / AMX), but no longer
    bit-comparable with PyTorch: the parity report then gives the cosine similarity of
    the features to the float model instead of holding them to 1e-4.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional (muva[onnx]), checked by export_onnx

    graph = _onnx().load(str(path), load_external_data=False).graph
    keep_float = [n.name for n in graph.node if n.op_type == "MatMul" and "mask_predictors" in n.name]
    src = path.with_name(path.name + ".fp32")
    os.replace(path, src)
    quiet = logging.getLogger()  # the quantiser logs a pre-processing suggestion on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, nodes_to_exclude=keep_float)
    finally:
        quiet.setLevel(level)
        src.unlink(missing_ok=True)
    info.extra["quantized"] = "int8-dynamic"
    info.extra["quantization"] = {"weights": "int8, per output channel", "activations": "int8, per tensor, at run time",
                                  "float32": "mask predictors"}


def _write_metadata(path: Path, info: ModelInfo, opset: int) -> None:
    onnx = _onnx()
    proto = onnx.load(str(path))
    info.extra.update({"muva_version": __version__, "torch_version": torch.__version__, "opset": opset})
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "muva", info.to_json()
    proto.producer_name = "muva"
    onnx.save(proto, str(path))


def check_onnx_parity(model, onnx_path: str | Path, *, batch: int = 3, seed: int = 0, inputs=None) -> dict:
    """Largest absolute differences between ONNX Runtime and PyTorch on the same inputs.

    Returns ``{"features_max_abs_diff": …, "masks_max_abs_diff": … (when exported),
    "batch": …}``.  ``inputs`` (``N×3×H×W`` normalised) defaults to random images.
    """
    ort = _onnxruntime()
    info = ModelInfo.of(model)
    if inputs is None:
        gen = torch.Generator().manual_seed(seed)
        inputs = torch.rand(batch, 3, *info.input_size, generator=gen) * 2 - 1  # the normalised range
    x = torch.as_tensor(inputs, dtype=torch.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    res = dict(zip(names, session.run(names, {"images": x.numpy()})))
    with torch.inference_mode():
        if "masks" in names:
            feats, layer_masks = model.cpu().eval().extract(x, return_masks=True)
            ref_masks = torch.stack(list(layer_masks), dim=1).float()
            if ref_masks.min() < 0 or ref_masks.max() > 1:
                ref_masks = ref_masks.sigmoid()
        else:
            feats, ref_masks = model.cpu().eval().extract(x), None
    cos = np.sum(res["features"] * feats.numpy(), axis=1)
    out = {"batch": int(x.shape[0]), "features_max_abs_diff": float(np.abs(res["features"] - feats.numpy()).max()),
           "features_min_cosine": float(cos.min())}
    if ref_masks is not None:
        out["masks_max_abs_diff"] = float(np.abs(res["masks"] - ref_masks.numpy()).max())
        # Thresholded masks drive the attention; count the patch decisions that differ.
        out["masks_flipped_decisions"] = int(((res["masks"] > 0.5) != (ref_masks.numpy() > 0.5)).sum())
    return out


def onnx_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` in an exported file's ``muva`` metadata (input size, mean/std, parts, grid, dim, versions)."""
    proto = _onnx().load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == "muva":
            return ModelInfo.from_json(p.value)
    raise InferenceError(f"{path} has no muva metadata; export it with `muva export CHECKPOINT --format onnx`")


__all__ = ["ExportReport", "ParityError", "check_onnx_parity", "export_onnx", "onnx_info"]

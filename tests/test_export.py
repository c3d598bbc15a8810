"""ONNX export: dynamic batch, parity with PyTorch, metadata, FeatureExtractor on ONNX Runtime."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _helpers import trained_looking_bn
from muva.cli import app
from muva.inference import FeatureExtractor, InferenceError
from muva.inference.export import check_onnx_parity, export_onnx, onnx_info

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _tiny(num_classes=3, **overrides):
    from muva.models import build_model, tiny_config

    torch.manual_seed(0)
    return trained_looking_bn(build_model(tiny_config(**overrides), num_classes=num_classes)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from muva.models import save_model

    logging.getLogger("muva.models").setLevel(logging.ERROR)
    tmp = tmp_path_factory.mktemp("onnx")
    ckpt = save_model(_tiny(), tmp / "tiny.safetensors")
    report = export_onnx(ckpt, tmp / "tiny.onnx", check_batch=3)
    return tmp, ckpt, report


def test_parity_and_dynamic_batch(exported):
    tmp, ckpt, report = exported
    assert report.outputs == ["features", "masks"]
    assert report.parity["batch"] == 3  # traced with 2 images, checked with 3
    assert report.max_abs_diff <= 1e-4
    assert report.parity["masks_max_abs_diff"] <= 1e-4
    from muva.models import load_model

    model = load_model(ckpt)
    for batch in (1, 5):
        p = check_onnx_parity(model, report.path, batch=batch, seed=batch)
        assert p["batch"] == batch and p["features_max_abs_diff"] <= 1e-4


def test_parity_detects_a_different_model(exported):
    tmp, ckpt, report = exported
    other = _tiny()
    with torch.no_grad():
        other.neck.bn.running_mean.add_(0.5)
    assert check_onnx_parity(other, report.path)["features_max_abs_diff"] > 1e-3


def test_metadata(exported):
    tmp, ckpt, report = exported
    info = onnx_info(report.path)
    assert info.input_size == (128, 64) and info.grid == (8, 4)
    assert info.parts == ("head", "upper_body", "legs") and info.dim == 128 and info.num_layers == 2
    assert info.mean == (0.5, 0.5, 0.5) and info.interpolation == "bilinear"
    assert info.extra["opset"] == 17 and info.extra["stride"] == 16 and info.extra["torch_version"] == torch.__version__


def test_extractor_on_onnx_matches_torch(exported, tmp_path):
    tmp, ckpt, report = exported
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (150, 60, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    from muva.models import load_model

    model = load_model(ckpt)
    for flip in (False, True):
        pt = FeatureExtractor(model, flip=flip, batch_size=2)
        ox = FeatureExtractor(report.path, flip=flip, batch_size=2)
        assert ox.backend == "onnx" and pt.backend == "torch"
        f_pt, m_pt = pt(paths, return_masks=True)
        f_ox, m_ox = ox(paths, return_masks=True)
        assert np.abs(f_pt - f_ox).max() <= 1e-4
        assert np.abs(m_pt - m_ox).max() <= 1e-4
    res = ox.extract_files(paths, progress=False)  # the DataLoader path with ONNX Runtime
    assert np.abs(res.features - f_ox).max() <= 1e-5
    assert ox(torch.rand(3, 64, 32), output="torch").shape == (ox.dim,)
    with pytest.raises(InferenceError, match="before_bn is fixed"):
        FeatureExtractor(report.path, before_bn=True)


def test_global_model_has_no_masks(tmp_path):
    model = _tiny(parts=[])
    report = export_onnx(model, tmp_path / "g.onnx")
    assert report.outputs == ["features"] and report.max_abs_diff <= 1e-4
    fx = FeatureExtractor(report.path)
    assert fx.parts == ()
    with pytest.raises(InferenceError, match="without masks"):
        fx(np.zeros((128, 64, 3), np.uint8), return_masks=True)


def test_export_cli(exported, tmp_path):
    tmp, ckpt, report = exported
    out = tmp_path / "cli.onnx"
    r = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(out), "--format", "onnx"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "parity on a batch of 3" in text and out.exists()
    assert "--quantize int8" in text  # the float export points to the fast CPU option
    r = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(out), "--format", "tflite"])
    assert r.exit_code == 2 and "unknown export format" in r.output


def test_int8_export_is_close_not_equal(exported, tmp_path):
    tmp, ckpt, report = exported
    q = export_onnx(ckpt, tmp_path / "q8.onnx", quantize="int8")
    assert q.quantized == "int8" and onnx_info(q.path).extra["quantized"] == "int8-dynamic"
    assert q.file_bytes < report.file_bytes  # int8 weights
    assert q.parity["features_min_cosine"] > 0.99
    assert q.parity["features_max_abs_diff"] > 1e-6  # really quantised, not the float graph
    ops = [(n.op_type, n.name) for n in onnx.load(str(q.path)).graph.node]
    assert any(op != "MatMul" and "Integer" in op or op == "DynamicQuantizeMatMul" for op, _ in ops)
    # the mask predictors (which decide the attention gates) stay float32
    assert [name for op, name in ops if "mask_predictors" in name and op == "MatMul"]
    assert not [name for op, name in ops if "mask_predictors" in name and ("Integer" in op or "Quantize" in op)]
    with pytest.raises(InferenceError, match="quantize must be"):
        export_onnx(ckpt, tmp_path / "x.onnx", quantize="int4")


def test_dynamo_exporter_matches_too(exported, tmp_path, capfd):
    """The torch.export-based exporter handles the model as well (dynamic batch, parity)."""
    tmp, ckpt, report = exported
    d = export_onnx(ckpt, tmp_path / "dyn.onnx", dynamo=True, check_batch=4)
    assert d.outputs == ["features", "masks"] and d.parity["batch"] == 4
    assert d.max_abs_diff <= 1e-4 and d.parity["masks_max_abs_diff"] <= 1e-4
    assert "[torch.onnx]" not in capfd.readouterr().out  # the exporter's chatter stays out of the user's output


def test_parity_verdict_and_its_exit_code(exported):
    from muva.inference.export import ExportReport, ParityError

    tmp, ckpt, report = exported
    assert report.parity_ok
    far = ExportReport(report.path, 17, ["features"], 0.0, 1, parity={"features_max_abs_diff": 2e-4, "features_min_cosine": 0.95})
    assert not far.parity_ok
    far.quantized = "int8"  # int8 is held to the cosine instead
    assert far.parity_ok
    far.parity["features_min_cosine"] = 0.9
    assert not far.parity_ok
    assert ParityError("x").exit_code == 1 and isinstance(ParityError("x"), InferenceError)


def test_unsupported_opset_is_one_error_line(exported, tmp_path):
    import os
    import subprocess
    import sys

    tmp, ckpt, report = exported
    r = subprocess.run([sys.executable, "-m", "muva", "export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--opset", "99",
                        "--no-check"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"}, timeout=300)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert err.count("error:") == 1 and "error: the ONNX exporter failed with opset 99: Unsupported onnx_opset_version: 99" in err, err
    assert not (tmp_path / "x.onnx").exists()

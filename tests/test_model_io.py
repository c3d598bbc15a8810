"""ModelInfo: one record for a built model, its model.json and its ONNX metadata; files of before still load."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from muva.models import build_model, save_model, tiny_config
from muva.models.io import ModelFileError, load_model, read_model_info
from muva.models.meta import ModelInfo

# The ``muva`` metadata entry of an int8 ONNX export as written before ModelInfo moved to muva.models.
ONNX_ENTRY = ('{"input_size": [128, 64], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "parts": ["head", "upper_body", '
              '"legs"], "grid": [8, 4], "num_layers": 2, "dim": 128, "interpolation": "bilinear", "stride": 16, "patch": 16, '
              '"quantized": "int8-dynamic", "quantization": {"weights": "int8, per output channel", "activations": '
              '"int8, per tensor, at run time", "float32": "mask predictors"}, "muva_version": "0.1.0", '
              '"torch_version": "2.14.1+cu130", "opset": 17}')


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = build_model(tiny_config(), num_classes=3).eval()
    path = save_model(model, tmp_path_factory.mktemp("m") / "model.safetensors", extra={"epoch": 7})
    return model, path


def test_built_and_saved_models_give_the_same_record(saved):
    model, path = saved
    built, read = ModelInfo.of(model), read_model_info(path)
    for name in ("input_size", "mean", "std", "parts", "grid", "num_layers", "dim", "interpolation", "num_classes"):
        assert getattr(built, name) == getattr(read, name), name
    assert read.input_size == (128, 64) and read.parts == ("head", "upper_body", "legs") and read.grid == (8, 4)
    assert read.dim == 128 and read.num_classes == 3 and read.interpolation == "bilinear"
    assert read.extra == {"epoch": 7} and built.extra == {"stride": 16, "patch": 16}
    assert read.config == model.cfg and read.include_text is True and read.muva_version == built.muva_version


def test_model_json_keeps_its_layout(saved):
    model, path = saved
    text = path.with_suffix(".json").read_text()
    meta = json.loads(text)
    assert list(meta) == ["format", "format_version", "muva_version", "num_classes", "parts", "grid", "feature_dim",
                          "num_layers", "include_text", "config", "extra"]
    assert meta["format"] == "muva-model" and meta["format_version"] == 1 and meta["grid"] == [8, 4]
    info = read_model_info(path)
    assert json.dumps(info.to_saved(), indent=2) + "\n" == text  # reading and writing again changes no byte


def test_a_model_json_from_before_new_options_loads_the_old_way(saved, tmp_path):
    model, path = saved
    meta = json.loads(path.with_suffix(".json").read_text())
    for key in ("test_interpolation", "neck_momentum"):  # options newer than the file
        meta["config"].pop(key)
    old = tmp_path / "old.safetensors"
    old.write_bytes(path.read_bytes())
    old.with_suffix(".json").write_text(json.dumps(meta))
    info = read_model_info(old)
    assert info.interpolation == "bicubic" and info.config.neck_momentum == 0.1  # LEGACY_MODEL_DEFAULTS
    back = load_model(old, num_classes=3)
    x = torch.randn(2, 3, 128, 64)
    torch.testing.assert_close(back.extract(x), model.extract(x))


def test_onnx_metadata_round_trips_byte_for_byte():
    info = ModelInfo.from_json(ONNX_ENTRY)
    assert info.input_size == (128, 64) and info.parts == ("head", "upper_body", "legs") and info.dim == 128
    assert info.extra["quantized"] == "int8-dynamic" and info.extra["opset"] == 17 and "dim" not in info.extra
    assert info.to_json() == ONNX_ENTRY
    older = ModelInfo.from_json('{"input_size": [256, 128], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}')
    assert older.interpolation == "bicubic" and older.grid == (0, 0) and older.parts == ()


def test_unreadable_descriptions_name_the_problem(saved, tmp_path):
    model, path = saved
    with pytest.raises(ModelFileError, match="nope.json not found"):
        read_model_info(tmp_path / "nope.safetensors")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="not a muva model description"):
        read_model_info(tmp_path / "other.json")
    (tmp_path / "bare.json").write_text(json.dumps({"format": "muva-model"}))
    with pytest.raises(ModelFileError, match="has no model config"):
        read_model_info(tmp_path / "bare.json")
    with pytest.raises(TypeError, match="has no .cfg; pass a muva model"):
        ModelInfo.of(torch.nn.Linear(2, 2))

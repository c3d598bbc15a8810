"""``ModelInfo``: what a MUVA model is besides its weights, in one record.

The same record describes a built model (:meth:`ModelInfo.of`), the ``model.json``
written beside a saved model (:meth:`ModelInfo.from_saved` / :meth:`ModelInfo.to_saved`,
read from disk by :func:`muva.models.io.read_model_info`) and the ``muva`` metadata entry
of an exported ONNX file (:meth:`ModelInfo.from_json` / :meth:`ModelInfo.to_json`):
input size, normalisation and test-time resize (what inference needs to preprocess an
image), parts, patch grid, depth and feature dimension, plus — for saved files — the
identity count, the config and whether the text tower was kept.

Both serialisations keep the key order and values of the files written before this
record existed, so old files still load and new files are byte-identical.

>>> info = ModelInfo((256, 128), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), parts=("head",), grid=(16, 8), dim=1024)
>>> again = ModelInfo.from_json(info.to_json())
>>> again.input_size, again.parts, again.dim, again.interpolation
((256, 128), ('head',), 1024, 'bicubic')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from muva._version import __version__
from muva.config import from_dict, to_dict
from muva.models.config import LEGACY_MODEL_DEFAULTS, ModelConfig

__all__ = ["ModelInfo", "FORMAT", "FORMAT_VERSION", "saved_config"]

FORMAT = "muva-model"  # the "format" of a model.json
FORMAT_VERSION = 1

#: the keys of the ONNX ``muva`` entry that are fields; any other key lands in ``extra``
_ONNX_FIELDS = ("input_size", "mean", "std", "parts", "grid", "num_layers", "dim", "interpolation")


def saved_config(config: dict) -> ModelConfig:
    """The :class:`ModelConfig` of a saved config dict; options it predates keep their old values."""
    saved = dict(config)
    # a file written before an option existed was built the old way: keep it that way
    saved.update({k: v for k, v in LEGACY_MODEL_DEFAULTS.items() if k not in saved})
    return from_dict(ModelConfig, saved)


@dataclass
class ModelInfo:
    """What loading, inference and export need to know about a model besides its weights.

    ``extra`` holds further facts: for a built model its patch ``stride`` and ``patch``
    size (an ONNX export adds its versions, opset and quantisation), for a saved model
    file the ``extra`` dict given to ``save_model``.  ``num_classes``, ``include_text``,
    ``config`` and ``muva_version`` describe a built or saved model (an ONNX file does
    not record them).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    parts: tuple[str, ...] = ()
    grid: tuple[int, int] = (0, 0)
    num_layers: int = 0
    dim: int = 0
    extra: dict = field(default_factory=dict)
    interpolation: str = "bicubic"  # test-time resize; files written before it was recorded used bicubic
    num_classes: int = 0
    include_text: bool = True
    config: Any = None  # the model's ModelConfig (None when read from an ONNX file)
    muva_version: str = ""

    # ------------------------------------------------------------------ a built model
    @classmethod
    def of(cls, model) -> "ModelInfo":
        """Read input size, normalisation, parts, patch grid and depth from a MUVA model."""
        cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
        if cfg is None:
            raise TypeError(f"{type(model).__name__} has no .cfg; pass a muva model (muva.models.build_model / load_model)")
        arch = getattr(cfg, "arch", None)
        patch = getattr(model, "patch_size", None) or getattr(arch, "patch_size", None)
        stride = getattr(model, "stride", None) or getattr(cfg, "stride", None) or patch or 16
        return cls(
            input_size=tuple(int(v) for v in getattr(cfg, "input_size", (256, 128))),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in getattr(cfg, "mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in getattr(cfg, "std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            parts=tuple(getattr(cfg, "parts", ()) or ()),
            grid=tuple(int(v) for v in getattr(model, "grid", (0, 0))),  # type: ignore[arg-type]
            num_layers=int(getattr(model, "num_layers", 0) or 0),
            dim=int(getattr(model, "feature_dim", 0) or 0),
            extra={"stride": int(stride), "patch": int(patch) if patch else None},
            interpolation=str(getattr(cfg, "test_interpolation", "bicubic")),
            num_classes=int(getattr(model, "num_classes", 0) or 0),
            config=cfg,
            muva_version=__version__,
        )

    # ------------------------------------------------------------------ model.json
    @classmethod
    def from_saved(cls, meta: dict) -> "ModelInfo":
        """The record of a saved model's ``model.json`` (already parsed; its ``config`` a dict)."""
        cfg = saved_config(meta["config"])
        return cls(
            input_size=tuple(int(v) for v in cfg.input_size),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in cfg.mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in cfg.std),  # type: ignore[arg-type]
            parts=tuple(meta.get("parts", cfg.parts)),
            grid=tuple(int(v) for v in meta.get("grid", (0, 0))),  # type: ignore[arg-type]
            num_layers=int(meta.get("num_layers", 0) or 0),
            dim=int(meta.get("feature_dim", 0) or 0),
            extra=dict(meta.get("extra") or {}),
            interpolation=str(cfg.test_interpolation),
            num_classes=int(meta.get("num_classes", 0) or 0),
            include_text=bool(meta.get("include_text", True)),
            config=cfg,
            muva_version=str(meta.get("muva_version", "")),
        )

    def to_saved(self) -> dict:
        """The ``model.json`` dict (the layout ``save_model`` has always written)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "muva_version": self.muva_version,
            "num_classes": self.num_classes,
            "parts": list(self.parts),
            "grid": list(self.grid),
            "feature_dim": self.dim,
            "num_layers": self.num_layers,
            "include_text": self.include_text,
            "config": to_dict(self.config),
            "extra": self.extra,
        }

    # ------------------------------------------------------------------ ONNX metadata
    def to_json(self) -> str:
        """The ``muva`` metadata entry of an exported ONNX file."""
        return json.dumps(
            {
                "input_size": list(self.input_size),
                "mean": list(self.mean),
                "std": list(self.std),
                "parts": list(self.parts),
                "grid": list(self.grid),
                "num_layers": self.num_layers,
                "dim": self.dim,
                "interpolation": self.interpolation,
                **self.extra,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        """Read the ``muva`` metadata entry of an exported ONNX file."""
        d = json.loads(text)
        return cls(
            input_size=tuple(d["input_size"]),  # type: ignore[arg-type]
            mean=tuple(d["mean"]),  # type: ignore[arg-type]
            std=tuple(d["std"]),  # type: ignore[arg-type]
            parts=tuple(d.get("parts", ())),
            grid=tuple(d.get("grid", (0, 0))),  # type: ignore[arg-type]
            num_layers=int(d.get("num_layers", 0)),
            dim=int(d.get("dim", 0)),
            extra={k: v for k, v in d.items() if k not in _ONNX_FIELDS},
            interpolation=str(d.get("interpolation", "bicubic")),
        )

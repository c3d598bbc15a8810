"""``FeatureExtractor``: features from a trained model for any kind of image input.

The extractor wraps a MUVA checkpoint (``save_model`` file), an already built model,
or an exported ONNX file, and turns file paths, PIL images, numpy arrays or tensors —
one image or many — into L2-normalised re-ID features (the BN-neck output, as the
evaluation uses), optionally with horizontal-flip test-time augmentation and the
predicted part masks.  The model runs in a backend (:mod:`muva.inference.backends`:
PyTorch or ONNX Runtime); image files are decoded ahead of it
(:mod:`muva.inference.files`); every input is preprocessed by one rule
(:mod:`muva.inference.images`); the model's input size, normalisation, parts and grid
come from its :class:`~muva.models.meta.ModelInfo` (:attr:`FeatureExtractor.info`).

Example (a tiny random model, saved and reloaded)::

    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from muva.models import build_model, save_model, tiny_config
    >>> from muva.inference import FeatureExtractor
    >>> tmp = Path(tempfile.mkdtemp())
    >>> ckpt = save_model(build_model(tiny_config(), num_classes=4), tmp / "tiny.safetensors")
    >>> fx = FeatureExtractor(ckpt, batch_size=4)
    >>> image = np.random.default_rng(0).integers(0, 256, (160, 80, 3), dtype=np.uint8)
    >>> f = fx(image)                       # one image -> one vector
    >>> f.shape == (fx.dim,), round(float(np.linalg.norm(f)), 4)
    (True, 1.0)
    >>> fx([image, image[:, ::-1]]).shape == (2, fx.dim)   # a list -> a matrix
    True
    >>> feats, masks = fx(image, return_masks=True)      # masks: layers × parts × patches
    >>> masks.shape == (fx.num_layers, len(fx.parts), fx.num_patches)
    True
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from muva.inference.backends import BACKENDS, ONNX_SUFFIXES, InferenceError, OnnxBackend, TorchBackend, open_model
from muva.inference.files import FileFeatures, file_batches
from muva.inference.images import ImageFiles, Preprocess, split_inputs
from muva.models.meta import ModelInfo
from muva.utils.progress import progress_bar

__all__ = ["FeatureExtractor", "FileFeatures", "InferenceError"]


class FeatureExtractor:
    """Extract L2-normalised re-ID features with a trained MUVA model.

    Args:
        checkpoint: a ``save_model`` file, an exported ``.onnx`` file, or a built model
            (an ``nn.Module`` with ``extract`` and ``cfg``).
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) — for ONNX, ``cuda``
            selects the CUDA execution provider when installed.
        batch_size: images per forward pass.
        flip: add the features of the horizontally flipped image, then re-normalise.
        backend: ``"torch"``, ``"onnx"`` or ``"auto"`` (ONNX for ``.onnx`` files).
        num_workers: background decoders for file inputs (default: 1 when there are more
            files than one batch, which overlaps JPEG decoding with the forward pass;
            0 decodes in the calling thread).
        worker_type: ``"thread"`` (default) or ``"process"`` (DataLoader workers).
        before_bn: return the features before the BN neck instead of after it.
        output: ``"numpy"`` (float32 arrays) or ``"torch"`` (CPU tensors).
        threads: ONNX Runtime intra-op threads (default: its own choice).

    Call it with one image (path, PIL image, ``H×W×3`` array, ``3×H×W`` tensor) to get a
    ``(D,)`` vector, or with a list / ``N×H×W×3`` array / ``N×3×H×W`` tensor to get an
    ``(N, D)`` matrix.  ``return_masks=True`` also returns the predicted part masks as
    probabilities, ``layers × R × L`` per image (``L`` patches in row-major order of
    :attr:`grid`).
    """

    def __init__(
        self,
        checkpoint,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        flip: bool = False,
        backend: str = "auto",
        num_workers: int | None = None,
        before_bn: bool = False,
        output: str = "numpy",
        threads: int | None = None,
        worker_type: str = "thread",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'torch', 'onnx' or 'auto', not {backend!r}")
        if worker_type not in ("thread", "process"):
            raise ValueError(f"worker_type must be 'thread' or 'process', not {worker_type!r}")
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', not {output!r}")
        is_path = isinstance(checkpoint, (str, os.PathLike))
        if backend == "auto":
            backend = "onnx" if is_path and str(checkpoint).lower().endswith(ONNX_SUFFIXES) else "torch"
        if backend == "onnx":
            if not is_path:
                raise InferenceError("the ONNX backend needs the path of an exported .onnx file")
            if before_bn:
                raise InferenceError("before_bn is fixed at export time; the ONNX file holds the BN-neck features")
            self._backend: Any = OnnxBackend(Path(checkpoint), device, threads)
        else:
            model = open_model(checkpoint, device) if is_path else checkpoint
            self._backend = TorchBackend(model, device, before_bn)
        self.backend = backend
        self.checkpoint = str(checkpoint) if is_path else type(checkpoint).__name__
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.num_workers = num_workers
        self.worker_type = worker_type
        self.output = output
        info = self._backend.info
        self.info: ModelInfo = info
        self.preprocess = Preprocess(tuple(info.input_size), tuple(info.mean), tuple(info.std),  # type: ignore[arg-type]
                                     info.interpolation)
        self._dim = info.dim or None

    # ------------------------------------------------------------------ properties
    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(H, W)``."""
        return tuple(self.info.input_size)  # type: ignore[return-value]

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.info.parts)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``; masks have ``rows*cols`` entries per part."""
        return tuple(self.info.grid)  # type: ignore[return-value]

    @property
    def num_patches(self) -> int:
        return int(self.info.grid[0] * self.info.grid[1])

    @property
    def num_layers(self) -> int:
        """Layers with predicted masks (0 for a model without parts)."""
        if not self.info.num_layers and self.parts:
            dummy = np.zeros((1, 3, *self.input_size), dtype=np.float32)
            _, masks = self._backend.run(dummy, flip=False, masks=True)
            self.info.num_layers = int(masks.shape[1]) if masks is not None else 0
        return int(self.info.num_layers)

    @property
    def dim(self) -> int:
        """Feature dimension (found with one dummy forward pass if the model does not say)."""
        if not self._dim:
            dummy = np.zeros((1, 3, *self.input_size), dtype=np.float32)
            feats, _ = self._backend.run(dummy, flip=False, masks=False)
            self._dim = int(feats.shape[1])
        return int(self._dim)

    def describe(self) -> dict:
        """A JSON-ready description (stored beside extracted features)."""
        return {
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "flip": self.flip,
            "before_bn": bool(getattr(self._backend, "before_bn", False)),
            "input_size": list(self.input_size),
            "dim": self.dim,
            "normalized": True,
        }

    # ------------------------------------------------------------------ core
    def _run(self, batch, masks: bool):
        feats, m = self._backend.run(batch, flip=self.flip, masks=masks)
        return feats, m

    def _finish(self, feats, output: str):
        if output == "torch":
            return feats.detach().float().cpu() if isinstance(feats, torch.Tensor) else torch.from_numpy(np.asarray(feats, dtype=np.float32))
        if hasattr(feats, "detach"):
            return feats.detach().float().cpu().numpy()
        return np.asarray(feats, dtype=np.float32)

    def __call__(self, inputs, *, return_masks: bool = False, output: str | None = None):
        """Features of one image or a batch; see the class docstring for accepted inputs."""
        output = output or self.output
        items, batch_tensor, single = split_inputs(inputs)
        feats_out, masks_out = [], []
        if batch_tensor is not None:
            x = self.preprocess.tensor(batch_tensor)
            for start in range(0, x.shape[0], self.batch_size):
                chunk = x[start : start + self.batch_size]
                if self.backend == "onnx":
                    chunk = chunk.cpu()
                f, m = self._run(chunk, return_masks)
                feats_out.append(self._finish(f, output))
                if return_masks:
                    masks_out.append(self._finish(m, output))
        elif items:
            paths = [it for it in items if isinstance(it, (str, os.PathLike))]
            if len(paths) == len(items) and len(items) > self.batch_size:
                result = self.extract_files(paths, progress=False, return_masks=return_masks, output=output)
                if result.failed:
                    first = next(iter(result.failed.items()))
                    raise InferenceError(f"{len(result.failed)} image(s) could not be read, e.g. {first[0]}: {first[1]}")
                feats_out, masks_out = [result.features], ([result.masks] if return_masks else [])
            else:
                for start in range(0, len(items), self.batch_size):
                    arr = np.stack([self.preprocess(it) for it in items[start : start + self.batch_size]])
                    f, m = self._run(arr, return_masks)
                    feats_out.append(self._finish(f, output))
                    if return_masks:
                        masks_out.append(self._finish(m, output))
        else:
            raise InferenceError("no images given")
        feats = _concat(feats_out, output)
        masks = _concat(masks_out, output) if return_masks else None
        if single:
            feats = feats[0]
            masks = masks[0] if masks is not None else None
        return (feats, masks) if return_masks else feats

    def iter_files(
        self, paths: Sequence[str | Path], *, return_masks: bool = False, output: str = "numpy"
    ) -> Iterator[tuple[list[int], Any, Any, dict[int, str]]]:
        """Yield ``(indices, features, masks, failed)`` per batch of image files.

        Decoding overlaps the forward pass: by default ``num_workers`` background
        threads decode and preprocess the next batches; ``worker_type="process"`` uses
        DataLoader worker processes instead (for heavy decoding on many cores; see
        :mod:`muva.inference.files`).  Unreadable files are left out of ``indices`` /
        ``features`` and reported in ``failed`` (index → error message).
        """
        dataset = ImageFiles(paths, self.preprocess)
        workers = self.num_workers
        if workers is None:
            workers = 1 if len(paths) > self.batch_size else 0
        for images, indices, errors in file_batches(dataset, self.batch_size, workers, self.worker_type):
            failed = {i: e for i, e in zip(indices, errors) if e}
            if failed:
                keep = [j for j, e in enumerate(errors) if not e]
                images = images[keep]
                indices = [indices[j] for j in keep]
            if not indices:
                yield [], None, None, failed
                continue
            f, m = self._run(images, return_masks)
            yield indices, self._finish(f, output), (self._finish(m, output) if return_masks else None), failed

    def extract_files(
        self,
        paths: Sequence[str | Path],
        *,
        progress: bool = True,
        return_masks: bool = False,
        output: str = "numpy",
        description: str = "extracting",
    ) -> "FileFeatures":
        """Features of many image files, with a progress bar; unreadable files are skipped."""
        paths = [str(p) for p in paths]
        feats, masks, kept, failed = [], [], [], {}
        start = time.perf_counter()
        with progress_bar(description, total=len(paths), disable=not progress) as advance:
            for idx, f, m, bad in self.iter_files(paths, return_masks=return_masks, output=output):
                failed.update(bad)
                if idx:
                    kept.extend(idx)
                    feats.append(f)
                    if return_masks:
                        masks.append(m)
                advance(len(idx) + len(bad))
        dim = self.dim
        empty = np.zeros((0, dim), dtype=np.float32)
        features = _concat(feats, output) if feats else self._finish(empty, output)
        return FileFeatures(
            paths=[paths[i] for i in kept],
            indices=kept,
            features=features,
            masks=_concat(masks, output) if return_masks and masks else None,
            failed={paths[i]: e for i, e in failed.items()} if failed else {},
            seconds=time.perf_counter() - start,
        )


def _concat(chunks: list, output: str):
    if output == "torch":
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]

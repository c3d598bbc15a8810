"""FeatureExtractor: every input type, batching, flip TTA, masks, files, errors, doctests."""

from __future__ import annotations

import doctest
import importlib
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import trained_looking_bn
from muva.inference import FeatureExtractor, InferenceError
from muva.inference.images import Preprocess


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from muva.models import build_model, save_model, tiny_config

    torch.manual_seed(0)
    model = trained_looking_bn(build_model(tiny_config(), num_classes=3))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def model(tiny):
    from muva.models import load_model

    logging.getLogger("muva.models").setLevel(logging.ERROR)
    return load_model(tiny)


@pytest.fixture(scope="module")
def fx(tiny):
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    return FeatureExtractor(tiny, batch_size=4)  # the checkpoint-path route


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    # Different sizes on purpose: the extractor must resize to the model input.
    return [rng.integers(0, 256, (160 + 8 * i, 70 + 2 * i, 3), dtype=np.uint8) for i in range(6)]


def _reference(fx, arrays):
    """Features computed by hand: PIL bilinear resize (the model's test_interpolation), normalise, model.extract."""
    model = fx._backend.model
    h, w = fx.input_size
    batch = []
    for a in arrays:
        assert fx.info.interpolation == "bilinear"
        im = Image.fromarray(a).resize((w, h), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float32) / 255.0
        x = (x - np.array(fx.info.mean, np.float32)) / np.array(fx.info.std, np.float32)
        batch.append(x.transpose(2, 0, 1))
    with torch.inference_mode():
        return model.extract(torch.from_numpy(np.stack(batch))).numpy()


def test_numpy_single_and_batched_match_manual_pipeline(fx, images):
    ref = _reference(fx, images)
    single = fx(images[0])
    assert single.shape == (fx.dim,)
    np.testing.assert_allclose(single, ref[0], atol=1e-5)
    batched = fx(images)
    assert batched.shape == (len(images), fx.dim)
    np.testing.assert_allclose(batched, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_every_input_type_gives_the_same_features(fx, images, tmp_path):
    img = images[2]
    expected = fx(img)
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    resized = np.asarray(Image.fromarray(img).resize(fx.input_size[::-1], Image.BILINEAR))
    variants = {
        "str path": str(path),
        "Path": path,
        "PIL": Image.fromarray(img),
        "PIL grey->rgb": Image.fromarray(img).convert("RGBA"),
        "uint8 CHW array": img.transpose(2, 0, 1).copy(),
    }
    for name, value in variants.items():
        np.testing.assert_allclose(fx(value), expected, atol=1e-5, err_msg=name)
    # Already at the model size: tensors / float arrays skip resizing, so compare with the resized image.
    exp_resized = fx(resized)
    t = torch.from_numpy(resized.copy()).permute(2, 0, 1)
    for name, value in {
        "uint8 tensor CHW": t,
        "float tensor CHW": t.float() / 255,
        "float array HWC": resized.astype(np.float32) / 255,
        "uint8 tensor NCHW": t[None].repeat(3, 1, 1, 1),
        "uint8 array NHWC": np.stack([resized] * 3),
    }.items():
        out = fx(value)
        out = out if out.ndim == 1 else out[2]
        np.testing.assert_allclose(out, exp_resized, atol=1e-5, err_msg=name)


def test_mixed_list_and_torch_output(fx, images, tmp_path):
    path = tmp_path / "b.jpg"
    Image.fromarray(images[0]).save(path, quality=95)
    mixed = [str(path), Image.fromarray(images[1]), images[2]]
    out = fx(mixed, output="torch")
    assert isinstance(out, torch.Tensor) and out.shape == (3, fx.dim)
    np.testing.assert_allclose(out[1].numpy(), fx(images[1]), atol=1e-5)
    np.testing.assert_allclose(out[2].numpy(), fx(images[2]), atol=1e-5)


def test_batch_size_does_not_change_results(model, images):
    a = FeatureExtractor(model, batch_size=1)(images)
    b = FeatureExtractor(model, batch_size=5)(images)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_flip_tta(model, fx, images):
    flipper = FeatureExtractor(model, flip=True)
    img = images[3]
    got = flipper(img)
    a, b = fx(img), fx(np.ascontiguousarray(img[:, ::-1]))
    expected = (a + b) / np.linalg.norm(a + b)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Flip-TTA features are mirror invariant.
    np.testing.assert_allclose(flipper(np.ascontiguousarray(img[:, ::-1])), got, atol=1e-5)
    assert np.abs(got - a).max() > 1e-4  # and differ from the plain features


def test_masks(fx, images):
    feats, masks = fx(images[:3], return_masks=True)
    assert feats.shape == (3, fx.dim)
    assert masks.shape == (3, fx.num_layers, len(fx.parts), fx.num_patches)
    assert masks.min() >= 0 and masks.max() <= 1
    model = fx._backend.model
    x = torch.stack([torch.from_numpy(fx.preprocess(i)) for i in images[:3]])
    with torch.inference_mode():
        _, ref = model.extract(x, return_masks=True)
    np.testing.assert_allclose(masks[:, -1], ref[-1].numpy(), atol=1e-6)
    f1, m1 = fx(images[0], return_masks=True)
    assert m1.shape == masks.shape[1:]


def test_before_bn_differs(model, fx, images):
    pre = FeatureExtractor(model, before_bn=True)(images[0])
    assert np.abs(pre - fx(images[0])).max() > 1e-4
    assert abs(np.linalg.norm(pre) - 1) < 1e-5


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_extract_files_uses_workers_and_skips_bad_files(model, images, tmp_path, worker_type):
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    paths.insert(2, str(bad))
    fx2 = FeatureExtractor(model, batch_size=2, num_workers=1, worker_type=worker_type)
    res = fx2.extract_files(paths, progress=False)
    assert res.paths == [p for p in paths if p != str(bad)]
    assert list(res.failed) == [str(bad)] and "Error" in res.failed[str(bad)]
    np.testing.assert_allclose(res.features, fx2(images), atol=1e-5)
    with pytest.raises(InferenceError, match="could not be read"):
        fx2(paths)  # the direct call refuses silently dropping images


def test_errors(tiny, model):
    with pytest.raises(InferenceError, match="does not exist"):
        FeatureExtractor(tiny.parent / "nope.safetensors")
    fx = FeatureExtractor(model)
    with pytest.raises(TypeError, match="cannot read"):
        fx([{"not": "an image"}])
    with pytest.raises(ValueError, match="backend"):
        FeatureExtractor(model, backend="tensorrt")


def test_preprocess_matches_definition():
    pre = Preprocess((4, 2), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))
    arr = np.zeros((4, 2, 3), np.uint8)
    arr[..., 1] = 255
    out = pre(arr)
    np.testing.assert_allclose(out[:, 0, 0], [(0 - 0.1) / 0.5, (1 - 0.2) / 0.25, (0 - 0.3) / 0.125], atol=1e-6)


@pytest.mark.parametrize(
    "module",
    ["muva.inference.extractor", "muva.inference.images", "muva.utils.featurefiles", "muva.inference.search", "muva.data.datasets.resolve",
     "muva.viz.ranks", "muva.viz.masks"],
)
def test_doctests(module):
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module} has no doctest examples"
    assert result.failed == 0

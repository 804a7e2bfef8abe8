"""Masked layers: parity with the stock layers, what trains, gradients, serialization."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ssm
from conftest import layer_grads, numpy
from keras_ssm.layers import MaskedConv1D, MaskedConv2D, MaskedConv3D, MaskedDense

pytestmark = pytest.mark.core

# (masked class, stock class, input shape without batch, positional args)
LAYERS = [
    (MaskedDense, keras.layers.Dense, (6,), (4,)),
    (MaskedConv1D, keras.layers.Conv1D, (9, 3), (4, 3)),
    (MaskedConv2D, keras.layers.Conv2D, (7, 7, 3), (4, 3)),
    (MaskedConv3D, keras.layers.Conv3D, (5, 5, 5, 2), (3, 2)),
]
LAYER_IDS = [cls.__name__ for cls, *_ in LAYERS]
MASKS = ["signed", "binary", "topk"]


def _x(shape: tuple[int, ...], batch: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")


def _built(cls: type, shape: tuple[int, ...], args: tuple, **kwargs) -> keras.layers.Layer:
    layer = cls(*args, **kwargs)
    layer.build((None, *shape))
    return layer


def _expected_mask(mask: str, scores: np.ndarray, tau: float | None = None) -> np.ndarray:
    """The inference mask each mask's documentation defines, computed here from the scores.

    ``signed``: ``sign(s)`` where ``|s| > tau`` (default ``tau = 0.4 * max|s|``, the scores being
    the initial ones), else 0.  ``binary``: 1 where ``s > 0``.  ``topk``: 1 on the top half of
    ``|s|`` (ties kept).  Every value the mask can take must occur, so a constant mask fails."""
    s = scores.astype(np.float64)
    if mask == "signed":
        tau = 0.4 * np.abs(s).max() if tau is None else tau
        expected = np.where(s > tau, 1.0, np.where(s < -tau, -1.0, 0.0))
        values = {-1.0, 0.0, 1.0}
    elif mask == "binary":
        expected = (s > 0).astype(np.float64)
        values = {0.0, 1.0}
    else:
        keep = s.size // 2
        cut = np.sort(np.abs(s).ravel())[::-1][keep - 1]
        expected = (np.abs(s) >= cut).astype(np.float64)
        assert expected.sum() == keep  # no tie at the cut with random scores
        values = {0.0, 1.0}
    assert set(np.unique(expected)) == values
    return expected.astype(np.float32)


@pytest.mark.parametrize("masked, stock, shape, args", LAYERS, ids=LAYER_IDS)
def test_signature_mirrors_the_stock_layer(masked, stock, shape, args) -> None:
    ours = inspect.signature(masked).parameters
    for name, param in inspect.signature(stock.__init__).parameters.items():
        if name == "self" or param.kind is param.VAR_KEYWORD:
            continue
        assert name in ours, f"{masked.__name__} lacks stock argument {name!r}"
        if name != "kernel_initializer":  # an alias of weight_initializer here
            assert ours[name].default == param.default, name
    for name in ("mask", "weight_initializer", "score_initializer", "threshold", "train_bias"):
        assert name in ours


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("masked, stock, shape, args", LAYERS, ids=LAYER_IDS)
def test_only_scores_train_and_kernel_is_w0_times_mask(masked, stock, shape, args, mask) -> None:
    layer = _built(masked, shape, args, mask=mask)
    assert [v.name for v in layer.trainable_variables] == ["scores"]
    assert not layer.w0.trainable and not layer.bias.trainable
    m = _expected_mask(mask, numpy(layer.scores))
    np.testing.assert_array_equal(numpy(layer.compute_mask_values(training=False)), m)
    np.testing.assert_array_equal(numpy(layer.kernel), numpy(layer.w0) * m)
    # the stock call on the effective kernel gives the same outputs
    ref = stock.from_config(layer.stock_config())
    ref.build((None, *shape))
    ref.set_weights([numpy(layer.kernel), numpy(layer.bias)])
    x = _x(shape)
    np.testing.assert_array_equal(numpy(layer(x)), numpy(ref(x)))


def test_train_bias_makes_the_bias_trainable() -> None:
    layer = _built(MaskedDense, (6,), (4,), train_bias=True)
    assert sorted(v.name for v in layer.trainable_variables) == ["bias", "scores"]


def test_signed_threshold_is_fixed_from_the_initial_scores(tmp_path: Path) -> None:
    """tau = threshold * max|initial scores|, and neither training nor new scores move it: a
    mask that re-derived tau from the current scores would be scale-invariant, this one is not."""
    layer = MaskedDense(40, threshold=0.3, activation="elu")
    model = keras.Sequential([keras.Input((50,)), layer, keras.layers.Dense(3)])
    initial = numpy(layer.scores).astype(np.float64)
    tau0 = 0.3 * np.abs(initial).max()
    tau = layer.mask_state["tau"]
    np.testing.assert_allclose(numpy(tau), tau0, rtol=1e-6)
    np.testing.assert_array_equal(
        numpy(layer.compute_mask_values()), _expected_mask("signed", initial, tau0)
    )

    # training moves the scores (and their max) but not tau; the mask follows the fixed tau
    model.compile(keras.optimizers.SGD(0.2), "mse")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(32, 50)).astype("float32"), rng.normal(size=(32, 3))
    model.fit(x, y.astype("float32"), batch_size=8, epochs=2, shuffle=False, verbose=0)
    trained = numpy(layer.scores).astype(np.float64)
    assert abs(np.abs(trained).max() / np.abs(initial).max() - 1) > 0.01  # the max moved
    np.testing.assert_allclose(numpy(tau), tau0, rtol=1e-6)
    trained_mask = _expected_mask("signed", trained, tau0)
    assert np.any(trained_mask != _expected_mask("signed", initial, tau0))  # the mask moved
    np.testing.assert_array_equal(numpy(layer.compute_mask_values()), trained_mask)

    # scaled scores: a tau recomputed from them would give back the initial mask
    layer.scores.assign(initial.astype("float32") * 10.0)
    np.testing.assert_allclose(numpy(tau), tau0, rtol=1e-6)
    scaled = numpy(layer.compute_mask_values())
    np.testing.assert_array_equal(scaled, _expected_mask("signed", initial * 10.0, tau0))
    assert np.count_nonzero(scaled) > np.count_nonzero(_expected_mask("signed", initial))

    # a saved model keeps its tau rather than deriving one from the loaded scores
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras").layers[0]
    np.testing.assert_allclose(numpy(loaded.mask_state["tau"]), tau0, rtol=1e-6)
    np.testing.assert_array_equal(numpy(loaded.compute_mask_values()), scaled)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("masked, stock, shape, args", LAYERS, ids=LAYER_IDS)
def test_score_gradient_is_kernel_gradient_times_w0(masked, stock, shape, args, mask) -> None:
    layer = _built(masked, shape, args, mask=mask)
    x = _x(shape)
    out_shape = layer.compute_output_shape((3, *shape))
    r = np.random.default_rng(1).normal(size=out_shape).astype("float32")

    def loss(out):
        return keras.ops.sum(out * r)  # linear in the kernel: dL/dW does not depend on W

    g_scores = layer_grads(layer, x, loss)[layer.scores.path]
    ref = stock.from_config(layer.stock_config())
    ref.build((None, *shape))
    g_kernel = layer_grads(ref, x, loss)[ref.kernel.path]
    expected = g_kernel * numpy(layer.w0)
    if mask == "binary":
        s = numpy(layer.scores)
        expected = expected * (1 / (1 + np.exp(-s))) * (1 - 1 / (1 + np.exp(-s)))
    np.testing.assert_allclose(g_scores, expected, rtol=2e-5, atol=1e-6)


def _fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int = 2) -> None:
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)


def _small_model(mask: str) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            MaskedConv2D(4, 3, padding="same", activation="elu", mask=mask),
            keras.layers.Flatten(),
            MaskedDense(3, activation="softmax", use_bias=False, mask=mask),
        ]
    )


def _data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, size=n)


@pytest.mark.parametrize("mask", MASKS)
def test_fit_changes_only_scores(mask: str) -> None:
    model = _small_model(mask)
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    before = {v.path: numpy(v).copy() for v in model.variables}
    _fit(model, *_data())
    for v in model.variables:
        moved = not np.array_equal(before[v.path], numpy(v))
        if v.name == "scores":
            assert moved, v.path
        elif not v.path.startswith(("sgd", "seed")) and "seed" not in v.path:
            assert not moved, f"{v.path} moved"


@pytest.mark.parametrize("mask", MASKS)
def test_keras_round_trip_is_bit_exact_and_training_continues(mask: str, tmp_path: Path) -> None:
    model = _small_model(mask)
    model.compile(keras.optimizers.SGD(0.5, momentum=0.9), "sparse_categorical_crossentropy")
    x, y = _data()
    _fit(model, x, y, epochs=1)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        for va, vb in zip(a.weights, b.weights, strict=True):
            np.testing.assert_array_equal(numpy(va), numpy(vb))
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    _fit(model, x, y, epochs=1)
    _fit(loaded, x, y, epochs=1)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        if keras_ssm.layers.is_masked(a):
            np.testing.assert_array_equal(numpy(a.scores), numpy(b.scores))


@pytest.mark.parametrize("masked, stock, shape, args", LAYERS, ids=LAYER_IDS)
def test_config_round_trip(masked, stock, shape, args) -> None:
    layer = masked(*args, mask="topk", score_initializer="he_uniform", weight_initializer="elus")
    clone = masked.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.mask == keras_ssm.masks.TopKMask()


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="Unknown mask 'signd'"):
        MaskedDense(3, mask="signd")
    with pytest.raises(ValueError, match="Unknown initializer 'elu_s'"):
        MaskedDense(3, weight_initializer="elu_s")
    with pytest.raises(ValueError, match=r"threshold.*\(0, 1\).*threshold=1.5"):
        MaskedDense(3, threshold=1.5)
    with pytest.raises(ValueError, match="applies only to the 'signed' mask"):
        MaskedDense(3, mask="topk", threshold=0.3)
    with pytest.raises(ValueError, match="does not support LoRA"):
        MaskedDense(3, lora_rank=2)
    with pytest.raises(ValueError, match="units"):
        MaskedDense(0)


def test_kernel_regularizer_applies_to_the_scores() -> None:
    layer = _built(MaskedDense, (6,), (4,), kernel_regularizer=keras.regularizers.L2(0.1))
    layer(_x((6,)))
    expected = 0.1 * np.sum(numpy(layer.scores) ** 2)
    np.testing.assert_allclose(numpy(keras.ops.sum(layer.losses)), expected, rtol=1e-5)

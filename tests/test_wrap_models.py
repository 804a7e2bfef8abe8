"""supermask() on the models Keras users have: subclassed models holding masked layers,
functional models with tensor operations and with layers of their own, and BatchNorm."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import keras_ssm
from conftest import BACKEND, numpy
from keras_ssm.layers import MaskedConv2D, MaskedDense, is_masked
from keras_ssm.wrap import FixedAffineBatchNormalization, SupermaskWrapper, masked_layers

pytestmark = pytest.mark.core

PACKAGE = "test_wrap_models"


# ----------------------------------------------------------------------------- user classes
@keras.saving.register_keras_serializable(package=PACKAGE)
class Head(keras.layers.Layer):
    """A layer of the user's creating a masked layer in ``build``."""

    def __init__(self, units: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: Any) -> None:
        self.dense = MaskedDense(self.units, activation="softmax", threshold=0.3)

    def call(self, x: Any) -> Any:
        return self.dense(x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedNet(keras.Model):
    """A subclassed model holding masked layers, directly and inside a layer of its own."""

    def __init__(self, classes: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = MaskedConv2D(4, 3, activation="relu")
        self.flat = keras.layers.Flatten()
        self.head = Head(classes)

    def call(self, x: Any) -> Any:
        return self.head(self.flat(self.conv(x)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class StockNet(keras.Model):
    """A subclassed model holding stock layers (what users bring)."""

    def __init__(self, classes: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.bn = keras.layers.BatchNormalization()
        self.flat = keras.layers.Flatten()
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, x: Any, training: bool | None = None) -> Any:
        return self.out(self.flat(self.bn(self.conv(x), training=training)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Block(keras.layers.Layer):
    """Dense layers made in ``__init__`` and in ``build`` (a list), a LayerNormalization and a
    per-channel scale of its own."""

    def __init__(self, units: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.first = keras.layers.Dense(units, activation="relu")
        self.norm = keras.layers.LayerNormalization()

    def build(self, input_shape: Any) -> None:
        self.stack = [keras.layers.Dense(self.units), keras.layers.Dense(self.units)]
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")

    def call(self, x: Any) -> Any:
        y = self.first(x)
        for layer in self.stack:
            y = layer(y)
        return self.norm(y) * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(keras.layers.Layer):
    """A convolution and a BatchNormalization, called with ``training``."""

    def __init__(self, filters: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x: Any, training: bool | None = None) -> Any:
        return keras.ops.relu(self.bn(self.conv(x), training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerScale(keras.layers.Layer):
    """A per-channel scale: weights, but no kernel."""

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")

    def call(self, x: Any) -> Any:
        return x * self.gamma


# ----------------------------------------------------------------------------- helpers
def batch(shape: tuple[int, ...], n: int = 8, classes: int = 3, scale: float = 1.0) -> tuple:
    rng = np.random.default_rng(0)
    x = (scale * rng.normal(size=(n, *shape))).astype("float32")
    return x, np.arange(n) % classes


def kernel_params(model: keras.Model) -> int:
    """Kernel weights of the stock model's Dense/Conv layers, at every depth."""
    kinds = (keras.layers.Dense, keras.layers.Conv2D)
    return sum(
        math.prod(layer.kernel.shape)
        for layer in keras_ssm.wrap.iter_layers(model)
        if isinstance(layer, kinds)
    )


def masked_share(stock: keras.Model, masked: keras.Model) -> float:
    entries = sum(math.prod(layer.scores.shape) for layer in masked_layers(masked))
    return entries / kernel_params(stock)


def assert_tau_of_initial_scores(layer: keras.layers.Layer, scores: np.ndarray) -> None:
    tau = numpy(layer.mask_state["tau"])
    expected = np.float32(layer.mask.threshold * float(np.max(np.abs(scores))))
    assert tau.dtype == np.float32 and tau == expected, (layer.name, tau, expected)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def assert_onnx_matches(folded: keras.Model, path: Path) -> None:
    """The folded model exports to ONNX, checked on inputs its outputs respond to (TensorFlow:
    the exporter converts through tf2onnx)."""
    if BACKEND != "tensorflow":
        return
    from keras_ssm.export.onnx import to_onnx

    result = to_onnx(folded, path)  # raises when the file differs from Keras
    assert result.details["check_spread"] >= 1e-4
    assert result.max_rel_error <= result.details["check_tolerance"] <= 1e-3


def values(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: numpy(v).copy() for v in model.weights}


def fit_two_steps(model: keras.Model, x: np.ndarray, y: np.ndarray, lr: float = 0.1) -> None:
    model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=len(x) // 2, epochs=1, shuffle=False, verbose=0)


def round_trip(model: keras.Model, path: Path, x: np.ndarray) -> keras.Model:
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    return loaded


def assert_only(moved: set[str], allowed: tuple[str, ...]) -> None:
    assert moved and all(p.endswith(allowed) for p in moved), sorted(moved)


def moved_paths(before: dict[str, np.ndarray], model: keras.Model) -> set[str]:
    now = values(model)
    return {path for path, value in before.items() if not np.array_equal(value, now[path])}


# ----------------------------------------------------------------------------- 1. subclassed
def test_subclassed_model_with_masked_layers_fits_and_round_trips(tmp_path: Path) -> None:
    net = MaskedNet()
    x, y = batch((6, 6, 2))
    fit_two_steps(net, x, y, lr=0.0)  # Keras builds the model symbolically in fit
    layers = [net.conv, net.head.dense]
    initial = [numpy(layer.scores).copy() for layer in layers]  # lr 0: still the initial ones
    for layer, scores in zip(layers, initial, strict=True):
        assert_tau_of_initial_scores(layer, scores)
    fit_two_steps(net, x, y, lr=0.5)
    for layer, scores in zip(layers, initial, strict=True):
        assert not np.array_equal(numpy(layer.scores), scores)
        assert_tau_of_initial_scores(layer, scores)  # tau stays as it was built
    loaded = round_trip(net, tmp_path / "net.keras", x)
    for layer, scores in zip([loaded.conv, loaded.head.dense], initial, strict=True):
        assert_tau_of_initial_scores(layer, scores)
    fit_two_steps(loaded, x, y)


def test_subclassed_model_of_stock_layers_called_in_a_functional_model(tmp_path: Path) -> None:
    """supermask refuses a top-level subclassed model (its call is Python code) and says how
    to go on: call it on a keras.Input; every kernel inside is then masked, it trains, folds
    back to the user's class with stock layers, exports and round-trips."""
    net = StockNet(name="net")
    x, y = batch((6, 6, 2))
    net(x)
    with pytest.raises(keras_ssm.UnsupportedLayerError, match="keras.Model\\(inputs, "):
        keras_ssm.supermask(net)
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, StockNet(name="net")(inputs))
    masked = keras_ssm.supermask(model)
    assert isinstance(masked.get_layer("net"), SupermaskWrapper)
    assert masked_share(model, masked) >= 0.95
    assert sorted(v.name for v in masked.trainable_variables) == ["scores", "scores"]
    fit_two_steps(masked, x, y)
    folded = keras_ssm.fold(masked)
    assert type(folded.get_layer("net")) is StockNet and not masked_layers(folded)
    assert rel_err(folded.predict(x, verbose=0), masked.predict(x, verbose=0)) <= 1e-6
    assert_onnx_matches(folded, tmp_path / "net.onnx")
    fit_two_steps(round_trip(masked, tmp_path / "net.keras", x), x, y)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute only")
def test_subclassed_model_builds_tau_under_a_distribution_strategy() -> None:
    import tensorflow as tf

    x, y = batch((6, 6, 2))
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        net = MaskedNet()
        net.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    net.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for layer in (net.conv, net.head.dense):
        assert_tau_of_initial_scores(layer, numpy(layer.scores))


# ----------------------------------------------------------------------------- 2. tensor ops
def tensor_ops_model() -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(inputs)
    x = keras.ops.relu(a + b)
    x = x[:, :, :, :2]
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="ops")


def test_functional_model_with_tensor_ops(tmp_path: Path) -> None:
    model = tensor_ops_model()
    masked = keras_ssm.supermask(model)
    assert masked_share(model, masked) >= 0.95
    assert {v.name for v in masked.trainable_variables} == {"scores"}
    x, y = batch((6, 6, 2))
    folded = keras_ssm.fold(masked)
    assert not masked_layers(folded)
    assert rel_err(folded.predict(x, verbose=0), masked.predict(x, verbose=0)) <= 1e-6
    assert_onnx_matches(folded, tmp_path / "ops.onnx")
    fit_two_steps(masked, x, y)
    fit_two_steps(round_trip(masked, tmp_path / "ops.keras", x), x, y)
    lenient = keras_ssm.supermask(model, strict=False)
    assert masked_share(model, lenient) >= 0.95
    some = keras_ssm.supermask(model, layers=["conv_a", "out"])
    assert [is_masked(some.get_layer(n)) for n in ("conv_a", "conv_b", "out")] == [1, 0, 1]


# ----------------------------------------------------------------------------- 3. own layers
def own_layers_model() -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    x = ConvBlock(4, name="conv_block")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = Block(8, name="block")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="own")


def test_own_layers_inner_dense_and_conv_are_masked(tmp_path: Path) -> None:
    model = own_layers_model()
    masked = keras_ssm.supermask(model)
    conv_block, block = masked.get_layer("conv_block"), masked.get_layer("block")
    assert isinstance(conv_block, SupermaskWrapper) and isinstance(block, SupermaskWrapper)
    assert isinstance(block.layer, Block) and isinstance(conv_block.layer, ConvBlock)
    inner = [conv_block.layer.conv, block.layer.first, *block.layer.stack]
    assert all(is_masked(layer) for layer in inner)
    assert type(conv_block.layer.bn) is FixedAffineBatchNormalization
    assert len(masked_layers(masked)) == 5 and masked_share(model, masked) >= 0.95
    # only the scores train: not the LayerNormalization, the scale, gamma/beta or the biases
    trainable = [v.path for v in masked.trainable_variables]
    assert len(trainable) == 5 and all(p.endswith("scores") for p in trainable), trainable
    for layer in masked_layers(masked):  # built symbolically, inside the wrapper's first call
        assert_tau_of_initial_scores(layer, numpy(layer.scores))
    # no weight of the stock layers it replaced is left behind
    assert len(masked.weights) == len({id(v) for v in masked.weights})
    assert not any(v.path.endswith("/kernel") and v.trainable for v in masked.weights)

    x, y = batch((6, 6, 2))
    folded = keras_ssm.fold(masked)
    assert type(folded.get_layer("block")) is Block and not masked_layers(folded)
    assert type(folded.get_layer("conv_block").bn) is keras.layers.BatchNormalization
    assert rel_err(folded.predict(x, verbose=0), masked.predict(x, verbose=0)) <= 1e-6
    assert_onnx_matches(folded, tmp_path / "own.onnx")

    before = values(masked)
    fit_two_steps(masked, x, y)
    assert_only(moved_paths(before, masked), ("scores", "moving_mean", "moving_variance"))

    loaded = round_trip(masked, tmp_path / "own.keras", x)
    assert isinstance(loaded.get_layer("block").layer.stack[1], MaskedDense)
    assert sorted(v.name for v in loaded.trainable_variables) == ["scores"] * 5
    before = values(loaded)
    fit_two_steps(loaded, x, y)
    assert_only(moved_paths(before, loaded), ("scores", "moving_mean", "moving_variance"))
    folded_again = keras_ssm.fold(loaded)
    assert rel_err(folded_again.predict(x, verbose=0), loaded.predict(x, verbose=0)) <= 1e-6


def test_own_layers_keep_their_kernels_as_w0_and_select_by_name() -> None:
    model = own_layers_model()
    stock = model.get_layer("block")
    kept = keras_ssm.supermask(model, reinitialize=False).get_layer("block").layer
    for old, new in zip([stock.first, *stock.stack], [kept.first, *kept.stack], strict=True):
        np.testing.assert_array_equal(numpy(new.w0), numpy(old.kernel))
        np.testing.assert_array_equal(numpy(new.bias), numpy(old.bias))
    np.testing.assert_array_equal(numpy(kept.scale), numpy(stock.scale))
    only_block = keras_ssm.supermask(model, layers=["block"])  # a layer's name: all inside it
    inside = only_block.get_layer("block").layer
    assert masked_layers(only_block) == [inside.first, *inside.stack]
    assert not is_masked(only_block.get_layer("conv_block").layer.conv)


def test_keras_layers_holding_layers_are_converted_too(tmp_path: Path) -> None:
    inputs = keras.Input((3, 4))
    h = keras.layers.TimeDistributed(keras.layers.Dense(5), name="td")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(h)))
    masked = keras_ssm.supermask(model)
    assert is_masked(masked.get_layer("td").layer.layer) and len(masked_layers(masked)) == 2
    x, y = batch((3, 4), classes=2)
    folded = keras_ssm.fold(masked)  # TimeDistributed(Dense) again, from its own config
    assert type(folded.get_layer("td").layer) is keras.layers.Dense
    assert rel_err(folded.predict(x, verbose=0), masked.predict(x, verbose=0)) <= 1e-6
    fit_two_steps(round_trip(masked, tmp_path / "td.keras", x), x, y)


def test_a_layer_that_cannot_be_recreated_is_named() -> None:
    class Opaque(keras.layers.Layer):  # its get_config misses the constructor's argument
        def __init__(self, dense: keras.layers.Layer, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.dense = dense

        def call(self, x: Any) -> Any:
            return self.dense(x)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Opaque(keras.layers.Dense(2), name="opaque")(inputs))
    match = r"'opaque' \(Opaque\) from its config.*give Opaque a get_config\(\)"
    with pytest.raises(keras_ssm.UnsupportedLayerError, match=match):
        keras_ssm.supermask(model)


# ----------------------------------------------------------------------------- 4. layers=, strict
def test_a_layer_name_typo_is_an_error() -> None:
    model = tensor_ops_model()
    with pytest.raises(
        ValueError,
        match=r"no layer is named 'conv_c' \(did you mean 'conv_[ab]'\?\)\. The model's layer "
        r"names are: 'conv_a', 'conv_b', 'flatten', 'out'",
    ):
        keras_ssm.supermask(model, layers=["conv_a", "conv_c"])


def test_layers_without_kernels_pass_through_quietly() -> None:
    x, _ = batch((6, 6, 2))
    norm = keras.layers.Normalization(axis=(1, 2, 3))  # statistics with several axes
    norm.adapt(x)
    inputs = keras.Input((6, 6, 2))
    h = norm(keras.layers.Rescaling(0.5)(inputs))
    h = keras.layers.Conv2D(4, 3, name="conv")(h)
    h = LayerScale(name="layer_scale")(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        masked = keras_ssm.supermask(model)
    assert [layer.name for layer in masked_layers(masked)] == ["conv", "out"]
    assert {v.name for v in masked.trainable_variables} == {"scores"}


def test_strict_false_warns_once_grouped_by_type() -> None:
    inputs = keras.Input((5, 3))
    h = keras.layers.LSTM(4, return_sequences=True, name="rnn_a")(inputs)
    h = keras.layers.LSTM(4, return_sequences=True, name="rnn_b")(h)
    h = keras.layers.GRU(4, name="gru")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    with pytest.warns(UserWarning) as seen:
        lenient = keras_ssm.supermask(model, strict=False)
    messages = [str(w.message) for w in seen if "supermask" in str(w.message)]
    assert len(messages) == 1, messages
    assert "rnn_a, rnn_b (LSTM); gru (GRU)" in messages[0]
    assert [layer.name for layer in masked_layers(lenient)] == ["out"]


# ----------------------------------------------------------------------------- 5. BatchNorm
def bn_net(classes: int = 10, depth: int = 4) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    h = inputs
    for i in range(depth):
        h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.Activation("relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(classes, activation="softmax", name="out")(h)
    return keras.Model(inputs, outputs, name="bn_net")


def first_loss(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    return float(model.train_on_batch(x, y))


def test_batchnorm_by_default_normalizes_with_batch_statistics(tmp_path: Path) -> None:
    model = bn_net()
    x, _ = batch((8, 8, 3), n=16, scale=100.0)  # raw, unnormalized inputs (pixel-like)
    y = np.random.default_rng(1).integers(0, 10, 16)
    masked = keras_ssm.supermask(model)
    bns = [masked.get_layer(f"bn{i}") for i in range(4)]
    assert all(type(bn) is FixedAffineBatchNormalization and bn.trainable for bn in bns)
    assert {v.name for v in masked.trainable_variables} == {"scores"}
    before = values(masked)
    assert first_loss(masked, x, y) < 5.0  # ~ln(10) = 2.3
    masked.fit(x, y, batch_size=8, epochs=1, verbose=0)
    moved = moved_paths(before, masked)
    for bn in bns:
        assert {f"{bn.name}/moving_mean", f"{bn.name}/moving_variance"} <= moved
        assert not {f"{bn.name}/gamma", f"{bn.name}/beta"} & moved
    assert_only(moved, ("scores", "moving_mean", "moving_variance"))
    # the paper's frozen BatchNorm is the identity at its initial statistics
    assert first_loss(keras_ssm.supermask(model, batchnorm="frozen"), x, y) > 5.0
    # .keras: gamma/beta stay fixed after loading too, the moving statistics keep moving
    loaded = round_trip(masked, tmp_path / "bn.keras", x)
    assert type(loaded.get_layer("bn0")) is FixedAffineBatchNormalization
    assert {v.name for v in loaded.trainable_variables} == {"scores"}
    before = values(loaded)
    fit_two_steps(loaded, x, y)
    assert_only(moved_paths(before, loaded), ("scores", "moving_mean", "moving_variance"))
    loaded.trainable = True  # setting trainable again leaves gamma/beta fixed
    assert not {"gamma", "beta"} & {v.name for v in loaded.trainable_variables}
    folded = keras_ssm.fold(loaded)
    assert type(folded.get_layer("bn0")) is keras.layers.BatchNormalization
    assert rel_err(folded.predict(x, verbose=0), loaded.predict(x, verbose=0)) <= 1e-5


def test_batchnorm_train_lets_gamma_and_beta_learn() -> None:
    masked = keras_ssm.supermask(bn_net(), batchnorm="train")
    names = sorted({v.name for v in masked.trainable_variables})
    assert names == ["beta", "gamma", "scores"]
    bns = [masked.get_layer(f"bn{i}") for i in range(4)]
    assert all(type(bn) is keras.layers.BatchNormalization and bn.trainable for bn in bns)


def test_recalibrate_batchnorm_sets_the_statistics_of_the_final_network() -> None:
    """After a short fit the moving statistics lag (momentum 0.99); recalibration makes them
    the running average over the given batches, so that inference normalizes like training on
    those batches, and leaves frozen BatchNorm and everything else alone."""
    model = bn_net()
    x, _ = batch((8, 8, 3), n=32, scale=100.0)
    y = np.random.default_rng(1).integers(0, 10, 32)
    masked = keras_ssm.supermask(model)
    fit_two_steps(masked, x, y)
    stale = rel_err(numpy(masked(x, training=False)), numpy(masked(x, training=True)))
    before = {v.path: numpy(v).copy() for v in masked.weights}
    data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    assert keras_ssm.recalibrate_batchnorm(masked, data) == 4
    bn0 = masked.get_layer("bn0")
    assert bn0.momentum == 0.99  # restored
    # bn0 reads the first conv's output: its moving mean is the average of the 4 batch means
    conv = keras.Model(masked.inputs[0], masked.get_layer("bn0").input)
    means = [numpy(conv(xb)).mean(axis=(0, 1, 2)) for xb, _ in data]
    np.testing.assert_allclose(numpy(bn0.moving_mean), np.mean(means, axis=0), rtol=1e-4)
    changed = {v.path for v in masked.weights if not np.array_equal(before[v.path], numpy(v))}
    assert changed and all(p.endswith(("moving_mean", "moving_variance")) for p in changed)
    fresh = rel_err(numpy(masked(x, training=False)), numpy(masked(x, training=True)))
    assert fresh < stale  # inference now normalizes (about) like training does
    frozen = keras_ssm.supermask(model, batchnorm="frozen")
    assert keras_ssm.recalibrate_batchnorm(frozen, data) == 0
    with pytest.raises(ValueError, match="batches must be a positive integer"):
        keras_ssm.recalibrate_batchnorm(masked, data, batches=0)

"""supermask() and fold(): whole models in and out."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ssm
from conftest import numpy
from keras_ssm.layers import is_masked

pytestmark = pytest.mark.core

MASKS = ["signed", "binary", "topk"]


def sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="elu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="seq",
    )


def residual() -> keras.Model:
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("elu")(x)
    y = keras.layers.Conv2D(8, 3, strides=1, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(8, 1, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inp, out, name="residual")


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def test_supermask_sequential_swaps_dense_and_conv() -> None:
    masked = keras_ssm.supermask(sequential())
    kinds = [type(layer).__name__ for layer in masked.layers]
    assert kinds == [
        "MaskedConv2D",
        "MaxPooling2D",
        "Flatten",
        "MaskedDense",
        "Dropout",
        "MaskedDense",
    ]
    assert {v.name for v in masked.trainable_variables} == {"scores"}
    assert masked.layers[0].mask.name == "signed"


def test_supermask_functional_residual_with_batchnorm() -> None:
    model = residual()
    masked = keras_ssm.supermask(model, mask="topk")
    assert sum(is_masked(layer) for layer in masked.layers) == 4
    bns = [layer for layer in masked.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # default batchnorm="stats": batch statistics in training, gamma/beta fixed
    assert bns and all(type(bn) is keras_ssm.wrap.FixedAffineBatchNormalization for bn in bns)
    assert all(bn.trainable and not bn.trainable_weights for bn in bns)
    for old, new in zip(model.layers, masked.layers, strict=True):  # BN keeps its weights
        if isinstance(old, keras.layers.BatchNormalization):
            for a, b in zip(old.weights, new.weights, strict=True):
                np.testing.assert_array_equal(numpy(a), numpy(b))
    for frozen in (
        keras_ssm.supermask(model, batchnorm="frozen"),
        keras_ssm.supermask(model, train_batchnorm=False),  # the older argument
    ):
        bns = [lay for lay in frozen.layers if isinstance(lay, keras.layers.BatchNormalization)]
        assert bns and all(type(bn) is keras.layers.BatchNormalization for bn in bns)
        assert all(not bn.trainable for bn in bns)
    for trained in (
        keras_ssm.supermask(model, train_batchnorm=True),
        keras_ssm.supermask(model, batchnorm="train"),
    ):
        names = {v.path.split("/")[0] for v in trained.trainable_variables}
        assert any("batch_normalization" in n for n in names)
    with pytest.raises(ValueError, match="either batchnorm= or the older train_batchnorm="):
        keras_ssm.supermask(model, batchnorm="stats", train_batchnorm=True)
    with pytest.raises(ValueError, match="allowed: 'stats', 'train', 'frozen'"):
        keras_ssm.supermask(model, batchnorm="moving")


def test_reinitialize_false_keeps_the_models_kernels_as_w0() -> None:
    model = residual()
    masked = keras_ssm.supermask(model, reinitialize=False)
    for old, new in zip(model.layers, masked.layers, strict=True):
        if is_masked(new):
            np.testing.assert_array_equal(numpy(new.w0), numpy(old.kernel))
            if old.bias is not None:
                np.testing.assert_array_equal(numpy(new.bias), numpy(old.bias))
    fresh = keras_ssm.supermask(model)
    c = np.unique(np.abs(numpy(fresh.layers[1].w0)))
    assert c.size == 1  # ELUS: one magnitude per layer


def test_layer_filter_by_name_and_by_function() -> None:
    model = sequential()
    by_name = keras_ssm.supermask(model, layers=[model.layers[-1].name])
    assert [is_masked(layer) for layer in by_name.layers] == [False] * 5 + [True]
    by_fn = keras_ssm.supermask(model, layers=lambda layer: isinstance(layer, keras.layers.Conv2D))
    assert [is_masked(layer) for layer in by_fn.layers][:1] == [True]
    assert sum(is_masked(layer) for layer in by_fn.layers) == 1


def test_unsupported_layers_are_named() -> None:
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, return_sequences=True, name="rnn_a"),
            keras.layers.LSTM(4, return_sequences=True, name="rnn_b"),
            keras.layers.GRU(4, name="gru"),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(
        keras_ssm.UnsupportedLayerError,
        match=r"rnn_a, rnn_b \(LSTM\); gru \(GRU\)\. Maskable layer types: Dense, Conv1D, Conv2D",
    ):
        keras_ssm.supermask(model)
    with pytest.warns(UserWarning, match=r"stay dense and frozen: rnn_a, rnn_b \(LSTM\)") as seen:
        lenient = keras_ssm.supermask(model, strict=False)
    assert len([w for w in seen if "supermask" in str(w.message)]) == 1
    assert not any(layer.trainable for layer in lenient.layers[:3])
    assert is_masked(lenient.layers[-1])


def test_subclassed_models_are_rejected_by_name() -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="my_net")
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), "float32"))
    with pytest.raises(keras_ssm.UnsupportedLayerError, match="'my_net' is a subclassed model"):
        keras_ssm.supermask(net)
    with pytest.raises(TypeError, match="expects a keras.Model"):
        keras_ssm.supermask(keras.layers.Dense(3))


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("build", [sequential, residual], ids=["sequential", "residual"])
def test_fold_gives_stock_layers_and_the_same_outputs(build, mask: str) -> None:
    masked = keras_ssm.supermask(build(), mask=mask)
    folded = keras_ssm.fold(masked)
    assert not any(is_masked(layer) for layer in folded.layers)
    assert not any("scores" in v.path for v in folded.variables)
    x = np.random.default_rng(0).normal(size=(4, *masked.input_shape[1:])).astype("float32")
    assert _rel_err(folded.predict(x, verbose=0), masked.predict(x, verbose=0)) <= 1e-6
    for old, new in zip(masked.layers, folded.layers, strict=True):
        if is_masked(old):
            np.testing.assert_array_equal(numpy(new.kernel), numpy(old.kernel))


def test_folded_model_loads_without_keras_ssm(tmp_path: Path) -> None:
    masked = keras_ssm.supermask(residual())
    folded = keras_ssm.fold(masked)
    path = tmp_path / "folded.keras"
    folded.save(path)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", folded.predict(x, verbose=0))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["keras_ssm"] = None  # any import of keras_ssm now fails
        import numpy as np, keras
        model = keras.saving.load_model(r"{path}")
        y = model.predict(np.load(r"{tmp_path / "x.npy"}"), verbose=0)
        assert np.array_equal(y, np.load(r"{tmp_path / "y.npy"}")), "outputs differ"
        print("OK")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().endswith("OK"), out.stderr[-2000:]


@pytest.mark.parametrize("batchnorm", ["stats", "frozen"])
def test_fit_through_supermask_moves_only_scores(batchnorm: str) -> None:
    masked = keras_ssm.supermask(residual(), batchnorm=batchnorm)
    masked.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = {v.path: numpy(v).copy() for v in masked.variables}
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    masked.fit(x, np.arange(16) % 5, epochs=1, batch_size=8, verbose=0)
    moved = {v.path for v in masked.variables if not np.array_equal(before[v.path], numpy(v))}
    statistics = {p for p in moved if p.endswith(("moving_mean", "moving_variance"))}
    assert moved and all(p.endswith("scores") or "seed" in p for p in moved - statistics), moved
    # "stats" (the default) updates every BatchNorm's moving statistics; "frozen" none
    assert len(statistics) == (4 if batchnorm == "stats" else 0), statistics

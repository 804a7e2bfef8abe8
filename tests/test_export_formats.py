"""to_onnx / to_tflite: outputs match Keras; failures leave nothing on disk."""

from __future__ import annotations

import os

import keras
import numpy as np
import onnx
import pytest

from keras_ssm.export import (
    ExportVerificationError,
    ort_session,
    run_tflite,
    shrink,
    to_onnx,
    to_tflite,
)
from keras_ssm.export import onnx as onnx_mod
from keras_ssm.export import tflite as tflite_mod

L = keras.layers

# tf2onnx converts TensorFlow graphs: the ONNX exporter needs the TensorFlow backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="ONNX export needs KERAS_BACKEND=tensorflow"
)


def ternarize(model: keras.Model, density: float = 0.1, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            k = np.array(layer.kernel)
            c = np.float32(np.sqrt(3.0 / np.prod(k.shape[:-1])))
            t = rng.choice(
                [-1.0, 0.0, 1.0], size=k.shape, p=[density / 2, 1 - density, density / 2]
            )
            layer.kernel.assign((c * t).astype(np.float32))
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, n).astype(np.float32))


def mlp() -> keras.Model:
    m = keras.Sequential(
        [
            keras.Input((20,)),
            L.Dense(32, activation="elu", use_bias=False),
            L.Dense(16, activation="elu", use_bias=False),
            L.Dense(4, activation="softmax", use_bias=False),
        ]
    )
    ternarize(m, 0.2)
    return m


def cnn() -> keras.Model:
    m = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Conv2D(8, 3, padding="same"),
            L.BatchNormalization(),
            L.ELU(),
            L.MaxPooling2D(),
            L.Conv2D(8, 3, padding="same", activation="elu"),
            L.AveragePooling2D(2),
            L.Flatten(),
            L.Dense(10, activation="softmax"),
        ]
    )
    ternarize(m, 0.3, seed=1)
    return m


def residual() -> keras.Model:
    inp = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="elu")(inp)
    y = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("elu")(y)
    y = L.Conv2D(8, 3, padding="same", use_bias=False)(y)
    s = L.Conv2D(8, 1, strides=1)(x)
    x = L.Add()([s, y])
    x = L.Conv2D(16, 3, strides=2, padding="valid", activation="elu")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5, activation="softmax")(x)
    m = keras.Model(inp, out)
    ternarize(m, 0.3, seed=2)
    return m


@pytest.fixture(scope="module")
def models():
    return {"mlp": mlp(), "cnn": cnn(), "residual": residual()}


def _x(model: keras.Model, batch: int) -> np.ndarray:
    shape = (batch,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(5).standard_normal(shape).astype(np.float32)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual"])
def test_keras_onnx_litert_agree(models, name, tmp_path):
    m = models[name]
    res = to_onnx(m, tmp_path / "m.onnx")
    assert res.max_rel_error <= 1e-5
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].name == "input"
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    x = _x(m, 7)
    want = np.asarray(m(x))
    (got_onnx,) = ort_session(str(tmp_path / "m.onnx")).run(None, {"input": x})
    assert _rel(got_onnx, want) <= 1e-5
    res = to_tflite(m, tmp_path / "m.tflite")
    assert res.max_rel_error <= 1e-5
    (got_tfl,) = run_tflite(str(tmp_path / "m.tflite"), x)
    assert _rel(got_tfl, want) <= 1e-5
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.tflite"]  # no temp files left


def test_shrunk_model_exports_and_agrees(models, tmp_path):
    m = models["cnn"]
    small, _ = shrink(m)
    to_onnx(small, tmp_path / "s.onnx", input_name="pixels", opset=13)
    x = _x(m, 4)
    (got,) = ort_session(str(tmp_path / "s.onnx")).run(None, {"pixels": x})
    assert _rel(got, np.asarray(m(x))) <= 1e-5


def test_sparse_tflite_is_smaller(models, tmp_path):
    m = mlp()
    ternarize(m, 0.05)
    dense = to_tflite(m, tmp_path / "d.tflite", sparse=False)
    sparse = to_tflite(m, tmp_path / "s.tflite", sparse=True)
    assert sparse.nbytes < dense.nbytes


def test_failed_onnx_verification_leaves_nothing(models, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_mod, "_run_onnx", lambda path, name, x: [np.zeros((x.shape[0], 4))])
    with pytest.raises(ExportVerificationError, match="differs from Keras"):
        to_onnx(models["mlp"], tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_failed_tflite_verification_leaves_nothing(models, tmp_path, monkeypatch):
    monkeypatch.setattr(
        tflite_mod,
        "run_tflite",
        lambda path, x, default_delegates=True: [np.full((x.shape[0], 4), np.nan)],
    )
    with pytest.raises(ExportVerificationError):
        to_tflite(models["mlp"], tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_existing_file_is_not_overwritten(models, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="m.onnx"):
        to_onnx(models["mlp"], target)
    with pytest.raises(FileExistsError):
        to_tflite(models["mlp"], target)
    assert target.read_bytes() == b"keep me"
    to_onnx(models["mlp"], target, overwrite=True)
    assert target.read_bytes() != b"keep me"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_multi_input_model_is_rejected_cleanly(tmp_path):
    a, b = keras.Input((3,)), keras.Input((3,))
    m = keras.Model([a, b], L.Dense(2)(L.Concatenate()([a, b])))
    with pytest.raises(ValueError, match="single-input"):
        to_onnx(m, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []

"""Exact int8 weights for ternary kernels (ONNX) and what LiteRT's int8 stores."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import onnx
import pytest

from keras_ssm.export import is_ternary, ort_session, run_tflite, ternary_codes, to_onnx, to_tflite
from keras_ssm.export.int8 import onnx_dequantized_weights, tflite_int8_weights

L = keras.layers

# tf2onnx converts TensorFlow graphs: the ONNX exporter needs the TensorFlow backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="ONNX export needs KERAS_BACKEND=tensorflow"
)


def ternary_model(conv: bool = False, seed: int = 0) -> keras.Model:
    if conv:
        m = keras.Sequential(
            [
                keras.Input((10, 10, 3)),
                L.Conv2D(16, 3, activation="elu"),
                L.MaxPooling2D(),
                L.Flatten(),
                L.Dense(40, activation="elu"),
                L.Dense(4, activation="softmax"),
            ]
        )
    else:
        m = keras.Sequential(
            [
                keras.Input((64,)),
                L.Dense(48, activation="elu", use_bias=False),
                L.Dense(32, activation="elu", use_bias=False),
                L.Dense(10, activation="softmax", use_bias=False),
            ]
        )
    rng = np.random.default_rng(seed)
    for layer in m.layers:
        if hasattr(layer, "kernel"):
            k = np.array(layer.kernel)
            c = np.float32(np.sqrt(3.0 / np.prod(k.shape[:-1])))
            t = rng.choice([-1.0, 0.0, 1.0], size=k.shape, p=[0.1, 0.8, 0.1])
            layer.kernel.assign((c * t).astype(np.float32))
    return m


def test_is_ternary():
    c = np.float32(np.sqrt(3 / 784))
    k = c * np.array([[1, 0, -1], [0, 0, 1]], np.float32)
    assert is_ternary(k) == float(c) and np.float32(is_ternary(k)) == c
    assert is_ternary(np.zeros((2, 2), np.float32)) == 0.0
    assert is_ternary(np.array([1.0, 2.0], np.float32)) is None
    assert is_ternary(np.array([1.0, np.nan], np.float32)) is None
    assert is_ternary(np.array([1, 0], np.int32)) is None
    q, s = ternary_codes(k)
    assert q.dtype == np.int8 and np.array_equal(q.astype(np.float32) * np.float32(s), k)
    with pytest.raises(ValueError):
        ternary_codes(np.array([1.0, 2.0], np.float32))


@pytest.mark.parametrize("conv", [False, True])
def test_onnx_int8_weights_are_exact(conv, tmp_path):
    m = ternary_model(conv)
    res = to_onnx(m, tmp_path / "q.onnx", int8=True)
    assert res.max_rel_error <= 1e-5
    kernels = [np.array(la.kernel) for la in m.layers if hasattr(la, "kernel")]
    assert len(res.details["quantized"]) == len(kernels)
    proto = onnx.load(str(tmp_path / "q.onnx"))
    int8_inits = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_inits) >= len(kernels)
    deq = list(onnx_dequantized_weights(proto).values())
    for k in kernels:  # each Keras kernel is reproduced bit for bit (conv: OIHW layout)
        cands = [k, k.transpose(3, 2, 0, 1)] if k.ndim == 4 else [k]
        assert any(d.shape == c.shape and np.array_equal(d, c) for d in deq for c in cands)
    x = np.random.default_rng(1).standard_normal((64,) + tuple(m.inputs[0].shape[1:]))
    x = x.astype(np.float32)
    (got,) = ort_session(str(tmp_path / "q.onnx"), exact=True).run(None, {"input": x})
    want = np.asarray(m(x))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-5
    to_onnx(m, tmp_path / "f.onnx")
    assert (tmp_path / "q.onnx").stat().st_size < (tmp_path / "f.onnx").stat().st_size


CODE_TYPES = {8: onnx.TensorProto.INT8, 4: onnx.TensorProto.INT4, 2: onnx.TensorProto.INT2}


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("conv", [False, True])
def test_int8_onnx_is_exact_in_a_default_session(conv, bits, tmp_path):
    """A user's plain ``onnxruntime.InferenceSession(path)`` (default options and graph
    optimizations) computes exactly what the fp32 file computes: no session option needed,
    whatever the codes' width."""
    import onnxruntime as ort

    m = ternary_model(conv)
    res = to_onnx(m, tmp_path / "q.onnx", int8=True, code_bits=bits)
    to_onnx(m, tmp_path / "f.onnx")
    proto = onnx.load(str(tmp_path / "q.onnx"))
    assert "DequantizeLinear" not in {n.op_type for n in proto.graph.node}
    codes = [t for t in proto.graph.initializer if t.name.endswith("_int8")]
    kernels = [la for la in m.layers if hasattr(la, "kernel")]
    assert len(codes) == len(kernels) and {t.data_type for t in codes} == {CODE_TYPES[bits]}
    assert {q.bits for q in res.details["quantized"]} == {bits}
    assert res.details["opset"] == {8: 17, 4: 21, 2: 25}[bits]
    assert proto.opset_import[0].version == res.details["opset"]
    weights = sum(int(np.prod(la.kernel.shape)) for la in kernels)
    packed = sum(len(t.raw_data) for t in codes)  # bits per weight, packed
    assert packed == sum(-(-int(np.prod(t.dims)) * bits // 8) for t in codes) < weights + 8
    x = np.random.default_rng(2).standard_normal((64,) + tuple(m.inputs[0].shape[1:]))
    x = x.astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"input": x})[0]
    fp32 = ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, fp32)  # the same float weights, bit for bit
    want = np.asarray(m(x))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-6


def test_dequantize_form_needs_the_session_option(tmp_path):
    """The QDQ form is kept as an option, and exact in keras_ssm's sessions."""
    from keras_ssm.export.int8 import quantize_onnx_ternary

    m = ternary_model(conv=False)
    to_onnx(m, tmp_path / "f.onnx")
    proto, done = quantize_onnx_ternary(onnx.load(str(tmp_path / "f.onnx")), form="dequantize")
    assert done and "DequantizeLinear" in {n.op_type for n in proto.graph.node}
    x = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    sess = ort_session(proto.SerializeToString(), exact=True)
    got = sess.run(None, {"input": x})[0]
    want = np.asarray(m(x))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-6
    with pytest.raises(ValueError, match="allowed: cast, dequantize"):
        quantize_onnx_ternary(proto, form="int4")
    for bad in (3, 16, True, "2"):
        with pytest.raises(ValueError, match="must be one of 8, 4, 2"):
            quantize_onnx_ternary(proto, bits=bad)
    with pytest.raises(ValueError, match="code_bits must be one of 8, 4, 2; got 3"):
        to_onnx(m, tmp_path / "bad.onnx", int8=True, code_bits=3)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_dequantize_form(bits, tmp_path):
    """The QDQ form with int4 / int2 codes rebuilds the same weights (numpy and onnxruntime)."""
    from keras_ssm.export.int8 import quantize_onnx_ternary

    m = ternary_model(conv=True)
    to_onnx(m, tmp_path / "f.onnx")
    fp32 = onnx.load(str(tmp_path / "f.onnx"))
    proto, done = quantize_onnx_ternary(fp32, form="dequantize", bits=bits)
    onnx.checker.check_model(proto)
    zero_points = [t for t in proto.graph.initializer if t.name.endswith("_zero_point")]
    assert done and {t.data_type for t in zero_points} == {CODE_TYPES[bits]}
    deq = onnx_dequantized_weights(proto)
    originals = {t.name: onnx.numpy_helper.to_array(t) for t in fp32.graph.initializer}
    assert deq and all(np.array_equal(v, originals[k]) for k, v in deq.items())
    x = np.random.default_rng(3).standard_normal((8, 10, 10, 3)).astype(np.float32)
    got = ort_session(proto.SerializeToString(), exact=True).run(None, {"input": x})[0]
    want = np.asarray(m(x))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) <= 1e-6


def test_tflite_int8_stores_ternary_codes(tmp_path):
    m = ternary_model(conv=True)
    res = to_tflite(m, tmp_path / "q.tflite", int8=True, sparse=False)
    assert res.max_rel_error <= 5e-2
    data = (tmp_path / "q.tflite").read_bytes()
    stored = tflite_int8_weights(data)
    kernels = {
        np.array(la.kernel).size: np.array(la.kernel)
        for la in m.layers
        if hasattr(la, "kernel") and np.array(la.kernel).size >= 1024
    }
    assert len(stored) == len(kernels)  # TFLite quantizes tensors of >= 1024 elements
    for w in stored:
        k = kernels[w["values"].size]
        c = np.float32(is_ternary(k))
        q = w["values"]
        assert set(np.unique(q)) <= {-127, 0, 127}
        # TFLite layout is (out, ...): move the output axis last to compare with Keras
        q_k = (
            np.moveaxis(q, 0, -1).reshape(k.shape) if k.ndim == 2 else np.transpose(q, (1, 2, 3, 0))
        )
        assert np.array_equal(np.sign(q_k), np.sign(k))  # ternary pattern exact
        deq = np.float32(127) * w["scales"].astype(np.float32)
        live = np.unique(np.nonzero(q)[0])
        assert np.all(np.abs(deq[live] - c) <= np.spacing(c))  # scale c/127: within 1 ulp


def test_sparse_int8_tflite_warns_and_runs_without_xnnpack(tmp_path):
    m = ternary_model(conv=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = to_tflite(m, tmp_path / "q.tflite", int8=True, sparse=True)
    assert res.details["default_delegates_ok"] is False
    assert any("XNNPACK" in str(r.message) for r in rec)
    x = np.ones((2, 64), np.float32)
    (y,) = run_tflite(str(tmp_path / "q.tflite"), x, default_delegates=False)
    assert y.shape == (2, 10)

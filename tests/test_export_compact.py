"""The .ssm compact format: bit-exact round trip, size, and clear errors on bad files."""

from __future__ import annotations

import json
import os
import struct
import zlib

import keras
import numpy as np
import pytest

from keras_ssm.export import CompactFormatError, compact_bytes, load_compact, save_compact
from keras_ssm.export.compact import FORMAT_VERSION, MAGIC, model_from_compact_bytes

L = keras.layers


def fcn(density: float = 0.038, seed: int = 0) -> keras.Model:
    """MNIST FCN 784-300-100-10, no biases, random ternary mask, ~half the signs flipped."""
    m = keras.Sequential(
        [
            keras.Input((784,)),
            L.Dense(300, activation="elu", use_bias=False),
            L.Dense(100, activation="elu", use_bias=False),
            L.Dense(10, activation="softmax", use_bias=False),
        ]
    )
    rng = np.random.default_rng(seed)
    for layer in m.layers:
        shape = tuple(layer.kernel.shape)
        n = int(np.prod(shape))
        c = np.float32(np.sqrt(3.0 / shape[0]))
        t = np.zeros(n, np.float32)
        live = rng.choice(n, int(round(density * n)), replace=False)
        t[live] = rng.choice([-1.0, 1.0], live.size)
        layer.kernel.assign(c * t.reshape(shape))
    return m


def small_cnn() -> keras.Model:
    m = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(4, 3, activation="elu"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(6, activation="relu"),
            L.Dense(3),
        ]
    )
    rng = np.random.default_rng(1)
    for layer in m.layers:
        for v in layer.weights:
            v.assign(rng.standard_normal(v.shape).astype(np.float32))
    k = np.array(m.layers[0].kernel)
    k[np.abs(k) < 1.0] = 0.0  # sparse, not ternary -> "sparse" encoding
    m.layers[0].kernel.assign(k)
    m.layers[0].bias.assign(np.zeros(4, np.float32))
    m.layers[-1].kernel.assign(np.float32(0.25) * np.sign(np.array(m.layers[-1].kernel)))
    return m


@pytest.fixture(scope="module")
def fcn_bytes():
    m = fcn()
    return m, compact_bytes(m)


def _same(a: keras.Model, b: keras.Model, shape) -> None:
    for va, vb in zip(a.weights, b.weights, strict=True):
        assert va.name == vb.name and va.shape == vb.shape
        assert np.array_equal(np.asarray(va), np.asarray(vb))
    x = np.random.default_rng(2).standard_normal((5,) + shape).astype(np.float32)
    assert np.array_equal(np.asarray(a(x)), np.asarray(b(x)))


def test_fcn_round_trip_and_size(fcn_bytes, tmp_path):
    m, data = fcn_bytes
    kernels = [np.asarray(w) for w in m.weights]
    remaining = sum(np.count_nonzero(k) for k in kernels) / sum(k.size for k in kernels)
    assert remaining == pytest.approx(0.038, abs=5e-4)
    path = tmp_path / "fcn.ssm"
    n = save_compact(m, path)
    assert n == len(data) == path.stat().st_size
    print(f"\nFCN 784-300-100-10 at 3.8% remaining: {n} bytes (dense fp32: 1064800)")
    # keras_ssm.export documents "an MNIST FCN at 3.8% remaining is under 10 KB" (10,000 bytes)
    assert n < 10_000
    _same(m, load_compact(path), (784,))


def test_mixed_encodings_round_trip(tmp_path):
    m = small_cnn()
    save_compact(m, tmp_path / "c.ssm")
    meta = _meta(compact_bytes(m))
    assert {w["enc"] for w in meta["weights"]} >= {"ternary", "sparse", "raw"}
    _same(m, load_compact(tmp_path / "c.ssm"), (8, 8, 2))


def test_functional_model_round_trip():
    inp = keras.Input((6,))
    x = L.Dense(5, activation="elu")(inp)
    y = L.Add()([x, L.Dense(5)(x)])
    m = keras.Model(inp, L.Dense(2)(y))
    _same(m, model_from_compact_bytes(compact_bytes(m)), (6,))


def test_the_compact_export_runs_on_every_backend(tmp_path):
    """The export pipeline's compact file (fold, shrink, crop, .ssm) needs no TensorFlow, so a
    run trained on JAX is collected where it ran; ONNX and LiteRT still need TensorFlow."""
    import keras_ssm
    from keras_ssm.export import export_model

    keras.utils.set_random_seed(3)
    model = keras_ssm.supermask(small_cnn())
    report = export_model(model, tmp_path / "out", "compact", shrink=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.json", "model.ssm"]
    assert report["shrink_max_rel_error"] < 1e-5
    loaded = load_compact(tmp_path / "out" / "model.ssm")
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(loaded(x)), np.asarray(keras_ssm.fold(model)(x)), rtol=1e-5, atol=1e-6
    )
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="onnx needs the TensorFlow backend.*'jax'|compact"):
            export_model(model, tmp_path / "onnx", "onnx,compact", shrink=True)
        assert not (tmp_path / "onnx").exists()


def test_no_overwrite(tmp_path, fcn_bytes):
    p = tmp_path / "a.ssm"
    p.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        save_compact(fcn_bytes[0], p)
    assert p.read_bytes() == b"x"


def _meta(data: bytes) -> dict:
    _, _, _, _, mz = struct.unpack_from("<8sHHII", data)
    return json.loads(zlib.decompress(data[20 : 20 + mz]))


def _rebuild(meta: dict, payload: bytes, version: int = FORMAT_VERSION) -> bytes:
    """A well-formed container (valid CRC) around arbitrary metadata: tests the validators."""
    raw = json.dumps(meta).encode()
    z = zlib.compress(raw)
    body = struct.pack("<8sHHII", MAGIC, version, 0, len(raw), len(z)) + z + payload
    return body + struct.pack("<I", zlib.crc32(body))


def _payload(data: bytes) -> bytes:
    _, _, _, _, mz = struct.unpack_from("<8sHHII", data)
    return data[20 + mz : -4]


def test_truncated_files_give_clear_errors(fcn_bytes):
    _, data = fcn_bytes
    offsets = sorted(set(list(range(0, 64)) + list(range(64, len(data), 97)) + [len(data) - 1]))
    for cut in offsets:
        with pytest.raises(CompactFormatError):
            model_from_compact_bytes(data[:cut])


def test_flipped_bytes_give_clear_errors(fcn_bytes):
    _, data = fcn_bytes
    rng = np.random.default_rng(0)
    for pos in list(range(0, 24)) + list(rng.integers(0, len(data), 60)):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(CompactFormatError):
            model_from_compact_bytes(bytes(bad))


def test_bad_magic_and_version(fcn_bytes):
    _, data = fcn_bytes
    with pytest.raises(CompactFormatError, match="magic"):
        model_from_compact_bytes(b"PK\x03\x04" + data[4:])
    bad = bytearray(data)
    bad[8:10] = struct.pack("<H", FORMAT_VERSION + 1)
    with pytest.raises(CompactFormatError, match="version"):
        model_from_compact_bytes(bytes(bad))
    with pytest.raises(CompactFormatError):
        model_from_compact_bytes(b"")


def test_huge_declared_lengths_are_refused_before_allocation(fcn_bytes):
    _, data = fcn_bytes
    meta, payload = _meta(data), _payload(data)
    # header lengths larger than the file (valid CRC)
    body = struct.pack("<8sHHII", MAGIC, FORMAT_VERSION, 0, 2**32 - 1, 2**32 - 1)
    with pytest.raises(CompactFormatError, match="exceeds|limit"):
        model_from_compact_bytes(body + struct.pack("<I", zlib.crc32(body)))
    # a weight declaring 10^12 elements, a ternary stream claiming more nonzeros than fit
    for patch in (
        {"shape": [10**6, 10**6]},
        {"nbytes": 10**12},
        {"n": 10**9},
        {"unary": 10**9},
        {"k": 99},
        {"dtype": "object"},
        {"enc": "pickle"},
        {"shape": "784x300"},
        {"scale_bits": -1},
    ):
        bad = json.loads(json.dumps(meta))
        bad["weights"][0].update(patch)
        with pytest.raises(CompactFormatError):
            model_from_compact_bytes(_rebuild(bad, payload))
    # trailing garbage, missing weights, wrong architecture
    with pytest.raises(CompactFormatError, match="unexpected bytes"):
        model_from_compact_bytes(_rebuild(meta, payload + b"\0"))
    bad = json.loads(json.dumps(meta))
    bad["weights"].pop()
    with pytest.raises(CompactFormatError):
        model_from_compact_bytes(_rebuild(bad, payload))
    bad = json.loads(json.dumps(meta))
    bad["model"] = {"class_name": "NoSuchModel", "config": {}}
    with pytest.raises(CompactFormatError, match="architecture"):
        model_from_compact_bytes(_rebuild(bad, payload))
    with pytest.raises(CompactFormatError):
        model_from_compact_bytes(_rebuild({"format": "other"}, b""))


def test_corrupt_streams_with_valid_checksum(fcn_bytes):
    _, data = fcn_bytes
    meta, payload = _meta(data), bytearray(_payload(data))
    first = meta["weights"][0]
    assert first["enc"] == "ternary"
    # all-ones unary stream: no terminating zeros -> wrong number of codes
    broken = bytes([0xFF] * first["unary"]) + bytes(payload[first["unary"] :])
    with pytest.raises(CompactFormatError, match="unary"):
        model_from_compact_bytes(_rebuild(meta, broken))
    # all-zero unary stream: too many codes
    broken = bytes(first["unary"]) + bytes(payload[first["unary"] :])
    with pytest.raises(CompactFormatError):
        model_from_compact_bytes(_rebuild(meta, broken))


def test_no_pickle_or_eval_in_the_package():
    import keras_ssm.export as pkg

    root = os.path.dirname(pkg.__file__)
    for name in os.listdir(root):
        if name.endswith(".py"):
            text = open(os.path.join(root, name), encoding="utf-8").read()
            for bad in ("import pickle", "allow_pickle=True", "eval(", "exec("):
                assert bad not in text, (name, bad)

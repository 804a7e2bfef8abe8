"""Sparse LiteRT export on every valid model: the converter's 1x4 block encoding of a
FULLY_CONNECTED weight keeps only ``inputs // 4`` blocks per row, so when ``inputs % 4 != 0`` it
loses the weights of the last ``inputs % 4`` inputs; :func:`to_tflite` re-encodes those
tensors. Plus random small architectures through fold -> shrink -> ONNX / LiteRT (sparse)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ssm.export import tflite as tflite_mod
from keras_ssm.export import tflite_sparse as sparse_mod
from keras_ssm.export._verify import keras_outputs, max_rel_error
from keras_ssm.export.tflite import run_tflite, tflite_bytes, to_tflite

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TFLite conversion needs TensorFlow"
)

ROOT = Path(__file__).resolve().parents[1]
L = keras.layers


def dense_model(kernel: np.ndarray) -> keras.Model:
    n_in, n_out = kernel.shape
    m = keras.Sequential([keras.Input((n_in,)), L.Dense(n_out)])
    m.layers[0].set_weights([kernel.astype("float32"), np.linspace(-1, 1, n_out, dtype="float32")])
    return m


def litert_error(m: keras.Model, data: bytes) -> float:
    x = np.random.default_rng(0).standard_normal((5, m.inputs[0].shape[1])).astype("float32")
    return max_rel_error(run_tflite(data, x), keras_outputs(m, x))


def sparse_tensors(data: bytes) -> list[dict]:
    """Each sparse tensor of a flatbuffer: shape, block map and the operators reading it."""
    fb = sparse_mod.read(data)
    graph = fb.subgraphs[0]
    return [
        {
            "shape": [int(d) for d in t.shape],
            "block_map": [] if t.sparsity.blockMap is None else list(t.sparsity.blockMap),
            "readers": [
                sparse_mod.opcode(fb, op) for op in graph.operators if i in list(op.inputs)
            ],
        }
        for i, t in enumerate(graph.tensors)
        if t.sparsity is not None
    ]


# The minimal reproduction: one Dense layer with 3 inputs and half of its kernel zero. The
# converter stores it in 1x4 blocks along the inputs: 3 // 4 = 0 blocks, the whole kernel lost.
KERNEL_3_INPUTS = 0.5 * np.array(
    [[1, 0, -1, 0, 1, 0], [0, 1, 0, -1, 0, 1], [1, -1, 0, 0, 0, 1]], dtype="float32"
)


def test_dense_with_3_inputs_keeps_its_kernel(tmp_path):
    m = dense_model(KERNEL_3_INPUTS)
    assert litert_error(m, tflite_bytes(m, sparse=True)) <= 1e-5
    res = to_tflite(m, tmp_path / "m.tflite")  # verified: raised ExportVerificationError before
    assert res.max_rel_error <= 1e-5
    assert res.details["sparse_reencoded"]


def test_the_converter_truncates_blocks_and_the_rule_sees_it():
    """What the fix relies on, on this TensorFlow: the raw converter output stores the
    3-input kernel in 1x4 blocks and computes without it."""
    m = dense_model(KERNEL_3_INPUTS)
    raw = tflite_mod._convert(m, sparse=True, int8=False)
    if not sparse_mod.truncated_sparse_tensors(sparse_mod.read(raw)):
        pytest.skip("this converter no longer stores the kernel in truncated blocks")
    (t,) = sparse_tensors(raw)
    assert t["shape"] == [6, 3] and t["block_map"] == [1]
    assert litert_error(m, raw) > 0.1  # the wrong file the verification used to catch


def test_last_inputs_outside_whole_blocks_stay_sparse():
    """30 inputs: blocks cover inputs 0..27; inputs 28 and 29 carry weights. The kernel is
    re-encoded in random sparsity read through DENSIFY (not dense: much smaller)."""
    rng = np.random.default_rng(0)
    k = np.zeros((30, 64), "float32")
    k[0:4, 0:8] = rng.choice([-1.0, 1.0], (4, 8))
    k[8:12, 40:48] = 1.0
    k[28:30, :] = rng.choice([-1.0, 0.0, 1.0], (2, 64))
    m = dense_model(k)
    data = tflite_bytes(m, sparse=True)
    assert litert_error(m, data) <= 1e-5
    (t,) = sparse_tensors(data)
    densify = sparse_mod.schema().BuiltinOperator.DENSIFY
    assert t["shape"] == [64, 30] and t["block_map"] == [] and t["readers"] == [densify]
    assert len(data) < len(tflite_bytes(m, sparse=False)) / 2


def test_whole_blocks_keep_the_block_encoding():
    k = np.zeros((32, 16), "float32")
    k[0:4, 0:4] = 1.0
    k[28:32, 10:12] = -1.0
    m = dense_model(k)
    data, repair = tflite_mod._tflite_bytes(m, sparse=True, int8=False)
    assert repair == {}
    (t,) = sparse_tensors(data)
    assert t["block_map"] == [1]  # 32 inputs: 8 whole blocks, nothing lost, nothing changed
    assert litert_error(m, data) <= 1e-5


def test_shrunk_dense_22_3_6_exports_sparse(tmp_path):
    """The issue's example: a shrunk Dense 22 -> 3 -> 6 whose second kernel has 3 inputs."""
    rng = np.random.default_rng(3)
    m = keras.Sequential(
        [keras.Input((22,)), L.Dense(3, activation="tanh"), L.Dense(6, activation="linear")]
    )
    k1 = rng.choice([-0.3, 0.0, 0.3], (22, 3), p=[0.2, 0.6, 0.2]).astype("float32")
    m.layers[0].set_weights([k1, rng.normal(0, 0.5, 3).astype("float32")])
    m.layers[1].set_weights([KERNEL_3_INPUTS, rng.normal(0, 0.5, 6).astype("float32")])
    res = to_tflite(m, tmp_path / "m.tflite")
    assert res.max_rel_error <= 1e-5


def test_a_failed_repair_stores_the_model_dense(monkeypatch):
    def fail(fb, dense):  # noqa: ANN001, ANN202
        raise sparse_mod.MatchError("operators differ")

    monkeypatch.setattr(sparse_mod, "reencode", fail)
    m = dense_model(KERNEL_3_INPUTS)
    with pytest.warns(UserWarning, match="stored dense"):
        data, repair = tflite_mod._tflite_bytes(m, sparse=True, int8=False)
    assert repair == {"sparse_fallback": "dense model"}
    assert sparse_tensors(data) == [] and litert_error(m, data) <= 1e-5


def test_int8_blocks_of_16_lose_no_inputs(tmp_path):
    """int8 weights go in 1x16 blocks: 35 inputs leave inputs 32..34 outside every block."""
    rng = np.random.default_rng(1)
    k = np.zeros((35, 64), "float32")
    k[0:16, 0:8] = 0.2 * rng.choice([-1.0, 1.0], (16, 8))
    k[32:35, :] = 0.2 * rng.choice([-1.0, 0.0, 1.0], (3, 64))
    m = dense_model(k)
    with pytest.warns(UserWarning, match="XNNPACK"):
        res = to_tflite(m, tmp_path / "q.tflite", int8=True, sparse=True)
    assert res.max_rel_error <= 5e-2 and res.details["sparse_reencoded"]
    (t,) = sparse_tensors((tmp_path / "q.tflite").read_bytes())
    assert t["block_map"] == []


# ----------------------------------------------------------------------------- random models


@pytest.fixture(scope="module")
def random_exports():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location(
        "random_exports", ROOT / "scripts" / "random_exports.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_architectures_export_exactly(random_exports):
    stages = ("fold", "shrink", "onnx", "onnx_int2", "onnx_aligned", "tflite_sparse")
    records = [random_exports.check_model(i, 7, stages, 1e-5) for i in range(24)]
    checked = [r for r in records if "degenerate" not in r]
    assert len(checked) >= 18
    bad = random_exports.failures(records, 1e-5)
    assert not bad, random_exports.summarize(records, stages, 1e-5) + f"\n{bad}"
    assert sum(r.get("int_coded", 0) > 0 for r in checked) >= len(checked) // 2  # 2-bit codes
    assert sum(r.get("aligned", 0) > 0 for r in checked) >= 2  # zero-filter padding came up
    repairs = [r["tflite_repair"] for r in checked if "tflite_repair" in r]
    assert all("sparse_fallback" not in r for r in repairs)  # re-encoded, never all dense
    # the seed is chosen so that the converter's truncated blocks do come up
    assert sum(bool(r.get("sparse_reencoded")) for r in repairs) >= 3

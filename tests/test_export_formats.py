"""fold -> shrink -> to_onnx / to_tflite: hidden units are removed, outputs match Keras;
failures leave nothing on disk."""

from __future__ import annotations

import os

import keras
import numpy as np
import onnx
import pytest

import keras_ssm
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


def set_mask(
    model: keras.Model,
    density: float,
    seed: int,
    hidden_in: dict[str, list[int]] | None = None,
    hidden_out: dict[str, list[int]] | None = None,
    wiring: dict[str, tuple[str, int]] | None = None,
) -> None:
    """Give every masked layer a fixed ternary mask ``T`` by setting its scores to ``2 tau T``.

    ``T`` is random with ``density`` nonzeros, then whole units are hidden deterministically:
    ``hidden_in[layer]`` lists units of ``layer`` whose incoming weights are all hidden (they
    output the constant ``act(bias)``); ``hidden_out[layer]`` lists input channels of ``layer``
    whose weights are all hidden (also through a Flatten: every input row ``p * C + c``), so
    those units of the layer feeding it have no outgoing weights.  ``wiring[layer] = (producer,
    C)`` names the masked layer whose ``C`` channels ``layer`` reads.  Every other unit is given
    an incoming and an outgoing weight among the units that stay, so exactly the hidden units
    can be removed.  Frozen biases and BatchNorm statistics get random non-zero values."""
    rng = np.random.default_rng(seed)
    hidden_in, hidden_out, wiring = hidden_in or {}, hidden_out or {}, wiring or {}
    for layer in model.layers:
        if keras_ssm.layers.is_masked(layer):
            shape = tuple(layer.scores.shape)
            producer, channels = wiring.get(layer.name, (None, shape[-2]))
            t = rng.choice([-1.0, 0.0, 1.0], size=shape, p=[density / 2, 1 - density, density / 2])
            view = t.reshape(-1, channels, shape[-1])  # (positions, input channels, units)
            dead_units = hidden_in.get(layer.name, [])
            gone = set(hidden_out.get(layer.name, [])) | set(hidden_in.get(producer, []))
            live_c = [c for c in range(channels) if c not in gone]
            live_u = [u for u in range(shape[-1]) if u not in dead_units]
            for i, u in enumerate(live_u):
                view[0, live_c[i % len(live_c)], u] = 1.0
            for i, c in enumerate(live_c):
                view[0, c, live_u[i % len(live_u)]] = -1.0
            view[:, :, dead_units] = 0.0
            view[:, hidden_out.get(layer.name, []), :] = 0.0
            tau = float(np.asarray(layer.mask_state["tau"]))
            layer.scores.assign((2.0 * tau * t).astype(np.float32))
            if layer.bias is not None:
                layer.bias.assign(rng.uniform(0.2, 0.8, shape[-1]).astype(np.float32))
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, n).astype(np.float32))


def _masked(stock: keras.Model) -> keras.Model:
    keras.utils.set_random_seed(11)  # w0: the same signs whatever ran before
    return keras_ssm.supermask(stock, mask="signed", threshold=0.4)


# Per model: (layer, units before, hidden with no inputs, hidden with no outputs).  Every other
# unit keeps incoming and outgoing weights, so shrink must remove exactly these.
DEAD = {
    "mlp": [("dense1", 32, 3, 2), ("dense2", 16, 1, 1)],
    "cnn": [("conv1", 8, 0, 2), ("conv2", 8, 3, 1)],
    "residual": [("y1", 8, 0, 2), ("conv16", 16, 3, 1)],
}
# Layers whose bias receives the constants of removed no-input units: (bias added, folded).
FOLDED = {
    "mlp": {"dense2": (True, True)},
    "cnn": {"dense": (False, True)},
    "residual": {"dense": (False, True)},
}


def mlp(density: float = 0.3) -> keras.Model:
    m = _masked(
        keras.Sequential(
            [
                keras.Input((20,)),
                L.Dense(32, activation="elu", name="dense1"),
                L.Dense(16, activation="elu", use_bias=False, name="dense2"),
                L.Dense(4, activation="softmax", use_bias=False, name="out"),
            ]
        )
    )
    set_mask(
        m,
        density,
        seed=0,
        hidden_in={"dense1": [0, 1, 2], "dense2": [0]},
        hidden_out={"dense2": [30, 31], "out": [15]},
        wiring={"dense2": ("dense1", 32), "out": ("dense2", 16)},
    )
    return m


def cnn() -> keras.Model:
    m = _masked(
        keras.Sequential(
            [
                keras.Input((12, 12, 3)),
                L.Conv2D(8, 3, padding="same", name="conv1"),
                L.BatchNormalization(),
                L.ELU(),
                L.MaxPooling2D(),
                L.Conv2D(8, 3, padding="same", activation="elu", name="conv2"),
                L.AveragePooling2D(2),
                L.Flatten(),
                L.Dense(10, activation="softmax", name="dense"),
            ]
        )
    )
    set_mask(
        m,
        0.3,
        seed=1,
        hidden_in={"conv2": [2, 3, 4]},  # constants elu(b) -> pooling -> Flatten -> dense bias
        hidden_out={"conv2": [0, 1], "dense": [7]},  # dense: at every spatial position
        wiring={"conv2": ("conv1", 8), "dense": ("conv2", 8)},
    )
    return m


def residual() -> keras.Model:
    inp = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="elu", name="stem")(inp)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="y1")(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("elu")(y)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="y2")(y)
    s = L.Conv2D(8, 1, strides=1, name="shortcut")(x)
    x = L.Add()([s, y])
    x = L.Conv2D(16, 3, strides=2, padding="valid", activation="elu", name="conv16")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5, activation="softmax", name="dense")(x)
    m = _masked(keras.Model(inp, out))
    set_mask(
        m,
        0.3,
        seed=2,
        hidden_in={"conv16": [0, 1, 2]},
        hidden_out={"y2": [0, 1], "dense": [15]},
        wiring={"y2": ("y1", 8), "dense": ("conv16", 16)},
    )
    return m


@pytest.fixture(scope="module")
def masked_models():
    return {"mlp": mlp(), "cnn": cnn(), "residual": residual()}


@pytest.fixture(scope="module")
def models(masked_models):
    """The folded (stock-layer) models."""
    return {name: keras_ssm.fold(m) for name, m in masked_models.items()}


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


def _units(layer) -> int:
    return layer.units if isinstance(layer, L.Dense) else layer.filters


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual"])
def test_fold_shrink_onnx_litert_agree_with_keras(masked_models, models, name, tmp_path):
    """Masked model -> fold -> shrink (the hidden units go) -> ONNX and LiteRT: same outputs."""
    m, folded = masked_models[name], models[name]
    x = _x(m, 6)
    want = np.asarray(m(x))
    assert _rel(folded(x), want) <= 1e-6
    small, report = shrink(folded)
    entries = {e.name: e for e in report.layers}
    for layer, before, no_in, no_out in DEAD[name]:
        assert layer in entries, f"shrink removed nothing from {layer}: {report}"
        e = entries[layer]
        assert (e.units_before, e.units_after) == (before, before - no_in - no_out), layer
        assert (e.removed_no_input, e.removed_no_output) == (no_in, no_out), layer
        assert _units(folded.get_layer(layer)) == before
        assert _units(small.get_layer(layer)) == before - no_in - no_out
    dead = {layer for layer, *_ in DEAD[name]}
    for layer in folded.layers:  # nothing else lost a unit
        if isinstance(layer, (L.Dense, L.Conv2D)) and layer.name not in dead:
            assert _units(small.get_layer(layer.name)) == _units(layer), layer.name
    for layer, (added, folded_in) in FOLDED[name].items():
        assert (entries[layer].bias_added, entries[layer].bias_folded) == (added, folded_in)
        assert small.get_layer(layer).use_bias
    assert set(entries) == dead | set(FOLDED[name])
    assert report.params_before == folded.count_params()
    assert report.params_after == small.count_params() < folded.count_params()
    assert _rel(small(x), want) <= 1e-5

    onnx_path, tflite_path = tmp_path / "s.onnx", tmp_path / "s.tflite"
    assert to_onnx(small, onnx_path, input_name="pixels", opset=13).max_rel_error <= 1e-5
    (got_onnx,) = ort_session(str(onnx_path)).run(None, {"pixels": x})
    assert _rel(got_onnx, want) <= 1e-5
    assert to_tflite(small, tflite_path).max_rel_error <= 1e-5
    (got_tfl,) = run_tflite(str(tflite_path), x)
    assert _rel(got_tfl, want) <= 1e-5


def test_sparse_tflite_is_smaller(tmp_path):
    m = keras_ssm.fold(mlp(density=0.05))
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


def _text_and_image_model(as_dict: bool) -> keras.Model:
    """An image, token ids read by an Embedding and a padding mask (keras_hub's backbones take
    such a dict), with a dict (or list) of outputs."""
    image = keras.Input((4, 4, 2), name="image")
    ids = keras.Input((5,), dtype="int32", name="ids")
    mask = keras.Input((5,), dtype="int32", name="mask")
    tokens = L.Embedding(7, 3)(ids) * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    hidden = L.Concatenate()([L.Flatten()(L.Conv2D(3, 3)(image)), L.Flatten()(tokens)])
    logits = L.Dense(4)(hidden)
    if as_dict:
        inputs = {"image": image, "ids": ids, "mask": mask}
        return keras.Model(inputs, {"logits": logits, "hidden": hidden})
    return keras.Model([image, ids, mask], [hidden, logits])


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "list"])
def test_multi_input_models_export_by_name(as_dict, tmp_path):
    from keras_ssm.export._verify import input_specs, keras_outputs, random_inputs
    from keras_ssm.export.pipeline import export_model

    keras.utils.set_random_seed(0)
    masked = keras_ssm.supermask(_text_and_image_model(as_dict))
    specs = {spec.name: spec for spec in input_specs(masked)}
    # a dict of inputs in sorted key order (keras.tree.flatten), a list in its own order
    order = ["ids", "image", "mask"] if as_dict else ["image", "ids", "mask"]
    assert list(specs) == order
    assert specs["ids"].high == 7 and specs["mask"].high is None  # ids below the vocabulary
    report = export_model(masked, tmp_path / "out", shrink=True, int8=True)
    assert set(report["files"]) == {"model.onnx", "model_int8.onnx", "model.tflite", "model.ssm"}
    assert report["check_spread"] >= 1e-4

    folded = keras_ssm.fold(masked)
    x = random_inputs(folded, batch=5, seed=3)
    assert set(x) == {"ids", "image", "mask"} and np.all(x["mask"] == 1)
    want = keras_outputs(folded, x)  # dict outputs in sorted key order: hidden, logits
    sess = ort_session(tmp_path / "out" / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == order
    names = ["hidden", "logits"] if as_dict else ["output_0", "output_1"]
    assert [o.name for o in sess.get_outputs()] == names
    for got in (sess.run(None, x), run_tflite(str(tmp_path / "out" / "model.tflite"), x)):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_small_differences_are_still_caught(models, tmp_path, monkeypatch):
    """The tolerance grows with the model's sensitivity (float32 rounding in deep nets), not
    to the size of a conversion error: outputs off by 1% fail."""
    real = onnx_mod._run_onnx
    monkeypatch.setattr(
        onnx_mod, "_run_onnx", lambda path, names, x: [1.01 * y for y in real(path, names, x)]
    )
    with pytest.raises(ExportVerificationError, match="differs from Keras"):
        to_onnx(models["mlp"], tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_adapted_normalization_exports_as_constants(tmp_path):
    """An adapted Normalization (EfficientNet's first layer) holds its mean and variance as
    plain tensors; they must be constants of the ONNX graph, not inputs it asks for."""
    rng = np.random.default_rng(0)
    norm = keras.layers.Normalization()
    norm.adapt(rng.normal(3.0, 2.0, (64, 5)).astype("float32"))
    model = keras.Sequential([keras.Input((5,)), norm, keras.layers.Dense(3)])
    result = to_onnx(model, str(tmp_path / "n.onnx"))
    assert result.max_rel_error is not None and result.max_rel_error < 1e-5
    graph = onnx.load(str(tmp_path / "n.onnx")).graph
    assert [i.name for i in graph.input] == ["input"]
    assert isinstance(norm.mean, type(keras.ops.convert_to_tensor(np.zeros(1))))  # restored


def _saturating_model(kernel_scale: float) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="softmax", use_bias=False)]
    )
    kernel = np.random.default_rng(0).standard_normal((6, 4)).astype("float32")
    model.layers[0].set_weights([kernel_scale * kernel])
    return model


def test_checks_use_inputs_whose_outputs_differ(tmp_path):
    """A softmax saturated on unit-scale noise gives one-hot outputs that a wrong file could
    match; the check moves to smaller inputs, where the outputs differ between examples."""
    from keras_ssm.export._verify import keras_outputs, output_spread, probe_inputs

    model = _saturating_model(1e3)
    x1 = np.random.default_rng(0).standard_normal((8, 6)).astype("float32")
    ones = keras_outputs(model, x1)[0]
    # saturated at scale 1: one-hot up to float32 rounding (AVX2's exp gives 0.99999994)
    assert np.all((np.abs(ones) <= 1e-6) | (np.abs(ones - 1) <= 1e-6))
    assert output_spread(model, x1) == 0.0  # nothing moves: the check would be blind
    x, scale, spread = probe_inputs(model)
    assert scale < 1 and spread >= 1e-4 and output_spread(model, x) == spread
    result = to_onnx(model, str(tmp_path / "s.onnx"))
    assert result.details["check_input_scale"] == scale
    assert result.details["check_spread"] >= 1e-4


def test_constant_outputs_are_not_called_verified(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.layers[0].set_weights([np.zeros((6, 3), "float32"), np.ones(3, "float32")])
    with pytest.warns(UserWarning, match="does not verify the file"):
        result = to_onnx(model, str(tmp_path / "c.onnx"))
    assert result.details["check_spread"] == 0.0


def _optimized_ops(path, tmp_path) -> list[str]:
    """The node types onnxruntime runs for ``path`` under default session options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options)
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


@pytest.mark.parametrize("use_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("activation", ["elu", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_dense_layers_export_as_gemm_with_the_activation_fused(
    use_bias, activation, int8, tmp_path
):
    """A Dense layer is a Gemm (its bias as C), which onnxruntime fuses with the activation that
    follows it on a 2-D input (a 3-D input is reshaped around the Gemm); outputs equal Keras."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    seq = L.Dense(5, activation=activation, use_bias=use_bias)(inputs)  # 3-D
    x = L.Dense(8, activation=activation, use_bias=use_bias)(L.Flatten()(seq))
    out = L.Dense(3, activation="softmax", use_bias=use_bias)(x)
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.Dense):
            if int8:  # ternary kernels, so that int8 stores them
                k = layer.kernel.numpy()
                layer.kernel.assign(0.5 * np.sign(np.round(k * 3)).astype("float32"))
            if use_bias:  # not zeros, which a converter may drop
                layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    result = to_onnx(model, tmp_path / "m.onnx", int8=int8)
    assert result.max_rel_error <= 1e-5
    if int8:
        assert len(result.details["quantized"]) == 3
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("Gemm") == 3 and "MatMul" not in ops, ops
    assert ops.count("Add") == int(use_bias), ops  # the 3-D Dense's bias, after its Reshape
    optimized = _optimized_ops(tmp_path / "m.onnx", tmp_path)
    assert optimized.count("FusedGemm") == 1, optimized  # the 8-unit Dense and its activation
    act = {"elu": "Elu", "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[activation]
    assert optimized.count(act) == 1, optimized  # only the 3-D Dense's, after its Reshape


_POOLS = {
    "max": lambda: L.MaxPooling2D(2),
    "global-max": L.GlobalMaxPooling2D,
    "average": lambda: L.AveragePooling2D(2),
}


@pytest.mark.parametrize("pool", sorted(_POOLS))
@pytest.mark.parametrize("activation", ["elu", "selu", "softplus", "softsign", "relu", "tanh"])
def test_max_pool_runs_before_a_monotone_activation(activation, pool, tmp_path):
    """``Conv -> Elu -> MaxPool`` is written ``Conv -> MaxPool -> Elu`` (exact for an activation
    that never decreases), for the activations onnxruntime does not fuse into the Conv; ReLU and
    tanh stay fused, average pooling does not commute.  Outputs equal Keras' and, bit for bit,
    the graph's without the rewrite."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation=activation)])
    model.add(_POOLS[pool]())
    if pool != "global-max":
        model.add(L.Flatten())
    model.add(L.Dense(3))
    result = to_onnx(model, tmp_path / "m.onnx")
    assert result.max_rel_error <= 1e-5
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    act = {"elu": "Elu", "selu": "Selu", "softplus": "Softplus", "softsign": "Softsign"}
    act |= {"relu": "Relu", "tanh": "Tanh"}
    (node,) = [n for n in graph.node if n.op_type == act[activation]]
    moved = activation in ("elu", "selu", "softplus", "softsign") and pool != "average"
    pool_ops = {"max": ("MaxPool",), "global-max": ("GlobalMaxPool", "ReduceMax")}
    assert (made_by[node.input[0]] in pool_ops.get(pool, ())) is moved, [
        n.op_type for n in graph.node
    ]
    plain, _ = onnx_mod.onnx_bytes(model, rewrite=False)  # tf2onnx's graph
    ops = [n.op_type for n in plain.graph.node]
    pooled_at = [i for i, op in enumerate(ops) if op.endswith("Pool") or op == "ReduceMax"]
    assert ops.index(act[activation]) < pooled_at[0], ops  # activation first, as in Keras
    unrewritten = onnx_mod.matmuls_as_gemm(plain)  # every rewrite but the pool's
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 3)).astype("float32")
    got = ort_session(tmp_path / "m.onnx").run(None, {"input": x})[0]
    (tmp_path / "plain.onnx").write_bytes(unrewritten.SerializeToString())
    want = ort_session(tmp_path / "plain.onnx").run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, want)


def _act_pool_graph(act_attrs=None, pool_outputs=("y",), act_read_twice=False, act_is_output=False):
    """``x -> Elu (act_attrs) -> MaxPool 2x2 -> y`` by hand, with the variations the rewrite
    must refuse: another reader or a graph output on the Elu, the pool's Indices output."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Elu", ["x"], ["a"], **(act_attrs or {})),
        helper.make_node("MaxPool", ["a"], list(pool_outputs), kernel_shape=[2, 2], strides=[2, 2]),
    ]
    full, pooled = [2, 3, 4, 4], [2, 3, 2, 2]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, pooled)]
    if act_read_twice:
        nodes.append(helper.make_node("Neg", ["a"], ["n"]))
        outputs.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, full))
    if act_is_output:
        outputs.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, full))
    if len(pool_outputs) > 1:
        outputs.append(helper.make_tensor_value_info(pool_outputs[1], TensorProto.INT64, pooled))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, full)
    graph = helper.make_graph(nodes, "g", [x], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "variant, moved",
    [
        ({}, True),
        ({"act_attrs": {"alpha": 0.5}}, True),
        ({"act_attrs": {"alpha": -0.5}}, False),  # decreasing below 0: max does not commute
        ({"act_read_twice": True}, False),
        ({"act_is_output": True}, False),
        ({"pool_outputs": ("y", "idx")}, False),
    ],
    ids=["default", "alpha-0.5", "alpha-negative", "two-readers", "graph-output", "indices"],
)
def test_pools_before_activations_only_where_exact(variant, moved, tmp_path):
    model = _act_pool_graph(**variant)
    rewritten = onnx_mod.pools_before_activations(model)
    onnx.checker.check_model(rewritten)
    order = [n.op_type for n in rewritten.graph.node][:2]
    assert order == (["MaxPool", "Elu"] if moved else ["Elu", "MaxPool"])
    assert [n.op_type for n in model.graph.node][:2] == ["Elu", "MaxPool"]  # a copy
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype("float32")
    runs = []
    for i, proto in enumerate((model, rewritten)):
        (tmp_path / f"{i}.onnx").write_bytes(proto.SerializeToString())
        runs.append(ort_session(tmp_path / f"{i}.onnx").run(None, {"x": x}))
    for before, after in zip(*runs, strict=True):
        np.testing.assert_array_equal(before, after)

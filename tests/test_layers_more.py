"""The masked layers of keras_ssm.layers_more (DepthwiseConv, SeparableConv, ConvTranspose,
Embedding, ReversibleEmbedding, keras_hub's PositionEmbedding): Keras' layer contract, parity
with the stock layers, what trains, gradients, ``.keras`` files, folding, bfloat16, supermask."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import ml_dtypes
import numpy as np
import pytest

import keras_ssm
from conftest import BACKEND, numpy
from keras_ssm import layers_more
from keras_ssm.layers import MASKED_LAYERS, is_masked, register_maskable
from keras_ssm.stats import mask_array, mask_stats, summary
from keras_ssm.training import precision

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 12  # the embeddings' input_dim


@dataclass(frozen=True)
class Case:
    """One masked layer type and a tiny configuration of it."""

    id: str
    masked: str  # its name in keras_ssm.layers_more
    kwargs: dict[str, Any]
    shape: tuple[int, ...]  # one example's input shape
    weights: tuple[str, ...] = ("kernel",)  # the masked weights, in stock order
    dtype: str = "float32"
    bias: bool = True
    hub: bool = False  # a keras_hub layer
    reverse: bool = False  # a ReversibleEmbedding: also project back (reverse=True)

    def cls(self) -> type:
        if self.hub:
            pytest.importorskip("keras_hub")
        return getattr(layers_more, self.masked)

    def stock(self) -> type:
        return self.cls().stock_class

    def make(self, **kwargs: Any) -> keras.layers.Layer:
        return self.cls()(**{**self.kwargs, **kwargs})

    def x(self, batch: int = 3, seed: int = 0) -> np.ndarray:
        if self.dtype == "int32":  # every row of the embeddings, some twice
            return np.resize(np.arange(VOCAB, dtype="int32"), (batch, *self.shape))
        return np.random.default_rng(seed).normal(size=(batch, *self.shape)).astype("float32")

    def scores_names(self) -> list[str]:
        """The trainable variables' names: one ``scores`` per masked weight."""
        special = {"depthwise_kernel": "depthwise_", "pointwise_kernel": "pointwise_"}
        special["reverse_embeddings"] = "reverse_"
        return [special.get(weight, "") + "scores" for weight in self.weights]

    def forward(self, layer: keras.layers.Layer, x: Any, **kwargs: Any) -> Any:
        y = layer(x, **kwargs)
        return layer(y, reverse=True, **kwargs) if self.reverse else y


SEPARABLE = ("depthwise_kernel", "pointwise_kernel")
EMBEDDING = {"input_dim": VOCAB, "output_dim": 4}
UNTIED = ("embeddings", "reverse_embeddings")
CASES = [
    Case("DepthwiseConv1D", "MaskedDepthwiseConv1D", {"kernel_size": 3}, (9, 3)),
    Case(
        "DepthwiseConv2D",
        "MaskedDepthwiseConv2D",
        {"kernel_size": 3, "depth_multiplier": 2},
        (6, 6, 3),
    ),
    Case(
        "SeparableConv1D",
        "MaskedSeparableConv1D",
        {"filters": 4, "kernel_size": 3},
        (9, 3),
        SEPARABLE,
    ),
    Case(
        "SeparableConv2D",
        "MaskedSeparableConv2D",
        {"filters": 4, "kernel_size": 3, "depth_multiplier": 2},
        (6, 6, 3),
        SEPARABLE,
    ),
    Case(
        "Conv1DTranspose",
        "MaskedConv1DTranspose",
        {"filters": 4, "kernel_size": 3, "strides": 2},
        (5, 3),
    ),
    Case(
        "Conv2DTranspose",
        "MaskedConv2DTranspose",
        {"filters": 4, "kernel_size": 3, "strides": 2},
        (4, 4, 3),
    ),
    Case(
        "Conv3DTranspose",
        "MaskedConv3DTranspose",
        {"filters": 3, "kernel_size": 2},
        (3, 3, 3, 2),
    ),
    Case("Embedding", "MaskedEmbedding", EMBEDDING, (5,), ("embeddings",), "int32", bias=False),
    Case(
        "ReversibleEmbedding",
        "MaskedReversibleEmbedding",
        {**EMBEDDING, "tie_weights": False},
        (5,),
        UNTIED,
        "int32",
        bias=False,
        reverse=True,
    ),
    Case(
        "ReversibleEmbedding-tied",
        "MaskedReversibleEmbedding",
        EMBEDDING,
        (5,),
        ("embeddings",),
        "int32",
        bias=False,
        reverse=True,
    ),
    Case(
        "hub-ReversibleEmbedding",
        "MaskedHubReversibleEmbedding",
        {**EMBEDDING, "tie_weights": False},
        (5,),
        UNTIED,
        "int32",
        bias=False,
        hub=True,
        reverse=True,
    ),
    Case(
        "hub-PositionEmbedding",
        "MaskedPositionEmbedding",
        {"sequence_length": 8},
        (5, 4),
        ("position_embeddings",),
        bias=False,
        hub=True,
    ),
]


def _params() -> list[Any]:
    return [pytest.param(case, id=case.id) for case in CASES]


def _built(case: Case, **kwargs: Any) -> keras.layers.Layer:
    layer = case.make(**kwargs)
    case.forward(layer, case.x())
    return layer


def _twin(layer: keras.layers.Layer, case: Case, weights: list[np.ndarray]) -> keras.layers.Layer:
    """The stock layer of ``layer.stock_config()``, built, holding ``weights``."""
    ref = layer.stock_class.from_config(layer.stock_config())
    case.forward(ref, case.x())
    ref.set_weights(weights)
    return ref


def _by_variable_name(layer: keras.layers.Layer) -> dict[str, Any]:
    """The masked parts by the name of the stock variable they stand for (w0's name)."""
    return {part.w0.name: part for part in layer.masked_parts()}


def _with(ref: keras.layers.Layer, values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``ref``'s weights with those named in ``values`` replaced."""
    return [values.get(v.name, numpy(v)) for v in ref.weights]


# ----------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("case", _params())
def test_keras_layer_contract(case: Case) -> None:
    """Keras' own layer test harness: config and serialization round trips, build, symbolic
    and eager calls, one compiled training step, mixed_float16."""
    from keras.src import testing

    layer = _built(case)
    out_shape = tuple(layer(case.x()).shape)
    n = len(case.weights)
    harness = testing.TestCase("run_layer_test")
    harness.run_layer_test(
        case.cls(),
        init_kwargs=case.kwargs,
        input_data=case.x(),
        expected_output_shape=out_shape,
        expected_num_trainable_weights=n,  # the scores
        expected_num_non_trainable_weights=2 * n + case.bias,  # w0, tau (and the bias)
        expected_num_non_trainable_variables=2 * n + case.bias,
        expected_num_seed_generators=0,
        expected_num_losses=0,
        supports_masking=False,
    )


@pytest.mark.parametrize("case", _params())
def test_signature_mirrors_the_stock_layer(case: Case) -> None:
    masked, stock = case.cls(), case.stock()
    ours = inspect.signature(masked).parameters
    for name, param in inspect.signature(stock.__init__).parameters.items():
        if name == "self" or param.kind is param.VAR_KEYWORD:
            continue
        assert name in ours, f"{masked.__name__} lacks stock argument {name!r}"
        if name.endswith("initializer") and name != "bias_initializer":  # weight_initializer's
            assert ours[name].default is None, name
        else:
            assert ours[name].default == param.default, name
    for name in ("mask", "weight_initializer", "score_initializer", "threshold", "train_bias"):
        assert name in ours
    assert issubclass(masked, stock) and masked.__module__ == "keras_ssm.layers_more"


@pytest.mark.parametrize("case", _params())
def test_registered_for_supermask_and_keras(case: Case) -> None:
    masked, stock = case.cls(), case.stock()
    assert MASKED_LAYERS[stock] is masked and register_maskable(stock) is masked
    assert keras.saving.get_registered_object(f"keras_ssm>{masked.__name__}") is masked
    assert is_masked(case.make())


# ----------------------------------------------------------------------------- what trains
@pytest.mark.parametrize("case", _params())
def test_only_scores_train_and_each_weight_reads_w0_times_mask(case: Case) -> None:
    layer = _built(case)
    parts = layer.masked_parts()
    assert [part.weight for part in parts] == list(case.weights)
    assert [v.name for v in layer.trainable_variables] == case.scores_names()
    for part in parts:
        assert not part.w0.trainable and part.scores.dtype == "float32"
        mask = numpy(layer.compute_mask_values(weight=part.weight))
        assert set(np.unique(mask)) == {-1.0, 0.0, 1.0}
        # the attribute the stock call reads is w0 * M, exactly
        np.testing.assert_array_equal(numpy(getattr(layer, part.weight)), numpy(part.w0) * mask)
    if len(parts) == 1:
        assert layer.w0 is parts[0].w0 and layer.scores is parts[0].scores
    if case.bias:
        assert not layer.bias.trainable
        trained = _built(case, train_bias=True)
        assert trained.bias.trainable and len(trained.trainable_variables) == len(parts) + 1


def test_each_masked_weight_has_its_own_scores_and_threshold() -> None:
    layer = layers_more.MaskedSeparableConv2D(4, 3, threshold=0.3)
    layer.build((None, 6, 6, 3))
    taus = []
    for part in layer.masked_parts():
        scores = numpy(part.scores)
        assert scores.shape == tuple(part.w0.shape)
        tau = float(numpy(part.mask_state["tau"]))
        np.testing.assert_allclose(tau, 0.3 * np.abs(scores).max(), rtol=1e-6)
        taus.append(tau)
    assert taus[0] != taus[1]
    assert layer.depthwise_scores is layer.masked_parts()[0].scores
    assert layer.pointwise_mask_state is layer.masked_parts()[1].mask_state
    with pytest.raises(AttributeError, match="masks 2 weights"):
        _ = layer.w0
    with pytest.raises(ValueError, match="masks 2 weights"):
        layer.compute_mask_values()
    with pytest.raises(ValueError, match="no weight 'kernel'"):
        layer.compute_mask_values(weight="kernel")


def test_initializer_aliases_regularizers_and_constraints_go_to_the_right_weight() -> None:
    layer = layers_more.MaskedSeparableConv2D(
        4,
        3,
        depthwise_initializer="glorot_uniform",  # the pointwise w0 keeps "elus"
        depthwise_regularizer=keras.regularizers.L2(0.1),
        pointwise_constraint=keras.constraints.NonNeg(),
    )
    layer(np.ones((1, 6, 6, 3), "float32"))
    dw, pw = (numpy(part.w0) for part in layer.masked_parts())
    assert len(np.unique(np.abs(pw).round(6))) == 1  # elus: one magnitude
    assert len(np.unique(np.abs(dw).round(6))) > 1  # glorot_uniform
    expected = 0.1 * np.sum(numpy(layer.depthwise_scores) ** 2)
    np.testing.assert_allclose(numpy(keras.ops.sum(layer.losses)), expected, rtol=1e-5)
    assert (
        layer.pointwise_scores.constraint is not None and layer.depthwise_scores.constraint is None
    )
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    config = clone.get_config()  # weight_initializer: the first weight's; others if they differ
    assert config["weight_initializer"]["class_name"] == "GlorotUniform"
    assert config["pointwise_initializer"]["class_name"] == "ELUS"
    assert "depthwise_initializer" not in config
    assert type(clone.depthwise_initializer).__name__ == "GlorotUniform"
    assert type(clone.pointwise_initializer).__name__ == "ELUS"
    with pytest.raises(ValueError, match="Pass either `weight_initializer` or its alias"):
        layers_more.MaskedDepthwiseConv2D(
            3, weight_initializer="he_normal", depthwise_initializer="ones"
        )
    with pytest.raises(ValueError, match="does not support LoRA"):
        layers_more.MaskedEmbedding(4, 2, lora_rank=2)
    with pytest.raises(ValueError, match="applies only to the 'signed' mask"):
        layers_more.MaskedEmbedding(4, 2, mask="topk", threshold=0.3)


def test_embedding_weights_argument_sets_w0() -> None:
    w = np.arange(8, dtype="float32").reshape(4, 2)
    layer = layers_more.MaskedEmbedding(4, 2, weights=w)
    np.testing.assert_array_equal(numpy(layer.w0), w)
    assert [v.name for v in layer.trainable_variables] == ["scores"]


# ----------------------------------------------------------------------------- gradients
def _grads(case: Case, layer: keras.layers.Layer, x: np.ndarray, loss, variables: list) -> list:
    """d loss(forward(layer, x, training=True)) / d ``variables``, on the active backend."""
    if BACKEND == "jax":
        import jax

        others = [v for v in layer.variables if all(v is not w for w in variables)]

        def f(values: list) -> Any:
            mapping = [*zip(variables, values, strict=True), *((v, v.value) for v in others)]
            with keras.StatelessScope(state_mapping=mapping):
                return loss(case.forward(layer, x, training=True))

        return [np.asarray(g) for g in jax.grad(f)([v.value for v in variables])]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = loss(case.forward(layer, x, training=True))
    grads = tape.gradient(out, [v.value for v in variables])
    return [tf.convert_to_tensor(g).numpy() for g in grads]  # Embedding's are IndexedSlices


@pytest.mark.parametrize("case", _params())
def test_score_gradient_is_weight_gradient_times_w0(case: Case) -> None:
    """Straight through: dL/ds = dL/dW * w0, dL/dW taken at W = w0 * M (the stock twin)."""
    layer = _built(case)
    x = case.x()
    out = numpy(case.forward(layer, x))
    r = np.random.default_rng(1).normal(size=out.shape).astype("float32")

    def loss(y: Any) -> Any:
        return keras.ops.sum(keras.ops.cast(y, "float32") * r)

    parts = layer.masked_parts()
    g_scores = _grads(case, layer, x, loss, [part.scores for part in parts])
    ref = _twin(layer, case, layer.folded_weights())
    by_name = {v.name: v for v in ref.weights}
    g_weights = _grads(case, ref, x, loss, [by_name[part.w0.name] for part in parts])
    for part, g_s, g_w in zip(parts, g_scores, g_weights, strict=True):
        assert np.abs(g_s).sum() > 0, part.weight
        expected = g_w * numpy(part.w0)
        np.testing.assert_allclose(g_s, expected, rtol=2e-5, atol=1e-6, err_msg=part.weight)


# ----------------------------------------------------------------------------- .keras files
def _model(case: Case, **kwargs: Any) -> keras.Model:
    inputs = keras.Input(case.shape, dtype=case.dtype)
    y = case.forward(case.make(**kwargs), inputs)
    y = keras.layers.Flatten()(y)
    return keras.Model(inputs, keras.layers.Dense(2)(y))


def _fit(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize("case", _params())
def test_keras_round_trip_is_bit_exact_and_training_continues(case: Case, tmp_path: Path) -> None:
    model = _model(case)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x = case.x(batch=8)
    y = np.random.default_rng(2).normal(size=(8, 2)).astype("float32")
    _fit(model, x, y)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer, back = model.layers[1], loaded.layers[1]
    assert type(back) is type(layer) and [p.weight for p in back.masked_parts()] == list(
        case.weights
    )
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    before = [numpy(part.scores).copy() for part in layer.masked_parts()]
    _fit(model, x, y)
    _fit(loaded, x, y)
    for part, again, old in zip(layer.masked_parts(), back.masked_parts(), before, strict=True):
        assert not np.array_equal(numpy(part.scores), old), part.weight  # training continues
        np.testing.assert_array_equal(numpy(part.scores), numpy(again.scores))
        np.testing.assert_array_equal(numpy(part.w0), numpy(again.w0))


# ----------------------------------------------------------------------------- folding
@pytest.mark.parametrize("mask", ["signed", "binary", "topk"])
@pytest.mark.parametrize("case", _params())
def test_folded_weights_give_a_stock_twin_with_the_same_outputs(case: Case, mask: str) -> None:
    layer = _built(case, mask=mask)
    folded = layer.folded_weights()
    ref = _twin(layer, case, folded)
    assert type(ref) is case.stock()
    x = case.x(seed=3)
    np.testing.assert_array_equal(numpy(case.forward(layer, x)), numpy(case.forward(ref, x)))
    # stock get_weights() order: each masked weight is exactly w0 * M (float32), the bias as is
    parts = _by_variable_name(layer)
    for variable, value in zip(ref.weights, folded, strict=True):
        part = parts.get(variable.name)
        if part is None:
            np.testing.assert_array_equal(value, numpy(layer.bias))
            continue
        m = numpy(layer.compute_mask_values(training=False, weight=part.weight))
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, numpy(part.w0) * m)
    # the twin is plain Keras: no keras_ssm object in its config
    assert "keras_ssm" not in json.dumps(keras.saving.serialize_keras_object(ref))


@pytest.mark.parametrize("case", _params())
def test_keras_ssm_fold_folds_the_layer(case: Case) -> None:
    model = _model(case)
    folded = keras_ssm.fold(model)
    assert type(folded.layers[1]) is case.stock()
    x = case.x()
    np.testing.assert_allclose(numpy(folded(x)), numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_set_stock_weights_is_the_inverse_of_folding_for_w0() -> None:
    layer = layers_more.MaskedSeparableConv1D(4, 3)
    layer.build((None, 9, 3))
    stock = keras.layers.SeparableConv1D(4, 3)
    stock.build((None, 9, 3))
    layer.set_stock_weights(stock.get_weights())
    for part, value in zip(layer.masked_parts(), stock.get_weights(), strict=False):
        np.testing.assert_array_equal(numpy(part.w0), value)
    with pytest.raises(ValueError, match="expects 3 stock weights"):
        layer.set_stock_weights(stock.get_weights()[:2])


# ----------------------------------------------------------------------------- bfloat16
def _boundary_scores(tau: float, shape: tuple[int, ...]) -> np.ndarray:
    """Scores at and one float32 step around +-tau: bfloat16 rounds them to the same value."""
    t = np.float32(tau)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    values = [t, np.nextafter(t, up), np.nextafter(t, down), -t, np.nextafter(-t, down)]
    values += [np.nextafter(-t, up), 0.0, 2 * t]
    return np.resize(np.array(values, dtype=np.float32), shape)


def _signed(scores: np.ndarray, tau: Any) -> np.ndarray:
    return (scores > tau).astype(np.float32) - (scores < -tau).astype(np.float32)


@pytest.mark.parametrize("case", _params())
def test_mask_in_a_bfloat16_call_is_the_float32_mask(case: Case) -> None:
    with precision.policy_scope("bfloat16"):
        layer = _built(case)
        assert layer.compute_dtype == "bfloat16"
        right, wrong = {}, {}
        for part in layer.masked_parts():
            assert part.scores.dtype == "float32"
            tau = numpy(part.mask_state["tau"])
            scores = _boundary_scores(float(tau), tuple(part.scores.shape))
            part.scores.assign(scores)
            want = _signed(scores, tau)
            # what a mask computed from bfloat16 copies of the scores would be
            bf16 = ml_dtypes.bfloat16
            naive = _signed(scores.astype(bf16).astype(np.float32), tau.astype(bf16))
            assert np.any(naive != want)
            np.testing.assert_array_equal(
                numpy(layer.compute_mask_values(weight=part.weight)), want
            )
            right[part.w0.name] = numpy(part.w0) * want
            wrong[part.w0.name] = numpy(part.w0) * naive

        x = case.x(seed=4)
        out = numpy(case.forward(layer, x))
        ref = _twin(layer, case, layer.folded_weights())
        assert ref.compute_dtype == "bfloat16"
        ref.set_weights(_with(ref, right))
        np.testing.assert_array_equal(out, numpy(case.forward(ref, x)))
        ref.set_weights(_with(ref, wrong))
        assert not np.array_equal(out, numpy(case.forward(ref, x)))  # the boundary matters
    # fold sees the float32 mask too: exact float32 w0 * M
    for variable, value in zip(ref.weights, layer.folded_weights(), strict=True):
        if variable.name in right:
            assert value.dtype == np.float32
            np.testing.assert_array_equal(value, right[variable.name])


# ----------------------------------------------------------------------------- supermask, stats
@pytest.mark.parametrize("case", _params())
def test_supermask_converts_the_stock_layer(case: Case) -> None:
    stock = case.stock()
    inputs = keras.Input(case.shape, dtype=case.dtype)
    y = keras.layers.Flatten()(case.forward(stock(**case.kwargs), inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(y))
    masked = keras_ssm.supermask(model)
    assert type(masked.layers[1]) is case.cls()
    names = [v.name for v in masked.trainable_variables]
    assert names and all(name.endswith("scores") for name in names)
    assert len(names) == len(case.weights) + 1  # and the Dense head's
    x = case.x()
    assert np.all(np.isfinite(numpy(masked(x))))


@pytest.mark.parametrize("case", _params())
def test_supermask_draws_w0_from_weight_initializer_or_keeps_the_weights(case: Case) -> None:
    inputs = keras.Input(case.shape, dtype=case.dtype)
    stock = case.stock()(**case.kwargs)
    model = keras.Model(inputs, case.forward(stock, inputs))
    masked = keras_ssm.supermask(model, weight_initializer="signed_constant").layers[1]
    for part in masked.masked_parts():  # signed_constant: one magnitude per weight
        assert len(np.unique(np.abs(numpy(part.w0)).round(6))) == 1, part.weight
    kept = keras_ssm.supermask(model, reinitialize=False).layers[1]
    for value, variable in zip(stock.get_weights(), kept._stock_weights(), strict=True):
        np.testing.assert_array_equal(numpy(variable), value)


def test_mask_stats_count_both_masks_of_a_separable_layer() -> None:
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            layers_more.MaskedSeparableConv2D(4, 3, name="sep"),
            keras.layers.Flatten(),
            keras_ssm.layers.MaskedDense(2, name="head"),
        ]
    )
    sep = model.layers[0]
    masks = [mask_array(sep, part.weight) for part in sep.masked_parts()]
    assert [m.shape for m in masks] == [(3, 3, 3, 1), (1, 1, 3, 4)]
    with pytest.raises(ValueError, match="masks 2 weights"):
        mask_array(sep)
    stats = mask_stats(model)
    row = stats["layers"][0]
    both = np.concatenate([m.ravel() for m in masks])
    assert row["name"] == "sep" and row["total"] == 27 + 12
    assert (row["kept"], row["inverted"]) == (int(np.sum(both > 0)), int(np.sum(both < 0)))
    assert stats["total"] == 39 + 4 * 4 * 4 * 2
    text = summary(model, print_fn=lambda _: None)
    assert "sep" in text and f"{39 + 4:,}" in text  # both masks and the bias


def test_summary_of_a_layer_without_bias() -> None:
    model = keras.Sequential(
        [keras.Input((5,), dtype="int32"), layers_more.MaskedEmbedding(VOCAB, 4, name="emb")]
    )
    assert mask_stats(model)["layers"][0]["total"] == VOCAB * 4
    assert "emb" in summary(model, print_fn=lambda _: None)


# ----------------------------------------------------------------------------- keras_hub
@pytest.mark.slow
def test_keras_hub_is_imported_lazily_and_its_masked_layers_load(tmp_path: Path) -> None:
    """``import keras_ssm`` does not import keras_hub; a ``.keras`` file holding a masked
    keras_hub layer loads anyway, and MASKED_LAYERS finds keras_hub layers once imported."""
    pytest.importorskip("keras_hub")
    case = next(case for case in CASES if case.id == "hub-PositionEmbedding")
    model = _model(case)
    path = tmp_path / "hub.keras"
    model.save(path)
    x = case.x()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", numpy(model(x)))
    script = f"""
import sys
import numpy as np
import keras, keras_ssm
assert "keras_hub" not in sys.modules, "keras_ssm imported keras_hub"
model = keras.saving.load_model({str(path)!r})
assert type(model.layers[1]).__name__ == "MaskedPositionEmbedding"
out = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / "x.npy")!r})))
np.testing.assert_array_equal(out, np.load({str(tmp_path / "y.npy")!r}))
import keras_hub
assert keras_hub.layers.PositionEmbedding in keras_ssm.layers.MASKED_LAYERS
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]

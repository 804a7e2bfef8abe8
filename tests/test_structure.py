"""Structure-aware masks: the unit penalty's value and gradient, serialization, where the zoo
puts it, and that it empties whole units which shrink then removes exactly."""

from __future__ import annotations

import importlib
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ssm
from conftest import grad, numpy
from keras_ssm import models, recipes
from keras_ssm.layers import MaskedConv2D, MaskedDense
from keras_ssm.structure import UnitPenalty

pytestmark = pytest.mark.core


def _group_lasso(x: np.ndarray, strength: float) -> float:
    """The penalty written out: one group per output unit (last axis)."""
    cols = x.reshape(-1, x.shape[-1]).astype("float64")
    return (
        strength
        * sum(np.linalg.norm(cols[:, j]) for j in range(cols.shape[1]))
        / np.sqrt(cols.shape[0])
    )


@pytest.mark.parametrize("shape", [(6, 4), (3, 3, 2, 5)])
def test_value_is_the_group_lasso_over_output_units(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    got = float(numpy(UnitPenalty(0.5)(keras.ops.convert_to_tensor(x))))
    assert got == pytest.approx(_group_lasso(x, 0.5), rel=1e-5)
    assert float(numpy(UnitPenalty(0.0)(x))) == 0.0
    assert float(numpy(UnitPenalty(1.0)(np.ones(4, "float32")))) == 0.0  # a bias: no units


def test_gradient_pulls_each_unit_toward_zero_along_itself() -> None:
    x = np.random.default_rng(1).standard_normal((5, 3)).astype("float32")
    x[:, 2] = 0.0  # an empty unit: finite gradient (epsilon), zero
    g = grad(lambda v: UnitPenalty(2.0)(v), x)
    norms = np.linalg.norm(x[:, :2], axis=0)
    np.testing.assert_allclose(g[:, :2], 2.0 * x[:, :2] / norms / np.sqrt(5), rtol=1e-4)
    assert np.all(np.isfinite(g)) and np.all(g[:, 2] == 0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_strength_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="UnitPenalty strength must be a finite number >= 0"):
        UnitPenalty(bad)


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda r: MaskedDense(4, kernel_regularizer=r), np.ones((2, 6), "float32")),
        (lambda r: MaskedConv2D(3, 3, kernel_regularizer=r), np.ones((1, 5, 5, 2), "float32")),
    ],
)
def test_masked_layers_penalize_their_scores_and_round_trip(make, x, tmp_path: Path) -> None:
    layer = make(UnitPenalty(1e-2))
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    (loss,) = model.losses
    scores = numpy(layer.scores)
    assert float(numpy(loss)) == pytest.approx(_group_lasso(scores, 1e-2), rel=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[0].score_regularizer, UnitPenalty)
    assert loaded.layers[0].score_regularizer.strength == 1e-2
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))


def test_a_penalized_model_loads_in_a_fresh_process_after_import_keras_ssm(tmp_path: Path) -> None:
    import subprocess
    import sys

    model = models.get("fcn", mask="signed", unit_penalty=0.01)
    model.save(tmp_path / "m.keras")
    path = str(tmp_path / "m.keras")
    code = (
        f"import keras, keras_ssm; m = keras.saving.load_model({path!r}); "
        "print(type(m.layers[2].score_regularizer).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("UnitPenalty")


@pytest.mark.parametrize("name", ["fcn", "conv2"])
def test_zoo_puts_the_penalty_on_hidden_layers_only(name: str) -> None:
    model = models.get(name, mask="signed", unit_penalty=0.01)
    masked = [layer for layer in model.layers if keras_ssm.layers.is_masked(layer)]
    penalized = [layer.name for layer in masked if isinstance(layer.score_regularizer, UnitPenalty)]
    assert penalized == [layer.name for layer in masked[:-1]]  # not the output layer
    assert masked[-1].name == "output" and masked[-1].score_regularizer is None
    with pytest.raises(ValueError, match="`unit_penalty` needs a mask"):
        models.get(name, mask=None, unit_penalty=0.01)


def test_recipes_forward_and_check_the_penalty() -> None:
    import dataclasses

    r = dataclasses.replace(recipes.get("fcn"), unit_penalty=0.02)
    assert recipes.model_kwargs(r, mask="signed")["unit_penalty"] == 0.02
    assert "unit_penalty" not in recipes.model_kwargs(recipes.get("fcn"), mask="signed")
    with pytest.raises(ValueError, match="`unit_penalty` must be >= 0"):
        dataclasses.replace(r, unit_penalty=-1.0)
    resnet = dataclasses.replace(recipes.get("resnet20"), unit_penalty=0.01)
    assert recipes.model_kwargs(resnet, mask="signed")["unit_penalty"] == 0.01


@pytest.mark.parametrize("name", ["fcn", "conv2", "conv6", "resnet20"])
def test_zoo_penalizes_the_layers_supermask_would(name: str) -> None:
    """The zoo's placement of the penalty is the one supermask derives from the graph: the
    layers whose units shrink can remove (in a ResNet, each block's first convolution)."""
    zoo = _penalized(models.get(name, mask="signed", unit_penalty=0.01))
    wrapped = _penalized(keras_ssm.supermask(models.get(name, mask=None), unit_penalty=0.01))
    assert zoo and zoo == wrapped
    if name == "resnet20":
        assert zoo == [f"stage{s}_block{b}_conv1" for s in (1, 2, 3) for b in (1, 2, 3)]


def _dead_units(model: keras.Model) -> int:
    first = [layer for layer in model.layers if keras_ssm.layers.is_masked(layer)][0]
    m = keras_ssm.stats.mask_array(first)
    return int(np.sum(np.all(m == 0, axis=0)))


@pytest.mark.parametrize("build", ["masked layers", "supermask"])
def test_penalty_empties_whole_units_that_shrink_removes_exactly(build: str) -> None:
    """The penalty given to the masked layers directly, or by supermask(unit_penalty=) to a
    stock model's layers, empties whole units, and shrink removes exactly those."""
    shrink = importlib.import_module("keras_ssm.export.shrink").shrink
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 20)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("int32")

    def trained(strength: float) -> keras.Model:
        keras.utils.set_random_seed(3)
        if build == "supermask":
            stock = keras.Sequential(
                [
                    keras.Input((20,)),
                    keras.layers.Dense(32, activation="elu", use_bias=False),
                    keras.layers.Dense(2, activation="softmax", use_bias=False),
                ]
            )
            model = keras_ssm.supermask(stock, unit_penalty=strength)
        else:
            reg = UnitPenalty(strength) if strength else None
            model = keras.Sequential(
                [
                    keras.Input((20,)),
                    MaskedDense(32, activation="elu", use_bias=False, kernel_regularizer=reg),
                    MaskedDense(2, activation="softmax", use_bias=False),
                ]
            )
        model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=30, batch_size=64, verbose=0)
        return model

    # 0.1 empties 20-24 of the 32 units on both backends; 0.3 can empty all of them (supermask
    # on JAX), and shrink then keeps one unit so the layer stays valid
    plain, penalized = trained(0.0), trained(0.1)
    assert _dead_units(penalized) >= _dead_units(plain) + 8, (
        _dead_units(plain),
        _dead_units(penalized),
    )
    folded = keras_ssm.fold(penalized)
    small, _ = shrink(folded)
    assert small.layers[0].kernel.shape[-1] == 32 - _dead_units(penalized)
    np.testing.assert_allclose(numpy(small(x)), numpy(folded(x)), rtol=1e-6, atol=1e-6)


def _penalized(model: keras.Model) -> list[str]:
    from keras_ssm.layer_tree import iter_layers

    return [
        layer.name
        for layer in iter_layers(model)
        if keras_ssm.layers.is_masked(layer)
        and isinstance(getattr(layer, "score_regularizer", None), UnitPenalty)
    ]


def _branchy() -> keras.Model:
    """Chains and non-chains: c1 -> bn -> pool -> c2 and d1 -> dropout -> out are chains; c2's
    output is read twice (c3, c4), c3 and c4 feed an Add, c5 a Concatenate, out is the output."""
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)
    x = L.Add(name="add")(
        [L.Conv2D(4, 3, padding="same", name="c3")(x), L.Conv2D(4, 1, name="c4")(x)]
    )
    x = L.Concatenate(name="cat")([x, L.Conv2D(4, 1, name="c5")(x)])
    x = L.Flatten(name="flat")(x)
    x = L.Dense(8, activation="elu", name="d1")(x)
    x = L.Dropout(0.1, name="drop")(x)
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="out")(x))


def test_supermask_penalizes_exactly_the_units_shrink_can_remove(tmp_path: Path) -> None:
    """supermask(unit_penalty=) puts UnitPenalty on the producers of channel chains only: not
    on layers feeding an Add / Concatenate, read twice, or the output; it trains, its losses
    are the penalties, and it round-trips through .keras."""
    masked = keras_ssm.supermask(_branchy(), unit_penalty=0.01)
    assert _penalized(masked) == ["c1", "d1"]
    assert keras_ssm.supermask(_branchy(), unit_penalty=0)  # 0: no penalty anywhere
    assert _penalized(keras_ssm.supermask(_branchy())) == []

    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype("float32")
    masked(x)
    by_name = {layer.name: layer for layer in masked.layers}
    want = sum(_group_lasso(numpy(by_name[name].scores), 0.01) for name in ("c1", "d1"))
    got = sum(float(numpy(loss)) for loss in masked.losses)
    np.testing.assert_allclose(got, want, rtol=1e-5)

    masked.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    history = masked.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "m.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    assert _penalized(loaded) == ["c1", "d1"]
    assert loaded.get_layer("c1").score_regularizer.strength == 0.01


def test_supermask_penalty_on_a_mobilenet_spares_depthwise_and_residual_layers() -> None:
    """On MobileNetV2 the penalty goes on the 1x1 expansions (their units reach the next 1x1
    through BatchNorm, ReLU6 and the depthwise convolution), never on a projection that feeds
    a residual Add (its units are tied to the skip path's), a depthwise layer or the
    classifier."""
    model = keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10)
    masked = keras_ssm.supermask(model, unit_penalty=0.003)
    names = _penalized(masked)
    # every block's 1x1 expansion (blocks 1-16), the stem, the last 1x1 convolution (through
    # global pooling to the classifier), and the two projections followed by no residual Add
    # whose output has one reader (the first block's, the last block's); the other projections
    # feed the next block's Add as well
    expansions = [f"block_{i}_expand" for i in range(1, 17)]
    assert [n for n in names if n.endswith("_expand")] == expansions
    others = {"Conv1", "expanded_conv_project", "block_16_project", "Conv_1"}
    assert set(names) - set(expansions) == others
    adds = {inbound for layer in model.layers if isinstance(layer, keras.layers.Add)
            for inbound in (t._keras_history[0].name for t in layer.input)}  # fmt: skip
    assert adds and not set(names) & adds
    assert all(isinstance(masked.get_layer(n), keras.layers.Conv2D) for n in names)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.01"])
def test_supermask_refuses_a_bad_penalty(bad: object) -> None:
    with pytest.raises(ValueError, match=r"`unit_penalty` must be a finite number >= 0"):
        keras_ssm.supermask(_branchy(), unit_penalty=bad)


def _separable_net() -> keras.Model:
    """conv -> separable -> BatchNorm -> separable -> pooling -> classifier: every layer but
    the classifier is a producer whose units shrink can remove."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 1, activation="relu", name="conv"),
            L.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep1"),
            L.BatchNormalization(name="bn"),
            L.SeparableConv2D(10, 3, padding="same", activation="relu", name="sep2"),
            L.GlobalAveragePooling2D(name="pool"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )


def test_supermask_penalty_on_separable_convolutions_empties_pointwise_units() -> None:
    """supermask(unit_penalty=) penalizes a separable convolution's units through its pointwise
    scores (and a convolution feeding one through its kernel's scores); a strong penalty then
    empties whole separable units, which shrink removes, and the outputs do not change."""
    shrink = importlib.import_module("keras_ssm.export.shrink").shrink
    keras.utils.set_random_seed(5)
    masked = keras_ssm.supermask(_separable_net(), unit_penalty=0.2)
    regs = {
        layer.name: {part.weight: part.scores.regularizer for part in layer.masked_parts()}
        for layer in masked.layers
        if keras_ssm.layers.is_masked(layer)
    }
    assert isinstance(regs["conv"]["kernel"], UnitPenalty)
    for name in ("sep1", "sep2"):
        assert regs[name]["depthwise_kernel"] is None
        assert isinstance(regs[name]["pointwise_kernel"], UnitPenalty)
    assert regs["out"]["kernel"] is None
    want = _group_lasso(numpy(masked.get_layer("conv").scores), 0.2) + sum(
        _group_lasso(numpy(masked.get_layer(n).pointwise_scores), 0.2) for n in ("sep1", "sep2")
    )
    assert sum(float(numpy(loss)) for loss in masked.losses) == pytest.approx(want, rel=1e-5)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8, 8, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    masked.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    masked.fit(x, y, epochs=15, batch_size=32, verbose=0)
    folded = keras_ssm.fold(masked)
    small, report = shrink(folded)
    cut = {e.name: e.units_before - e.units_after for e in report.layers}
    assert cut.get("sep1", 0) + cut.get("sep2", 0) >= 4, report
    np.testing.assert_allclose(numpy(small(x)), numpy(folded(x)), rtol=1e-5, atol=1e-6)

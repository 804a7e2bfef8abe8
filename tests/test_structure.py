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
    with pytest.raises(ValueError, match="applies to the FCN and Conv models"):
        dataclasses.replace(recipes.get("resnet20"), unit_penalty=0.01)


def _dead_units(model: keras.Model) -> int:
    first = [layer for layer in model.layers if keras_ssm.layers.is_masked(layer)][0]
    m = keras_ssm.stats.mask_array(first)
    return int(np.sum(np.all(m == 0, axis=0)))


def test_penalty_empties_whole_units_that_shrink_removes_exactly() -> None:
    shrink = importlib.import_module("keras_ssm.export.shrink").shrink
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 20)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("int32")

    def trained(strength: float) -> keras.Model:
        keras.utils.set_random_seed(3)
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

    plain, penalized = trained(0.0), trained(0.3)
    assert _dead_units(penalized) >= _dead_units(plain) + 8, (
        _dead_units(plain),
        _dead_units(penalized),
    )
    folded = keras_ssm.fold(penalized)
    small, _ = shrink(folded)
    assert small.layers[0].kernel.shape[-1] == 32 - _dead_units(penalized)
    np.testing.assert_allclose(numpy(small(x)), numpy(folded(x)), rtol=1e-6, atol=1e-6)

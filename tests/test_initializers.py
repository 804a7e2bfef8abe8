"""The frozen-weight initializers: values, string ids, serialization."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from conftest import numpy
from keras_ssm import initializers

pytestmark = pytest.mark.core

SHAPES = [(784, 300), (3, 3, 64, 128), (5, 16, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_elus_is_a_signed_constant_of_sqrt_3_over_fan_in(shape: tuple[int, ...]) -> None:
    w = numpy(initializers.ELUS()(shape))
    fan_in = math.prod(shape[:-1])
    np.testing.assert_allclose(np.abs(w), math.sqrt(3 / fan_in), rtol=1e-6)
    assert abs((w > 0).mean() - 0.5) < 2.5 / math.sqrt(w.size)  # 5 sigma: a fair coin


def test_elus_scale_multiplies_the_variance() -> None:
    w = numpy(initializers.ELUS(scale=2.0)((100, 10)))
    np.testing.assert_allclose(np.abs(w), math.sqrt(6 / 100), rtol=1e-6)


@pytest.mark.parametrize("mode, fan", [("fan_in", 100), ("fan_out", 10), ("fan_avg", 55)])
def test_signed_constant_modes(mode: str, fan: float) -> None:
    init = initializers.SignedConstant(scale=1.5, mode=mode)
    np.testing.assert_allclose(np.abs(numpy(init((100, 10)))), math.sqrt(3 / fan), rtol=1e-6)


def test_elu_uniform_bounds() -> None:
    w = numpy(initializers.ELUUniform()((400, 50)))
    limit = math.sqrt(4.5 / 400)
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.95 * limit
    assert len(np.unique(w)) > 1000


@pytest.mark.parametrize("name", ["elus", "signed_constant", "elu_uniform"])
def test_string_ids_resolve_through_keras(name: str) -> None:
    init = keras.initializers.get(name)
    assert isinstance(init, type(initializers.get(name)))
    clone = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert clone.get_config() == init.get_config()


def test_seeded_initializer_is_deterministic() -> None:
    a = numpy(initializers.ELUS(seed=3)((20, 20)))
    b = numpy(initializers.ELUS(seed=3)((20, 20)))
    np.testing.assert_array_equal(a, b)


def test_bad_arguments_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="fan_in, fan_out, fan_avg"):
        initializers.SignedConstant(mode="fan_sum")
    with pytest.raises(ValueError, match="`scale` must be a positive number"):
        initializers.ELUS(scale=-1)
    with pytest.raises(ValueError, match="Unknown initializer 'elux'.*elus"):
        initializers.get("elux")

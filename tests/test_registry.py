"""Open registries: a user's Mask subclass and a user-made maskable layer type, end to end."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import keras
import numpy as np
import pytest

import keras_ssm
from conftest import numpy
from keras_ssm import masks
from keras_ssm.layers import MASKED_LAYERS, MaskedDense, register_maskable

pytestmark = pytest.mark.core

# A user's extension module, defined outside keras_ssm: a mask with its own config argument and
# per-layer state, a Dense subclass with its own config argument, and a stock Keras layer type,
# both made maskable.  Importing it is what registers them (as with Keras custom objects).
USER_MODULE = "ssm_user_extension"
USER_SOURCE = '''
import keras
from keras import ops

from keras_ssm import layers, masks


@masks.register
class KeepAboveMask(masks.Mask):
    """Keep (1) the weights whose score exceeds ``margin * max|s0|``; hide (0) the rest."""

    name = "keep_above_test"
    values = (0, 1)

    def __init__(self, margin=0.1):
        self.margin = float(margin)

    def build(self, layer, scores):
        cut = self.margin * float(ops.convert_to_numpy(ops.max(ops.abs(scores.value))))
        var = layer.add_weight(
            name="cut",
            shape=(),
            initializer=keras.initializers.Constant(cut),
            trainable=False,
            autocast=False,
        )
        return {"cut": var}

    def __call__(self, scores, state, training=None):
        cut = ops.cast(masks.read(state["cut"]), scores.dtype)
        return masks.straight_through(lambda s: ops.cast(ops.greater(s, cut), s.dtype), scores)

    def get_config(self):
        return {"margin": self.margin}


class ScaledDense(keras.layers.Dense):
    """Dense whose output is multiplied by ``scale``."""

    def __init__(self, units, scale=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return super().call(inputs) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


MaskedScaledDense = layers.register_maskable(ScaledDense)
MaskedEinsumDense = layers.register_maskable(keras.layers.EinsumDense)
'''

# Run in a fresh interpreter: loading without the extension fails clearly, with it it loads.
LOADER = """
import sys
import numpy as np
import keras
import keras_ssm
sys.path.insert(0, {root!r})
data = np.load({data!r})
try:
    keras.saving.load_model({mask_model!r})
except Exception as err:
    print("WITHOUT:", type(err).__name__, " ".join(str(err).split()))
import {module}
mask_model = keras.saving.load_model({mask_model!r})
layer_model = keras.saving.load_model({layer_model!r})
np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask_model(data["x"])), data["y_mask"])
np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer_model(data["x"])), data["y_layer"])
masked = mask_model.layers[0]
assert type(masked.mask) is {module}.KeepAboveMask and masked.mask.margin == 0.2, masked.mask
assert [type(l).__name__ for l in layer_model.layers] == ["MaskedScaledDense", "MaskedEinsumDense"]
assert layer_model.layers[0].scale == 0.5
print("OK")
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("user_ext")
    (root / f"{USER_MODULE}.py").write_text(USER_SOURCE)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(USER_MODULE)
    finally:
        sys.path.remove(str(root))


def _x(n: int = 16, d: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype("float32")


def _fit_two_steps(model: keras.Model) -> None:
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x, y = _x(), np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # 2 steps


# --- masks.register --------------------------------------------------------------------------


def test_registered_mask_resolves_by_name_and_serializes(user: ModuleType) -> None:
    cls = user.KeepAboveMask
    assert "keep_above_test" in masks.ALLOWED
    assert masks.ALLOWED[:3] == ("signed", "binary", "topk")
    assert type(masks.get("keep_above_test")) is cls and masks.get("keep_above_test").margin == 0.1
    assert masks.get("KEEP_ABOVE_TEST", margin=0.3) == cls(0.3)
    config = masks.serialize(cls(0.3))
    assert config == {"class_name": "keep_above_test", "config": {"margin": 0.3}}
    assert masks.get(config) == cls(0.3)
    with pytest.raises(ValueError, match=r"Mask 'keep_above_test'.*its arguments are: margin"):
        masks.get("keep_above_test", threshold=0.3)
    # The built-in masks keep serializing exactly as before.
    signed = {"class_name": "signed", "config": {"threshold": 0.4}}
    assert masks.serialize(masks.SignedMask()) == signed
    assert masks.serialize(masks.TopKMask(0.3)) == {"class_name": "topk", "config": {"k": 0.3}}
    assert masks.serialize(masks.BinaryMask()) == {"class_name": "binary", "config": {"seed": None}}
    assert masks.get(signed) == masks.SignedMask(0.4)


def test_registered_mask_is_a_keras_serializable(user: ModuleType) -> None:
    cls = user.KeepAboveMask
    assert keras.saving.get_registered_object("keras_ssm.masks>keep_above_test") is cls
    assert keras.saving.get_registered_name(cls) == "keras_ssm.masks>keep_above_test"
    config = keras.saving.serialize_keras_object(cls(0.25))
    assert keras.saving.deserialize_keras_object(config) == cls(0.25)
    assert masks.get(config) == cls(0.25)
    assert masks.get(keras.saving.serialize_keras_object(masks.SignedMask(0.3))) == (
        masks.SignedMask(0.3)
    )


def test_custom_objects_resolve_an_unregistered_mask() -> None:
    class Unregistered(masks.TopKMask):
        name = "unregistered_test"

    with pytest.raises(ValueError, match=r"Unknown mask 'unregistered_test'.*masks\.register"):
        masks.get("unregistered_test")
    with keras.saving.custom_object_scope({"unregistered_test": Unregistered}):
        assert masks.get({"class_name": "unregistered_test", "config": {"k": 0.2}}) == (
            Unregistered(0.2)
        )
    assert "unregistered_test" not in masks.ALLOWED


def test_load_model_custom_objects_resolve_a_mask_by_name(tmp_path: Path) -> None:
    class Scoped(masks.TopKMask):
        name = "scoped_test"

    path = tmp_path / "scoped.keras"
    with keras.saving.custom_object_scope({"scoped_test": Scoped}):
        model = keras.Sequential([keras.Input((6,)), MaskedDense(3, mask=Scoped(0.3))])
        model.save(path)
    with pytest.raises((TypeError, ValueError), match="Unknown mask 'scoped_test'"):
        keras.saving.load_model(path)
    loaded = keras.saving.load_model(path, custom_objects={"scoped_test": Scoped})
    assert loaded.layers[0].mask == Scoped(0.3)
    np.testing.assert_array_equal(numpy(loaded(_x(4))), numpy(model(_x(4))))


def test_user_mask_trains_and_loads_in_a_fresh_process(user: ModuleType, tmp_path: Path) -> None:
    mask_model = keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(8, activation="relu", mask=user.KeepAboveMask(margin=0.2)),
            MaskedDense(3, mask={"class_name": "keep_above_test", "config": {"margin": 0.3}}),
        ]
    )
    before = [numpy(layer.scores).copy() for layer in mask_model.layers]
    _fit_two_steps(mask_model)
    assert all(
        not np.array_equal(old, numpy(layer.scores))
        for old, layer in zip(before, mask_model.layers, strict=True)
    )
    for layer in mask_model.layers:
        assert set(np.unique(numpy(layer.compute_mask_values(training=False)))) <= {0.0, 1.0}

    base = keras.Sequential(
        [
            keras.Input((6,)),
            user.ScaledDense(5, scale=0.5, activation="relu"),
            keras.layers.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"),
        ]
    )
    layer_model = keras_ssm.supermask(base, mask="signed")
    _fit_two_steps(layer_model)

    x = _x(4)
    paths = {name: tmp_path / f"{name}.keras" for name in ("mask_model", "layer_model")}
    mask_model.save(paths["mask_model"])
    layer_model.save(paths["layer_model"])
    np.savez(tmp_path / "data.npz", x=x, y_mask=numpy(mask_model(x)), y_layer=numpy(layer_model(x)))
    script = LOADER.format(
        root=str(Path(user.__file__).parent),
        module=USER_MODULE,
        data=str(tmp_path / "data.npz"),
        mask_model=str(paths["mask_model"]),
        layer_model=str(paths["layer_model"]),
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.stdout.strip().endswith("OK"), out.stdout[-2000:] + out.stderr[-3000:]
    without = [line for line in out.stdout.splitlines() if line.startswith("WITHOUT:")]
    assert without and "Unknown mask 'keep_above_test'" in without[0], out.stdout


class _Base(masks.Mask):
    values = (0, 1)

    def __call__(self, scores: object, state: dict, training: bool | None = None) -> object:
        return keras.ops.ones_like(scores)


def test_invalid_mask_registrations_raise(user: ModuleType) -> None:
    class NoName(_Base):
        pass

    class Spaces(_Base):
        name = "my mask"

    class NotAString(_Base):
        name = 3

    for cls, shown in ((NoName, "''"), (Spaces, "'my mask'"), (NotAString, "3")):
        with pytest.raises(ValueError, match=rf"`name` is {shown}\. Set the class attribute"):
            masks.register(cls)

    class Duplicate(_Base):
        name = "Keep_Above_Test"  # names are case-insensitive

    with pytest.raises(
        ValueError,
        match=r"'Keep_Above_Test': that name is taken by ssm_user_extension\.KeepAboveMask",
    ):
        masks.register(Duplicate)

    class StillSigned(masks.SignedMask):
        pass

    with pytest.raises(ValueError, match=r"taken by keras_ssm\.masks\.SignedMask"):
        masks.register(StillSigned)

    class NotAMask:
        name = "not_a_mask"

        def get_config(self) -> dict:
            return {}

    for bad in (NotAMask, masks.Mask, masks.SignedMask(), "signed", len):
        with pytest.raises(ValueError, match=r"expects a subclass of keras_ssm\.masks\.Mask"):
            masks.register(bad)
    assert "not_a_mask" not in masks.ALLOWED and "my mask" not in masks.ALLOWED
    assert type(masks.get("keep_above_test")) is user.KeepAboveMask  # the clash changed nothing


def test_registration_is_idempotent_and_redefinition_replaces() -> None:
    assert masks.register(masks.SignedMask) is masks.SignedMask
    assert masks.ALLOWED.count("signed") == 1

    def define(value: float) -> type[masks.Mask]:
        @masks.register
        class Redefined(_Base):  # same module and qualified name each time, like a re-run cell
            name = "redefined_test"
            fill = value

        return Redefined

    first, second = define(1.0), define(2.0)
    assert first is not second
    assert type(masks.get("redefined_test")) is second
    assert masks.ALLOWED.count("redefined_test") == 1


def test_serialize_refuses_a_mask_that_could_not_load_back() -> None:
    class Unregistered(_Base):
        name = "never_registered_test"

    class SignedVariant(masks.SignedMask):  # would silently load as a plain SignedMask
        pass

    with pytest.raises(ValueError, match=r"is not registered as mask 'never_registered_test'"):
        masks.serialize(Unregistered())
    with pytest.raises(ValueError, match=r"that name belongs to keras_ssm\.masks\.SignedMask"):
        masks.serialize(SignedVariant())
    layer = MaskedDense(2, mask=Unregistered())
    with pytest.raises(ValueError, match="@keras_ssm.masks.register"):
        layer.get_config()


# --- layers.register_maskable -------------------------------------------------------------


def test_registered_layer_types_wrap_fold_and_round_trip(user: ModuleType, tmp_path: Path) -> None:
    assert MASKED_LAYERS[user.ScaledDense] is user.MaskedScaledDense
    assert MASKED_LAYERS[keras.layers.EinsumDense] is user.MaskedEinsumDense
    assert register_maskable(keras.layers.EinsumDense) is user.MaskedEinsumDense  # idempotent
    assert register_maskable(keras.layers.Dense) is MaskedDense
    assert keras.saving.get_registered_object("keras_ssm>MaskedScaledDense") is (
        user.MaskedScaledDense
    )
    base = keras.Sequential(
        [
            keras.Input((6,)),
            user.ScaledDense(5, scale=0.5, activation="relu"),
            keras.layers.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"),
        ]
    )
    masked = keras_ssm.supermask(base, mask=user.KeepAboveMask(0.2))
    assert [type(layer).__name__ for layer in masked.layers] == [
        "MaskedScaledDense",
        "MaskedEinsumDense",
    ]
    assert masked.layers[0].scale == 0.5
    assert [v.name for v in masked.trainable_variables] == ["scores", "scores"]
    x = _x(4)
    path = tmp_path / "layers.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(masked(x)))
    assert loaded.layers[1].mask == user.KeepAboveMask(0.2)
    folded = keras_ssm.fold(masked)
    assert [type(layer) for layer in folded.layers] == [user.ScaledDense, keras.layers.EinsumDense]
    np.testing.assert_allclose(numpy(folded(x)), numpy(masked(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "stock, problem",
    [
        (keras.layers.LSTM, "it has no `kernel` property"),
        (keras.layers.GRU, "it has no `kernel` property"),
        (keras.layers.SimpleRNN, "it has no `kernel` property"),
        (keras.layers.BatchNormalization, "it has no `kernel` property"),
        (
            keras.layers.MultiHeadAttention,
            "it has no `kernel` property .*; its call needs arguments besides the inputs: value",
        ),
    ],
)
def test_layers_that_keep_no_kernel_are_refused(stock: type, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"{stock.__name__} cannot be masked: {problem}"):
        register_maskable(stock)
    assert stock not in MASKED_LAYERS


def test_register_maskable_rejects_what_is_not_a_stock_layer_type() -> None:
    for bad in (keras.layers.Dense(2), "Dense", int, keras.Model):
        with pytest.raises(ValueError, match="expects a keras.layers.Layer subclass|cannot be"):
            register_maskable(bad)
    with pytest.raises(ValueError, match=r"MaskedDense is already a masked layer \(of Dense\)"):
        register_maskable(MaskedDense)
    with pytest.raises(ValueError, match=r"Dense is already maskable as MaskedDense"):
        register_maskable(keras.layers.Dense, name="OtherDense")

    class NeedsContext(keras.layers.Dense):
        def call(self, inputs: object, context: object) -> object:
            return super().call(inputs) + context

    with pytest.raises(ValueError, match="call needs arguments besides the inputs: context"):
        register_maskable(NeedsContext)

    class NoKernelArgs(keras.layers.Dense):
        def __init__(self, units: int) -> None:
            super().__init__(units)

    with pytest.raises(ValueError, match="__init__ does not take kernel_initializer"):
        register_maskable(NoKernelArgs)


def test_register_maskable_name_clash_and_explicit_name() -> None:
    class Dense(keras.layers.Dense):  # same __name__ as keras.layers.Dense
        pass

    with pytest.raises(ValueError, match=r"Keras already has 'keras_ssm>MaskedDense' registered"):
        register_maskable(Dense)
    assert keras.saving.get_registered_object("keras_ssm>MaskedDense") is MaskedDense
    with pytest.raises(ValueError, match="must be a Python identifier"):
        register_maskable(Dense, name="Masked Dense")
    cls = register_maskable(Dense, name="MaskedLocalDenseTest")
    assert cls.__name__ == "MaskedLocalDenseTest" and MASKED_LAYERS[Dense] is cls
    assert MASKED_LAYERS[keras.layers.Dense] is MaskedDense


def test_contract_breaches_the_class_hides_fail_at_build_or_call() -> None:
    class BypassesKernel(keras.layers.Dense):  # reads `_kernel`, so a mask would never apply
        def call(self, inputs: object) -> object:
            return keras.ops.matmul(inputs, self._kernel)

    layer = register_maskable(BypassesKernel)(3)
    with pytest.raises(ValueError, match=r"BypassesKernel\.call did not read the `kernel`"):
        layer(_x(2))

    class StoresElsewhere(keras.layers.Dense):  # its kernel property reads another attribute
        def build(self, input_shape: tuple) -> None:
            self.weights_matrix = self.add_weight(shape=(input_shape[-1], self.units))
            self.bias = None

        @property
        def kernel(self) -> keras.Variable:
            return self.weights_matrix

    layer = register_maskable(StoresElsewhere)(3)
    with pytest.raises(
        ValueError, match=r"StoresElsewhere\.build did not create .*`self\._kernel`"
    ):
        layer.build((None, 6))

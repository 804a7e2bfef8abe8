"""keras_ssm.graph: which layers pass a unit through, and the chains analysis and shrink share."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest

import keras_ssm
from keras_ssm import analysis, graph
from keras_ssm.export.shrink import _chains as shrink_chains
from keras_ssm.export.shrink import shrink
from keras_ssm.layers import MaskedConv2D, MaskedDense

pytestmark = pytest.mark.core

L = keras.layers


class _MyReLU(L.ReLU):
    """A subclass may compute anything: it is not trusted to act per channel."""


def _double(x):
    return x * 2.0  # element-wise, but not a registered activation: not trusted


# (factory, input shape without the batch axis, expected kind)
PER_CHANNEL = [
    (lambda: L.Dropout(0.5), (5, 3), graph.IDENTITY),
    (lambda: L.SpatialDropout1D(0.5), (5, 3), graph.IDENTITY),
    (lambda: L.SpatialDropout2D(0.5), (4, 4, 3), graph.IDENTITY),
    (lambda: L.GaussianNoise(1.0), (5, 3), graph.IDENTITY),
    (lambda: L.GaussianDropout(0.5), (5, 3), graph.IDENTITY),
    (lambda: L.AlphaDropout(0.5), (5, 3), graph.IDENTITY),
    (lambda: L.ActivityRegularization(l1=0.1), (5, 3), graph.IDENTITY),
    (lambda: L.Identity(), (5, 3), graph.IDENTITY),
    (lambda: L.ReLU(), (5, 3), graph.ELEMENTWISE),
    (lambda: L.ELU(), (5, 3), graph.ELEMENTWISE),
    (lambda: L.LeakyReLU(0.2), (5, 3), graph.ELEMENTWISE),
    (lambda: L.PReLU(alpha_initializer="random_uniform"), (4, 4, 3), graph.ELEMENTWISE),
    (lambda: L.Activation("relu"), (5, 3), graph.ELEMENTWISE),
    (lambda: L.Activation("sigmoid"), (5, 3), graph.ELEMENTWISE),
    (lambda: L.Activation("gelu"), (5, 3), graph.ELEMENTWISE),
    (lambda: L.BatchNormalization(), (4, 4, 3), graph.AFFINE),
    (lambda: L.BatchNormalization(axis=3), (4, 4, 3), graph.AFFINE),
    (lambda: L.MaxPooling1D(), (6, 3), graph.POOLING),
    (lambda: L.MaxPooling2D(), (4, 4, 3), graph.POOLING),
    (lambda: L.MaxPooling3D(), (2, 2, 2, 3), graph.POOLING),
    (lambda: L.AveragePooling2D(2, padding="same"), (5, 5, 3), graph.POOLING),
    (lambda: L.GlobalAveragePooling2D(), (4, 4, 3), graph.POOLING),
    (lambda: L.GlobalMaxPooling1D(), (6, 3), graph.POOLING),
    (lambda: L.ZeroPadding1D(1), (5, 3), graph.PADDING),
    (lambda: L.ZeroPadding2D(1), (4, 4, 3), graph.PADDING),
    (lambda: L.ZeroPadding3D(1), (2, 2, 2, 3), graph.PADDING),
    (lambda: L.Flatten(), (4, 4, 3), graph.FLATTEN),
]

# Layers whose output on one channel depends on other channels.
MIXING = [
    (lambda: L.LayerNormalization(), (5, 3)),
    (lambda: L.Softmax(), (5, 3)),
    (lambda: L.Activation("softmax"), (5, 3)),
    (lambda: L.Activation("log_softmax"), (5, 3)),
    (lambda: L.UnitNormalization(), (5, 3)),
    (lambda: L.GroupNormalization(groups=1), (5, 4)),
    (lambda: L.Dense(4), (5, 3)),
    (lambda: L.Conv1D(4, 1), (5, 3)),
    (lambda: MaskedDense(4), (5, 3)),
    (lambda: L.Permute((2, 1)), (5, 3)),
]

# Per channel in truth, but not in a layout a chain can follow (or not trusted): they stop it.
UNHANDLED = [
    (lambda: _MyReLU(), (5, 3)),
    (lambda: L.BatchNormalization(axis=1), (4, 4, 3)),
    (lambda: L.MaxPooling2D(data_format="channels_first"), (3, 4, 4)),
    (lambda: L.ZeroPadding2D(1, data_format="channels_first"), (3, 4, 4)),
    (lambda: L.Flatten(data_format="channels_first"), (3, 4, 4)),
    (lambda: L.Activation(_double), (5, 3)),
]


def _built(factory: Callable[[], L.Layer], shape: tuple[int, ...]) -> L.Layer:
    layer = factory()
    layer(keras.Input(shape))  # a symbolic call: layer.input exists (BatchNorm, Flatten)
    return layer


def _other_channels_change(layer: L.Layer, shape: tuple[int, ...]) -> bool:
    """Does changing input channel 1 change any output position that is not channel 1's?"""
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    x2 = x.copy()
    x2[..., 1] += 3.0
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    y2 = keras.ops.convert_to_numpy(layer(x2, training=False))
    changed = np.abs(y - y2) > 1e-6
    channels = shape[-1]
    if type(layer) is L.Flatten:  # channel 1 sits at every positions(...)[:, 1] after it
        own = np.zeros(y.shape[-1], dtype=bool)
        own[graph.positions([layer], channels)[:, 1]] = True
    else:
        own = np.arange(y.shape[-1]) == 1
    return bool(changed[..., ~own].any())


@pytest.mark.parametrize(("factory", "shape", "kind"), PER_CHANNEL)
def test_per_channel_layers_pass_a_unit_through(factory, shape, kind) -> None:
    layer = _built(factory, shape)
    assert graph.channel_kind(layer) == kind
    assert not graph.is_kernel_layer(layer)
    # what the classification claims: channel c of the output depends on channel c alone
    assert not _other_channels_change(layer, shape)


@pytest.mark.parametrize(("factory", "shape"), MIXING)
def test_channel_mixing_layers_stop_a_chain(factory, shape) -> None:
    layer = _built(factory, shape)
    assert graph.channel_kind(layer) is None
    assert _other_channels_change(layer, shape)  # a unit nobody reads still moves the others


@pytest.mark.parametrize(("factory", "shape"), UNHANDLED)
def test_unhandled_layouts_stop_a_chain(factory, shape) -> None:
    assert graph.channel_kind(_built(factory, shape)) is None


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda: L.Dense(3), True),
        (lambda: L.Conv1D(3, 2), True),
        (lambda: L.Conv2D(3, 2), True),
        (lambda: L.Conv3D(3, 2), True),
        (lambda: MaskedDense(3), True),
        (lambda: MaskedConv2D(3, 2), True),
        (lambda: L.Conv2D(4, 2, groups=2), False),
        (lambda: L.Conv2D(3, 2, data_format="channels_first"), False),
        (lambda: L.Conv2DTranspose(3, 2), False),
        (lambda: L.DepthwiseConv2D(2), False),
        (lambda: L.SeparableConv2D(3, 2), False),
        (lambda: L.EinsumDense("ab,bc->ac", output_shape=3), False),
        (lambda: L.ReLU(), False),
    ],
)
def test_kernel_layers(factory, expected) -> None:
    assert graph.is_kernel_layer(factory()) is expected


def test_positions_through_padding_pooling_and_flatten() -> None:
    inputs = keras.Input((2, 2, 3))
    pad = L.ZeroPadding2D(((0, 1), (0, 0)))  # 2x2 -> 3x2
    flat = L.Flatten()
    flat(pad(inputs))
    assert graph.positions([], 3).tolist() == [[0, 1, 2]]
    assert graph.positions([pad], 3).tolist() == [[0, 1, 2]]
    # 6 positions x 3 channels, channels last: channel c of position p at 3 * p + c
    assert graph.positions([pad, flat], 3).tolist() == [
        [3 * p + c for c in range(3)] for p in range(6)
    ]
    unknown = L.Flatten()
    unknown(keras.Input((None, 3)))
    assert graph.positions([unknown], 3) is None


# ----------------------------------------------------------------------------- chains
def _dense_stack() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(5, activation="relu", name="d0"),
            MaskedDense(4, activation="elu", name="d1"),
            MaskedDense(3, name="d2"),
        ]
    )


def _conv_bn_pool_flatten() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            MaskedConv2D(4, 3, activation="relu", name="conv"),
            L.BatchNormalization(name="bn"),
            L.MaxPooling2D(name="pool"),
            L.Flatten(name="flat"),
            MaskedDense(5, activation="elu", name="fc"),
            L.Dropout(0.2, name="drop"),
            MaskedDense(2, activation="softmax", name="out"),
        ]
    )


def _residual() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = MaskedConv2D(4, 3, padding="same", activation="relu", name="c0")(inputs)
    y = MaskedConv2D(5, 3, padding="same", activation="elu", name="c1")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = MaskedConv2D(4, 1, name="c2")(y)
    x = L.Add(name="add")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = MaskedDense(6, activation="elu", name="d0")(x)
    return keras.Model(inputs, MaskedDense(2, name="d1")(x))


def _between(*middle: L.Layer, activation: str = "relu") -> keras.Model:
    return keras.Sequential(
        [keras.Input((4, 4, 2)), MaskedDense(5, activation=activation, name="p"), *middle]
        + [MaskedDense(3, name="q")]
    )


def _output_and_read() -> keras.Model:
    """d0's output is a model output and d1's input: its units all matter."""
    inputs = keras.Input((4,))
    h = MaskedDense(3, activation="relu", name="d0")(inputs)
    return keras.Model(inputs, [h, MaskedDense(2, name="d1")(h)])


CHAIN_CASES = {
    "dense stack": (_dense_stack, [("d0", (), "d1"), ("d1", (), "d2")]),
    "conv bn pool flatten": (
        _conv_bn_pool_flatten,
        [("conv", ("bn", "pool", "flat"), "fc"), ("fc", ("drop",), "out")],
    ),
    "residual add": (_residual, [("c1", ("bn",), "c2"), ("d0", (), "d1")]),
    "prelu": (lambda: _between(L.PReLU(name="prelu")), [("p", ("prelu",), "q")]),
    "zero padding": (
        lambda: keras.Sequential(
            [
                keras.Input((5, 5, 2)),
                MaskedConv2D(4, 3, activation="relu", name="p"),
                L.ZeroPadding2D(1, name="pad"),
                MaskedConv2D(3, 3, name="q"),
            ]
        ),
        [("p", ("pad",), "q")],
    ),
    "layer normalization": (lambda: _between(L.LayerNormalization()), []),
    "softmax layer": (lambda: _between(L.Softmax()), []),
    "softmax activation layer": (lambda: _between(L.Activation("softmax")), []),
    "softmax producer": (lambda: _between(activation="softmax"), []),
    "output also read": (_output_and_read, []),
}


@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_analysis_and_shrink_walk_the_same_chains(case: str) -> None:
    build, expected = CHAIN_CASES[case]
    masked = build()
    folded = keras_ssm.fold(masked)  # stock layers, same names: what shrink reads
    from_analysis = [c.names() for c in analysis._chains(masked)]
    from_shrink = [c.names() for c in shrink_chains(folded)]
    assert from_analysis == expected
    assert from_shrink == expected


def test_shared_layer_is_in_no_chain() -> None:
    inputs = keras.Input((4,))
    shared = L.Dense(4, activation="relu", name="shared")
    x = shared(shared(L.Dense(4, name="first")(inputs)))
    model = keras.Model(inputs, L.Dense(2, name="last")(x))
    assert graph.chains(model) == []


def test_sequential_grown_with_add_keeps_its_chains() -> None:
    """Sequential.add rebuilds the graph (old nodes stay on the layers); the walk follows the
    current layer list."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="relu", name="a")])
    model.add(L.ReLU(name="act"))
    model.add(L.Dense(2, name="b"))
    assert [c.names() for c in graph.chains(model)] == [("a", ("act",), "b")]


def test_nested_models_are_walked_on_their_own() -> None:
    inner = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, activation="relu", name="i0"), L.Dense(3, name="i1")],
        name="inner",
    )
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="o")(inner(inputs)))
    assert graph.chains(model) == []  # shrink: the nested model is one opaque layer
    # analysis descends; a chain never leaves its model (i1 -> o is not one)
    assert [c.names() for c in graph.chains(model, nested=True)] == [("i0", (), "i1")]


def test_accept_restricts_producers_and_consumers() -> None:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            MaskedDense(3, activation="relu", name="m0"),
            L.Dense(3, activation="relu", name="stock"),
            MaskedDense(2, name="m1"),
        ]
    )
    assert [c.names() for c in graph.chains(model)] == [("m0", (), "stock"), ("stock", (), "m1")]
    # a rejected Dense still ends the walk: m0's next masked reader is not m1
    assert graph.chains(model, keras_ssm.layers.is_masked) == []


def _set_mask(layer: L.Layer, mask: np.ndarray) -> None:
    layer.mask_state["tau"].assign(0.5)
    layer.scores.assign(np.asarray(mask, dtype="float32"))


def test_analysis_dead_units_are_what_shrink_removes() -> None:
    """Filter 2 of the conv is read by no weight of fc (through BN, pooling and Flatten):
    analysis counts one unit without outgoing weights and shrink removes exactly it."""
    model = _conv_bn_pool_flatten()
    conv, fc, out = (model.get_layer(name) for name in ("conv", "fc", "out"))
    _set_mask(conv, np.ones((3, 3, 2, 4)))
    fc_mask = np.ones((2 * 2 * 4, 5))  # 2x2 positions x 4 filters after pooling
    fc_mask[2::4] = 0  # rows 4 * p + 2: filter 2 at every position
    _set_mask(fc, fc_mask)
    _set_mask(out, np.ones((5, 2)))
    rows = {row["name"]: row for row in analysis.model_stats(model)["layers"]}
    assert (rows["conv"]["no_outgoing_units"], rows["conv"]["dead_units"]) == (1, 1)
    assert (rows["fc"]["no_outgoing_units"], rows["fc"]["dead_units"]) == (0, 0)
    small, report = shrink(keras_ssm.fold(model))
    (entry,) = report.layers
    assert (entry.name, entry.removed_no_output, entry.removed_no_input) == ("conv", 1, 0)
    assert small.get_layer("conv").filters == 3 and small.get_layer("fc").units == 5

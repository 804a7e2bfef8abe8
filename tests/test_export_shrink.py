"""shrink(): dead units/filters are removed and outputs stay identical."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_ssm.export.shrink import shrink

L = keras.layers


def ternarize(
    model: keras.Model, density: float = 0.1, seed: int = 0, dead_in: int = 0, dead_out: int = 0
) -> None:
    """Set every kernel to c*T (T ternary, mostly 0); kill some units' inputs/outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not hasattr(layer, "kernel"):
            continue
        k = np.array(layer.kernel)
        fan_in = int(np.prod(k.shape[:-1]))
        c = np.float32(np.sqrt(3.0 / fan_in))
        t = rng.choice([-1.0, 0.0, 1.0], size=k.shape, p=[density / 2, 1 - density, density / 2])
        k = (c * t).astype(np.float32)
        if layer is not model.layers[-1]:
            k[..., :dead_in] = 0.0  # first units: no incoming weights
        if dead_out:
            k[..., -dead_out:, :] = 0.0  # last input channels: no outgoing weights here
        layer.kernel.assign(k)
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.5, size=layer.bias.shape).astype(np.float32))
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, n).astype(np.float32))


def rel_err(a: keras.Model, b: keras.Model, shape: tuple[int, ...], seed: int = 1) -> float:
    x = np.random.default_rng(seed).standard_normal((8,) + shape).astype(np.float32)
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    assert ya.shape == yb.shape
    return float(np.max(np.abs(ya - yb)) / np.max(np.abs(ya)))


def test_mlp_dead_in_and_out_units_are_removed():
    m = keras.Sequential(
        [
            keras.Input((20,)),
            L.Dense(32, activation="elu"),
            L.Dense(16, activation="relu"),
            L.Dense(5, activation="softmax"),
        ]
    )
    ternarize(m, density=0.3, dead_in=3, dead_out=4)
    small, report = shrink(m)
    assert rel_err(m, small, (20,)) <= 1e-6
    assert small.layers[-1].units == 5  # output units never removed
    assert small.layers[0].units < 32 and small.layers[1].units < 16
    assert report.params_after < report.params_before
    names = {e.name: e for e in report.layers}
    assert names[m.layers[0].name].units_before == 32
    assert "->" in str(report)


def test_dead_unit_with_nonzero_bias_is_folded_into_a_new_bias():
    m = keras.Sequential(
        [keras.Input((6,)), L.Dense(4, activation="elu"), L.Dense(3, use_bias=False)]
    )
    ternarize(m, density=0.6, seed=3)
    k0, b0 = m.layers[0].get_weights()
    k0[:, 2] = 0.0
    b0[2] = 0.7
    m.layers[0].set_weights([k0, b0])
    k1 = m.layers[1].get_weights()[0]
    k1[2] = [0.5, -0.25, 1.0]
    m.layers[1].set_weights([k1])
    small, report = shrink(m)
    assert small.layers[0].units <= 3
    assert small.layers[1].use_bias
    entry = {e.name: e for e in report.layers}[m.layers[1].name]
    assert entry.bias_added and entry.bias_folded
    assert rel_err(m, small, (6,)) <= 1e-6


def test_conv_flatten_dense_channel_order():
    m = keras.Sequential(
        [
            keras.Input((6, 5, 3)),
            L.Conv2D(8, 3, padding="same", activation="elu"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.Conv2D(6, 2, activation="relu"),
            L.Flatten(),
            L.Dense(7, activation="elu"),
            L.Dense(3),
        ]
    )
    ternarize(m, density=0.4, seed=5, dead_in=2, dead_out=1)
    small, report = shrink(m)
    assert rel_err(m, small, (6, 5, 3)) <= 1e-6
    assert small.layers[0].filters < 8  # conv filters removed through BN + pooling
    assert small.layers[3].filters < 6  # conv filters removed through Flatten
    assert small.layers[-1].units == 3


def test_flatten_with_explicit_dead_channel_and_constant():
    m = keras.Sequential(
        [keras.Input((4, 4, 2)), L.Conv2D(5, 3, activation="sigmoid"), L.Flatten(), L.Dense(4)]
    )
    ternarize(m, density=0.5, seed=7)
    k, b = m.layers[0].get_weights()
    k[..., 1] = 0.0  # filter 1: constant sigmoid(b[1]) at every position -> folded
    b[1] = 0.3
    m.layers[0].set_weights([k, b])
    kd, bd = m.layers[2].get_weights()
    kd.reshape(2, 2, 5, 4)[:, :, 3, :] = 0.0  # filter 3: no outgoing weights (NHWC order)
    m.layers[2].set_weights([kd, bd])
    small, _ = shrink(m)
    assert small.layers[0].filters == 3
    assert rel_err(m, small, (4, 4, 2)) <= 1e-6


def test_same_padding_constant_is_kept_but_zero_constant_removed():
    m = keras.Sequential(
        [keras.Input((5, 5, 2)), L.Conv2D(4, 3, padding="same"), L.Conv2D(3, 3, padding="same")]
    )
    ternarize(m, density=0.6, seed=2)
    k, b = m.layers[0].get_weights()
    k[..., 0] = 0.0
    b[0] = 1.0  # constant 1 seen through zero padding: not a bias -> must stay
    k[..., 1] = 0.0
    b[1] = 0.0  # constant 0: removable
    m.layers[0].set_weights([k, b])
    small, _ = shrink(m)
    assert small.layers[0].filters == 3
    assert rel_err(m, small, (5, 5, 2)) <= 1e-6


def test_functional_residual_keeps_add_channels():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inp)
    y = L.Conv2D(5, 3, padding="same", activation="elu")(x)
    y = L.BatchNormalization()(y)
    y = L.Conv2D(6, 1, padding="same")(y)
    x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(8, activation="elu")(x)
    out = L.Dense(3, activation="softmax")(x)
    m = keras.Model(inp, out)
    ternarize(m, density=0.4, seed=11, dead_in=2)
    small, _ = shrink(m)
    assert rel_err(m, small, (8, 8, 3)) <= 1e-6
    by_name = {layer.name: layer for layer in small.layers}
    orig = {layer.name: layer for layer in m.layers}
    convs = [n for n, la in orig.items() if isinstance(la, L.Conv2D)]
    assert by_name[convs[0]].filters == 6 and by_name[convs[2]].filters == 6  # feed Add
    assert by_name[convs[1]].filters < 5  # inner conv of the block shrinks


def test_nothing_to_remove_returns_equal_model():
    m = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    ternarize(m, density=1.0)
    small, report = shrink(m)
    assert report.layers == [] and report.params_after == report.params_before
    assert rel_err(m, small, (4,)) == 0.0


def test_all_dead_keeps_one_unit():
    m = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="relu"), L.Dense(2)])
    m.layers[0].set_weights([np.zeros((4, 3), "float32"), np.ones(3, "float32")])
    small, _ = shrink(m)
    assert small.layers[0].units == 1
    assert rel_err(m, small, (4,)) <= 1e-6


def test_subclassed_model_rejected():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    m = Sub()
    m(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError):
        shrink(m)


def test_bias_added_by_folding_is_used_downstream():
    """A layer that received a folded bias carries it into its own dead units' constants."""
    m = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(8, activation="sigmoid", use_bias=False),
            L.Dense(6, activation="sigmoid", use_bias=False),
            L.Dense(4, activation="tanh", use_bias=False),
            L.Dense(2),
        ]
    )
    ternarize(m, density=0.3, seed=4, dead_in=2)
    small, _ = shrink(m)
    assert small.layers[1].use_bias
    assert rel_err(m, small, (10,)) <= 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_random_cnn_variants(seed):
    rng = np.random.default_rng(seed)
    acts = ["elu", "relu", "sigmoid", "linear", "tanh"]

    def act():
        return acts[rng.integers(len(acts))]

    def pad():
        return ["same", "valid"][rng.integers(2)]

    m = keras.Sequential(
        [
            keras.Input((7, 6, 3)),
            L.Conv2D(8, 3, padding=pad(), activation=act(), use_bias=bool(rng.integers(2))),
            L.BatchNormalization(),
            L.Activation(act()),
            [L.MaxPooling2D(), L.AveragePooling2D(2, padding="same"), L.Dropout(0.1)][seed % 3],
            L.Conv2D(
                6,
                int(rng.integers(1, 3)),
                activation=act(),
                padding=pad(),
                use_bias=bool(rng.integers(2)),
            ),
            L.ELU(),
            [L.Flatten(), L.GlobalAveragePooling2D(), L.GlobalMaxPooling2D()][(seed // 3) % 3],
            L.BatchNormalization(),
            L.Dense(9, activation=act(), use_bias=bool(rng.integers(2))),
            L.ReLU(),
            L.Dense(3, activation="softmax", use_bias=bool(rng.integers(2))),
        ]
    )
    ternarize(
        m,
        density=float(rng.uniform(0.1, 0.5)),
        seed=seed,
        dead_in=int(rng.integers(4)),
        dead_out=int(rng.integers(3)),
    )
    small, report = shrink(m)
    assert rel_err(m, small, (7, 6, 3)) <= 1e-6
    assert small.layers[-1].units == 3
    assert report.params_after <= report.params_before


def test_conv1d_chain():
    m = keras.Sequential(
        [
            keras.Input((12, 4)),
            L.Conv1D(6, 3, activation="elu"),
            L.MaxPooling1D(),
            L.Conv1D(5, 1, activation="relu"),
            L.GlobalAveragePooling1D(),
            L.Dense(2),
        ]
    )
    ternarize(m, density=0.3, seed=9, dead_in=2, dead_out=1)
    small, _ = shrink(m)
    assert small.layers[0].filters < 6
    assert rel_err(m, small, (12, 4)) <= 1e-6


def test_prelu_alpha_follows_the_kept_units_and_folds_constants():
    m = keras.Sequential([keras.Input((6,)), L.Dense(5), L.PReLU(), L.Dense(3, use_bias=False)])
    ternarize(m, density=0.6, seed=12)
    k0, b0 = m.layers[0].get_weights()
    k0[:, 1], b0[1] = 0.0, -0.8  # constant -0.8 -> PReLU -> alpha[1] * -0.8, folded
    m.layers[0].set_weights([k0, b0])
    m.layers[1].set_weights([np.array([0.1, 0.2, 0.3, 0.4, 0.5], "float32")])
    k2 = m.layers[2].get_weights()[0]
    k2[1] = [0.5, -1.0, 0.25]
    k2[3] = 0.0  # unit 3: no outgoing weights
    m.layers[2].set_weights([k2])
    small, report = shrink(m)
    assert small.layers[0].units == 3
    np.testing.assert_allclose(small.layers[1].get_weights()[0], [0.1, 0.3, 0.5])
    assert small.layers[2].use_bias
    entry = {e.name: e for e in report.layers}[m.layers[0].name]
    assert (entry.removed_no_input, entry.removed_no_output) == (1, 1)
    assert rel_err(m, small, (6,)) <= 1e-6


def test_prelu_with_alpha_per_position_keeps_a_negative_constant():
    """Through a PReLU whose alpha varies over positions a negative constant is not one value
    per channel any more (it must stay); a positive one is (it is folded)."""
    m = keras.Sequential(
        [keras.Input((4, 4, 2)), L.Conv2D(4, 3), L.PReLU(), L.Flatten(), L.Dense(3)]
    )
    ternarize(m, density=0.6, seed=13)
    k, b = m.layers[0].get_weights()
    k[..., 0], b[0] = 0.0, -0.5  # alpha * -0.5 differs per position: kept
    k[..., 1], b[1] = 0.0, 0.7  # 0.7 everywhere: folded
    m.layers[0].set_weights([k, b])
    alpha = np.random.default_rng(0).uniform(0.1, 0.9, size=(2, 2, 4)).astype("float32")
    m.layers[1].set_weights([alpha])
    kd, bd = m.layers[3].get_weights()
    kd.reshape(2, 2, 4, 3)[:, :, 2, :] = 0.0  # filter 2: no outgoing weights
    kd.reshape(2, 2, 4, 3)[:, :, :2, :] = 0.5  # filters 0 and 1 are read
    m.layers[3].set_weights([kd, bd])
    small, _ = shrink(m)
    assert small.layers[0].filters == 2  # filters 0 (kept constant) and 3
    np.testing.assert_allclose(small.layers[1].get_weights()[0], alpha[..., [0, 3]])
    assert rel_err(m, small, (4, 4, 2)) <= 1e-6


def test_zero_padding_keeps_a_nonzero_constant_but_removes_dead_filters():
    m = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            L.Conv2D(4, 3, activation="elu"),
            L.ZeroPadding2D(1),
            L.Conv2D(3, 3),  # "valid": without the padding a constant would fold into its bias
        ]
    )
    ternarize(m, density=0.6, seed=14)
    k, b = m.layers[0].get_weights()
    k[..., 0], b[0] = 0.0, 1.0  # constant elu(1) inside, zero on the border: must stay
    k[..., 1], b[1] = 0.0, 0.0  # constant 0 everywhere: removable
    m.layers[0].set_weights([k, b])
    kq, bq = m.layers[2].get_weights()
    kq[:, :, 0, :] = 0.5  # filter 0 is read
    kq[:, :, 2, :] = 0.0  # filter 2: no outgoing weights
    m.layers[2].set_weights([kq, bq])
    small, _ = shrink(m)
    assert small.layers[0].filters == 2  # filters 0 and 3
    assert rel_err(m, small, (5, 5, 2)) <= 1e-6


@pytest.mark.parametrize(
    "middle", [L.LayerNormalization, L.Softmax, lambda: L.Activation("softmax")]
)
def test_layers_that_mix_units_keep_them(middle):
    """A unit the next Dense ignores still shifts a LayerNormalization's statistics or a
    softmax's sum: removing it would change the output, so it stays."""
    m = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="elu"), middle(), L.Dense(3)])
    ternarize(m, density=0.8, seed=15)
    k1, b1 = m.layers[2].get_weights()
    k1[2] = 0.0  # unit 2: no outgoing weights in the last layer
    m.layers[2].set_weights([k1, b1])
    small, report = shrink(m)
    assert small.layers[0].units == 5 and report.layers == []
    assert rel_err(m, small, (6,)) <= 1e-6


def test_nothing_to_remove_says_so() -> None:
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="elu"), keras.layers.Dense(2)]
    )
    for layer in model.layers:  # every weight non-zero: every unit has inputs and outputs
        layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
    small, report = shrink(model)
    assert report.layers == [] and small.count_params() == model.count_params() == 23
    assert str(report) == "nothing to remove: every unit has inputs and outputs (params: 23 -> 23)"


# Layers whose units shrink does not remove (depthwise and transposed convolutions, attention,
# EinsumDense), between a producer and a consumer with dead units: they stay whole, the model
# computes the same, and units elsewhere still go.
WHOLE = {
    "depthwise": ((6, 6, 3), lambda: L.DepthwiseConv2D(3, padding="same")),
    "transposed": ((6, 6, 3), lambda: L.Conv2DTranspose(4, 3)),
    "einsum": ((5,), lambda: L.EinsumDense("ab,bc->ac", output_shape=4)),
}


@pytest.mark.parametrize("case", sorted(WHOLE))
def test_layers_shrink_does_not_cut_stay_whole_and_exact(case):
    import keras_ssm

    shape, middle = WHOLE[case]
    conv = len(shape) == 3
    first = L.Conv2D(4, 1, activation="relu") if conv else L.Dense(4, activation="relu")
    last = L.Conv2D(6, 1, activation="relu") if conv else L.Dense(6, activation="relu")
    layers = [keras.Input(shape), first, middle(), last]
    layers += [L.Flatten(), L.Dense(3)] if conv else [L.Dense(3)]
    keras.utils.set_random_seed(1)
    model = keras_ssm.fold(keras_ssm.supermask(keras.Sequential(layers)))
    ternarize(model, density=0.6, seed=3)
    w = model.layers[0].get_weights()
    w[0][..., 0] = 0.0  # unit 0 of the first layer: no incoming weights (constant relu(b))
    w[1][0] = 0.5
    model.layers[0].set_weights(w)
    w = model.layers[-1].get_weights()  # unit 0 of the last hidden layer: no outgoing weights
    w[0].reshape(-1, 6, 3)[:, 0, :] = 0.0
    model.layers[-1].set_weights(w)
    middle_weights = [a.copy() for a in model.layers[1].get_weights()]

    small, report = shrink(model)

    assert [r.name for r in report.layers] == [model.layers[2].name]  # only the last hidden
    assert report.layers[0].units_after <= 5 and report.layers[0].removed_no_output == 1
    assert small.layers[0].get_weights()[0].shape == model.layers[0].get_weights()[0].shape
    for a, b in zip(small.layers[1].get_weights(), middle_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rel_err(model, small, shape) <= 1e-6


def test_attention_stays_whole_and_exact():
    import keras_ssm

    x = keras.Input((5, 6))
    h = L.Dense(6, activation="relu")(x)
    h = L.MultiHeadAttention(2, 3)(h, h)
    model = keras.Model(x, L.Dense(3)(L.Flatten()(h)))
    keras.utils.set_random_seed(2)
    model = keras_ssm.fold(keras_ssm.supermask(model))
    dense = model.get_layer(index=1)
    w = dense.get_weights()
    w[0][:, 0] = 0.0  # no incoming weights: a constant the attention mixes in
    w[1][0] = 0.7
    dense.set_weights(w)
    small, report = shrink(model)
    assert small.count_params() == model.count_params() and report.layers == []
    assert rel_err(model, small, (5, 6)) <= 1e-6


# ----------------------------------------------------------------------------- align_channels


def _conv_pair(middle: list, filters: int = 27, bias: bool = True) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((10, 10, 5)),
            L.Conv2D(filters, 3, padding="same", use_bias=bias, activation="elu"),
            *middle,
            L.Conv2D(7, 3, activation="sigmoid"),
            L.Flatten(),
            L.Dense(3),
        ]
    )


@pytest.mark.parametrize(
    "middle",
    [
        [],
        [L.BatchNormalization()],
        [L.BatchNormalization(center=False, scale=False)],
        [L.PReLU()],
        [L.PReLU(shared_axes=[1, 2, 3])],
        [L.MaxPooling2D(), L.ZeroPadding2D(1)],
        [L.Dropout(0.5), L.AveragePooling2D(2), L.ReLU()],
    ],
    ids=["none", "batchnorm", "bn_no_affine", "prelu", "prelu_shared", "pool_pad", "drop_avg"],
)
def test_align_channels_pads_with_zero_filters_and_keeps_the_outputs(middle):
    from keras_ssm.export.shrink import align_channels

    m = _conv_pair(middle)
    ternarize(m, density=0.5, seed=3)
    for layer in m.layers:
        if isinstance(layer, L.PReLU):
            a = layer.get_weights()[0]
            layer.set_weights([np.random.default_rng(1).uniform(0.1, 0.9, a.shape).astype("f")])
    aligned, padded = align_channels(m)
    assert padded == {m.layers[0].name: (27, 32)}
    assert aligned.layers[0].filters == 32 and aligned.layers[-3].get_weights()[0].shape[2] == 32
    k = aligned.layers[0].get_weights()[0]
    assert not np.any(k[..., 27:]) and np.array_equal(k[..., :27], m.layers[0].get_weights()[0])
    assert rel_err(m, aligned, (10, 10, 5)) <= 1e-6
    assert m.layers[0].filters == 27  # the model given is not modified


def test_align_channels_leaves_what_gains_nothing():
    from keras_ssm.export.shrink import align_channels

    small = _conv_pair([], filters=12)  # below the block: read directly
    assert align_channels(small)[1] == {}
    aligned_already = _conv_pair([], filters=32)
    assert align_channels(aligned_already) == (aligned_already, {})
    to_dense = keras.Sequential(  # a Dense consumer would only grow
        [keras.Input((6, 6, 2)), L.Conv2D(20, 3), L.Flatten(), L.Dense(4)]
    )
    assert align_channels(to_dense)[1] == {}
    grouped = keras.Sequential(  # a grouped consumer: not onnxruntime's plain convolution
        [keras.Input((6, 6, 20)), L.Conv2D(20, 1), L.Conv2D(10, 3, groups=2)]
    )
    assert align_channels(grouped)[1] == {}


def test_align_channels_limits_and_multiple():
    from keras_ssm.export.shrink import align_channels

    m = _conv_pair([], filters=27)
    name = m.layers[0].name
    assert align_channels(m, multiple=8)[1] == {name: (27, 32)}
    assert align_channels(m, multiple=4)[1] == {name: (27, 28)}
    assert align_channels(m, limits={name: 30})[1] == {name: (27, 30)}  # never past the limit
    assert align_channels(m, limits={"other": 64})[1] == {}  # only the layers named
    with pytest.raises(ValueError, match="multiple=1"):
        align_channels(m, multiple=1)


def test_align_channels_after_shrink_restores_the_block():
    """A shrunk 64-filter convolution left with 45 live filters is padded back to 48, not 64."""
    from keras_ssm.export.shrink import align_channels

    m = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(64, 3, activation="elu"), L.Conv2D(64, 3),
         L.Flatten(), L.Dense(5)]
    )  # fmt: skip
    ternarize(m, density=0.3, seed=5, dead_in=19)
    small, report = shrink(m)
    first = next(e for e in report.layers if e.name == m.layers[0].name)
    assert first.units_after == 45
    limits = {e.name: e.units_before for e in report.layers}
    aligned, padded = align_channels(small, limits=limits)
    assert padded[m.layers[0].name] == (45, 48)
    assert rel_err(m, aligned, (8, 8, 3)) <= 1e-6


# ----------------------------------------------------------------------------- depthwise paths


def _inverted_block(padding: str) -> keras.Model:
    """expand (1x1) -> depthwise 3x3 -> project (1x1): the MobileNet block."""
    return keras.Sequential(
        [
            keras.Input((7, 7, 3)),
            L.Conv2D(24, 1, activation="relu", name="expand"),
            L.DepthwiseConv2D(3, padding=padding, activation="relu", name="dw"),
            L.Conv2D(6, 1, name="project"),
            L.GlobalAveragePooling2D(),
            L.Dense(4),
        ]
    )


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_depthwise_paths_remove_blocked_and_constant_channels(padding):
    """Channels behind an all-zero depthwise filter are removed (their constant folded into the
    project layer's bias); a channel with no inputs is removed where its constant stays the
    same at every position: a zero one always, a non-zero one only without zero padding."""
    m = _inverted_block(padding)
    ternarize(m, density=0.6, seed=11)
    for name in ("expand", "dw", "project"):  # no unit dead by chance
        w = m.get_layer(name).get_weights()
        m.get_layer(name).set_weights([np.where(w[0] == 0, 0.3, w[0]), *w[1:]])
    k, b = m.get_layer("expand").get_weights()
    k[..., 10:15] = 0.0  # no incoming weights
    b[10:14], b[14] = -1.0, 0.5  # relu: 0 for 10-13, 0.5 for 14
    m.get_layer("expand").set_weights([k, b])
    dk, db = m.get_layer("dw").get_weights()
    dk[..., :6, :] = 0.0  # blocked: relu(db) goes on whatever comes in
    db[:6] = np.linspace(-0.5, 0.5, 6)
    dk[..., 10:15, :] = 0.7  # the constants' channels have taps
    m.get_layer("dw").set_weights([dk, db])
    pk, pb = m.get_layer("project").get_weights()
    pk[:, :, 20:22, :] = 0.0  # no outgoing weights
    m.get_layer("project").set_weights([pk, pb])
    small, report = shrink(m)
    kept_constant = 1 if padding == "same" else 0  # 0.5 through a zero-padded 3x3: not uniform
    assert small.get_layer("expand").filters == 24 - 6 - 4 - 2 - 1 + kept_constant
    entry = next(e for e in report.layers if e.name == "expand")
    assert entry.removed_no_output == 6 + 2 and entry.removed_no_input == 4 + 1 - kept_constant
    assert small.get_layer("dw").get_weights()[0].shape[-2] == small.get_layer("expand").filters
    assert rel_err(m, small, (7, 7, 3)) <= 1e-6


def test_depthwise_path_with_batchnorm_and_padding_layers():
    m = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(32, 1, name="expand"),
            L.BatchNormalization(),
            L.ReLU(6.0),
            L.ZeroPadding2D(((0, 1), (0, 1))),
            L.DepthwiseConv2D(3, strides=2, use_bias=False, name="dw"),
            L.BatchNormalization(),
            L.ReLU(6.0),
            L.Conv2D(8, 1, name="project"),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    ternarize(m, density=0.15, seed=2)  # 0.85 ** 9: about a quarter of the filters are zero
    dead = int(np.sum(~np.any(m.get_layer("dw").get_weights()[0] != 0, axis=(0, 1, 3))))
    assert dead >= 4
    small, _ = shrink(m)
    assert small.get_layer("expand").filters <= 32 - dead
    assert rel_err(m, small, (8, 8, 3)) <= 1e-6


def test_mobilenet_blocks_shrink_exactly(tmp_path):
    """keras.applications.MobileNetV2 with sparse ternary kernels: its expand convolutions lose
    the channels whose depthwise filter died, and the model computes the same function; padded
    back to the channel block (through the depthwise convolutions) and exported to ONNX, too."""
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )
    rng = np.random.default_rng(4)
    for layer in base.layers:  # ternary kernels, scaled so that the signal survives the depth
        if hasattr(layer, "kernel"):
            k = np.asarray(layer.kernel)
            taps = k.shape[:2] if isinstance(layer, L.DepthwiseConv2D) else k.shape[:-1]
            c = np.sqrt(2.0 / (0.2 * np.prod(taps)))
            layer.kernel.assign(c * rng.choice([-1.0, 0.0, 1.0], k.shape, p=[0.1, 0.8, 0.1]))
    x = np.random.default_rng(1).standard_normal((8, 32, 32, 3)).astype("float32")
    assert np.asarray(base(x)).std(axis=0).mean() > 0.1  # the outputs respond to the inputs
    small, report = shrink(base)
    expands = [e for e in report.layers if e.name.endswith("expand")]
    assert len(expands) >= 10
    for e in expands:  # at least every channel behind a zero depthwise filter is gone
        dw = base.get_layer(e.name.replace("expand", "depthwise")).get_weights()[0]
        zero = int(np.sum(~np.any(dw != 0, axis=(0, 1, 3))))
        assert zero > 0 and e.units_after <= e.units_before - zero, (e, zero)
    assert report.params_after < report.params_before
    assert rel_err(base, small, (32, 32, 3)) <= 1e-5
    from keras_ssm.export.shrink import align_channels

    widths = {e.name: e.units_before for e in report.layers}
    aligned, padded = align_channels(small, 8, limits=widths)
    assert any(name.endswith("expand") for name in padded)
    assert all(b % 8 == 0 or b == widths[name] for name, (_, b) in padded.items())
    assert rel_err(base, aligned, (32, 32, 3)) <= 1e-5
    if keras.backend.backend() == "tensorflow":
        from keras_ssm.export import to_onnx

        result = to_onnx(aligned, tmp_path / "m.onnx")  # verified against Keras, or raises
        assert result.max_rel_error <= 1e-4


def _separable_pair(rank: int, padding: str, multiplier: int) -> keras.Model:
    """conv (1x1) -> separable -> separable -> pooling -> Dense, with no unit dead by chance."""
    sep = L.SeparableConv2D if rank == 2 else L.SeparableConv1D
    pool = L.GlobalAveragePooling2D if rank == 2 else L.GlobalAveragePooling1D
    conv = L.Conv2D if rank == 2 else L.Conv1D
    m = keras.Sequential(
        [
            keras.Input((7,) * rank + (3,)),
            conv(8, 1, activation="relu", name="a"),
            sep(6, 3, padding=padding, depth_multiplier=multiplier, activation="relu", name="s1"),
            sep(5, 3, padding="same", depth_multiplier=multiplier, activation="relu", name="s2"),
            pool(),
            L.Dense(3),
        ]
    )
    rng = np.random.default_rng(rank * 10 + multiplier)
    for layer in m.layers:
        ws = layer.get_weights()
        ws = [rng.choice([-0.4, 0.3, 0.5], a.shape).astype("float32") for a in ws]
        layer.set_weights(ws)
    return m


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_separable_convolutions_are_cut_as_consumers_and_producers(rank, padding, multiplier):
    """A channel that a separable convolution never reads (its depthwise filters or its
    pointwise rows are zero, or each of its depthwise outputs meets zero pointwise rows) goes;
    a constant channel goes where it stays constant (a zero one always, a non-zero one only
    without zero padding); a separable convolution's zero pointwise column is a unit without
    inputs. The outputs do not change, and ONNX export of the result matches Keras."""
    m = _separable_pair(rank, padding, multiplier)
    k, b = m.get_layer("a").get_weights()
    k[..., 2:4] = 0.0  # no incoming weights: relu(-1) = 0 and relu(0.5) = 0.5
    b[2], b[3] = -1.0, 0.5
    m.get_layer("a").set_weights([k, b])
    dw, pw, pb = m.get_layer("s1").get_weights()
    dw[..., 0, :] = 0.0  # channel 0 of "a": its depthwise filters are zero
    pw[..., multiplier : 2 * multiplier, :] = 0.0  # channel 1: its pointwise rows are zero
    if multiplier == 2:  # channel 4: one depthwise output zero, the other meets zero rows
        dw[..., 4, 0] = 0.0
        pw[..., 4 * 2 + 1, :] = 0.0
    pw[..., 0], pb[0] = 0.0, -1.0  # units of s1 without inputs: relu(-1) = 0, relu(0.4) = 0.4
    pw[..., 1], pb[1] = 0.0, 0.4
    m.get_layer("s1").set_weights([dw, pw, pb])
    dw2, pw2, pb2 = m.get_layer("s2").get_weights()
    dw2[..., 2, :] = 0.0  # unit 2 of s1: never read
    m.get_layer("s2").set_weights([dw2, pw2, pb2])

    small, report = shrink(m)

    valid = padding == "valid"
    dead_a = 2 + (multiplier == 2) + 1 + valid  # unread: 0, 1 (and 4); constant: 2 (and 3)
    assert small.get_layer("a").filters == 8 - dead_a
    assert small.get_layer("s1").filters == 6 - 2  # unit 0 (zero constant) and unit 2 (unread)
    assert small.get_layer("s2").get_weights()[0].shape[-2] == 4
    s1 = small.get_layer("s1").get_weights()
    assert s1[0].shape[-2:] == (8 - dead_a, multiplier)
    assert s1[1].shape[-2:] == ((8 - dead_a) * multiplier, 4)
    entry = {e.name: e for e in report.layers}
    assert entry["a"].removed_no_output == 2 + (multiplier == 2)
    assert entry["a"].removed_no_input == 1 + valid
    assert entry["s1"].removed_no_input == 1 and entry["s1"].removed_no_output == 1
    assert entry["s1"].bias_folded == valid
    assert rel_err(m, small, (7,) * rank + (3,)) <= 1e-6
    if keras.backend.backend() == "tensorflow" and rank == 2:
        import tempfile
        from pathlib import Path

        from keras_ssm.export import to_onnx

        with tempfile.TemporaryDirectory() as tmp:  # verified against Keras, or raises
            assert to_onnx(small, Path(tmp) / "m.onnx").max_rel_error <= 1e-5

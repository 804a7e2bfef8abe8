"""The model zoo: the paper's layouts and parameter counts, dense and masked."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import numpy
from keras_ssm import initializers, masks, models
from keras_ssm.layers import is_masked

# The paper's counts: kernel weights (= mask entries of a masked model).
PAPER_COUNTS = {
    "fcn": 266_200,
    "conv2": 4_300_992,
    "conv4": 2_425_024,
    "conv6": 2_261_184,
    "conv8": 5_275_840,
    "resnet20": 248_624,
    "resnet20x2": 992_352,
    "resnet20x3": 2_231_184,
    "resnet56": 834_992,
    "resnet110": 1_705_904,
}
RESNETS = ("resnet20", "resnet20x2", "resnet20x3", "resnet56", "resnet110")
SMALL = (8, 8, 3)  # a small input keeps the ResNet tests fast; the layout does not depend on it


def kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]


def batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_models_tuple_matches_the_table() -> None:
    assert set(models.MODELS) == set(PAPER_COUNTS)


@pytest.mark.parametrize("mask", [None, "signed"])
@pytest.mark.parametrize("name", list(PAPER_COUNTS))
def test_parameter_count_matches_the_paper(name: str, mask: str | None) -> None:
    model = models.get(name, mask=mask)
    assert model.name == name
    assert models.kernel_count(model) == PAPER_COUNTS[name]
    if mask is not None:
        layers = kernel_layers(model)
        assert layers and all(is_masked(layer) for layer in layers)
        assert sum(int(np.prod(layer.scores.shape)) for layer in layers) == PAPER_COUNTS[name]
    elif name not in RESNETS:  # no BatchNorm: every parameter is a kernel weight
        assert model.count_params() == PAPER_COUNTS[name]


@pytest.mark.parametrize("name", RESNETS)
def test_dense_resnet_counts_kernels_plus_batchnorm(name: str) -> None:
    model = models.get(name, mask=None)
    bn_params = sum(4 * layer.moving_mean.shape[0] for layer in batchnorms(model))
    assert model.count_params() == PAPER_COUNTS[name] + bn_params


@pytest.mark.parametrize(
    ("name", "input_shape", "classes"),
    [("fcn", (28, 28, 1), 10), ("conv4", (32, 32, 3), 10), ("resnet56", (32, 32, 3), 100)],
)
def test_default_shapes(name: str, input_shape: tuple[int, ...], classes: int) -> None:
    model = models.get(name, mask=None)
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, classes)


@pytest.mark.parametrize("mask", [None, "signed"])
@pytest.mark.parametrize(
    ("name", "input_shape"), [("fcn", (28, 28, 1)), ("conv6", (32, 32, 3)), ("resnet20", SMALL)]
)
def test_forward_is_a_softmax(name: str, input_shape: tuple[int, ...], mask: str | None) -> None:
    model = models.get(name, mask=mask, num_classes=7, input_shape=input_shape)
    x = np.random.default_rng(0).normal(size=(3, *input_shape)).astype("float32")
    y = numpy(model(x, training=False))
    assert y.shape == (3, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("mask", [None, "signed"])
@pytest.mark.parametrize("name", ["fcn", "conv8", "resnet20"])
def test_layer_conventions(name: str, mask: str | None) -> None:
    """ELU everywhere but the softmax head, no biases, 'same' padding, 3x3 or 1x1 kernels."""
    model = models.get(name, mask=mask)
    layers = kernel_layers(model)
    assert all(not layer.use_bias for layer in layers)
    assert layers[-1].activation is keras.activations.softmax
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.padding == "same" and layer.kernel_size in ((3, 3), (1, 1)) for layer in convs)
    if not name.startswith("resnet"):  # ResNets apply ELU after BatchNorm instead
        assert all(layer.activation is keras.activations.elu for layer in layers[:-1])
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    if name == "conv8":
        assert len(pools) == 4 and all(p.pool_size == (2, 2) and p.strides == (2, 2) for p in pools)


def test_dense_baseline_uses_elu_uniform() -> None:
    model = models.fcn(mask=None)
    assert all(
        isinstance(layer.kernel_initializer, initializers.ELUUniform)
        for layer in kernel_layers(model)
    )
    assert not any(is_masked(layer) for layer in model.layers)


def test_masked_model_forwards_its_arguments() -> None:
    model = models.conv2(mask="signed", threshold=0.3, score_initializer="he_uniform")
    for layer in kernel_layers(model):
        assert layer.mask.name == "signed" and layer.mask.threshold == 0.3
        assert isinstance(layer.weight_initializer, initializers.ELUS)
        assert isinstance(layer.score_initializer, keras.initializers.HeUniform)
    assert [v.name for v in model.trainable_variables] == ["scores"] * 5


@pytest.mark.parametrize("mask", ["binary", "topk", masks.TopKMask(k=0.3)])
def test_other_masks(mask: str | masks.Mask) -> None:
    model = models.fcn(mask=mask)
    expected = masks.get(mask)
    assert all(layer.mask == expected for layer in kernel_layers(model))


def test_threshold_without_mask_is_an_error() -> None:
    with pytest.raises(ValueError, match="threshold"):
        models.fcn(mask=None, threshold=0.4)


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_frozen_batchnorm_is_the_references(name: str) -> None:
    model = models.get(name, mask="signed", batchnorm="frozen", input_shape=SMALL)
    trainable_bn = [layer.name for layer in batchnorms(model) if layer.trainable]
    # ResNet20's stem BatchNorm stays trainable in the reference; ResNet56/110 freeze all.
    assert trainable_bn == (["stem_bn"] if name == "resnet20" else [])
    frozen = [layer for layer in batchnorms(model) if not layer.trainable]
    assert all(not layer.center and not layer.scale for layer in frozen)
    names = {v.name for v in model.trainable_variables}
    assert names == ({"scores", "gamma", "beta"} if name == "resnet20" else {"scores"})


def test_trained_batchnorm_learns_in_masked_models() -> None:
    model = models.resnet20(mask="signed", batchnorm="train", input_shape=SMALL)
    assert all(layer.trainable and layer.center and layer.scale for layer in batchnorms(model))
    names = [v.name for v in model.trainable_variables]
    assert names.count("gamma") == len(batchnorms(model)) == names.count("beta")


def test_stats_batchnorm_uses_batch_statistics_without_gamma_beta() -> None:
    model = models.resnet20(mask="signed", batchnorm="stats", input_shape=SMALL)
    bns = batchnorms(model)
    # edge-popup's non-affine BatchNorm, the stem's too: only the scores train
    assert bns and all(layer.trainable and not layer.center and not layer.scale for layer in bns)
    assert {v.name for v in model.trainable_variables} == {"scores"}
    dense = models.resnet56(mask=None, batchnorm="stats", input_shape=SMALL)
    assert {v.name for v in dense.trainable_variables} == {"kernel"}  # no gamma/beta


@pytest.mark.parametrize("batchnorm", ["train", "stats", "frozen"])
def test_batchnorm_statistics_update_only_when_trained(batchnorm: str) -> None:
    model = models.resnet20(mask="signed", batchnorm=batchnorm, input_shape=SMALL, num_classes=3)
    model.compile("sgd", "sparse_categorical_crossentropy")
    bns = batchnorms(model)
    before = [numpy(layer.moving_mean) for layer in bns]
    x = np.random.default_rng(0).normal(size=(4, *SMALL)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    changed = {
        layer.name
        for layer, old in zip(bns, before, strict=True)
        if not np.allclose(numpy(layer.moving_mean), old)
    }
    expected = {layer.name for layer in bns} if batchnorm != "frozen" else {"stem_bn"}
    assert changed == expected


def test_resnet_block_layout() -> None:
    model = models.resnet20(mask=None)
    shapes = {layer.name: tuple(layer.kernel.shape) for layer in kernel_layers(model)}
    assert shapes["stem_conv"] == (3, 3, 3, 16)
    assert shapes["stage2_block1_conv1"] == (1, 1, 16, 32)
    assert shapes["stage2_block1_conv2"] == (3, 3, 32, 32)
    assert shapes["stage2_block1_shortcut"] == (1, 1, 16, 32)
    assert shapes["stage3_block3_conv2"] == (3, 3, 64, 64)
    assert shapes["output"] == (64, 10)
    assert model.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert model.get_layer("stage1_block1_shortcut").strides == (1, 1)
    assert model.get_layer("stem_pool").pool_size == (3, 3)
    assert model.get_layer("stem_pool").strides == (1, 1)
    assert model.get_layer("avg_pool").output.shape == (None, 64)


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 3), ("resnet56", 9), ("resnet110", 18)])
def test_resnet_depth(name: str, blocks: int) -> None:
    model = models.get(name, mask=None, input_shape=SMALL)
    convs = [layer for layer in kernel_layers(model) if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 3 * (2 * blocks + 1)  # stem + 2 per block + 3 shortcuts


def test_get_resolves_widths() -> None:
    assert models.get("ResNet20x3", mask=None, input_shape=SMALL).name == "resnet20x3"
    assert models.get("resnet20", width=2, mask=None, input_shape=SMALL).name == "resnet20x2"
    with pytest.raises(ValueError, match="width"):
        models.get("resnet20x2", width=3)


@pytest.mark.parametrize("name", ["vgg16", "resnet18", ""])
def test_unknown_model_lists_the_allowed(name: str) -> None:
    with pytest.raises(ValueError, match="allowed: fcn, conv2, .*resnet110"):
        models.get(name)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"batchnorm": "moving"}, "batchnorm"), ({"width": 0}, "width")]
)
def test_bad_resnet_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        models.resnet20(**kwargs)


@pytest.mark.parametrize(
    ("name", "dataset"),
    [("fcn", "mnist"), ("conv2", "cifar10"), ("resnet20x3", "cifar10"), ("resnet110", "cifar100")],
)
def test_default_dataset(name: str, dataset: str) -> None:
    assert models.default_dataset(name) == dataset


def test_masked_model_round_trips_through_keras_file(tmp_path: Path) -> None:
    model = models.resnet20(mask="signed", threshold=0.75, batchnorm="frozen", input_shape=SMALL)
    x = np.random.default_rng(1).normal(size=(2, *SMALL)).astype("float32")
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == "resnet20"
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))

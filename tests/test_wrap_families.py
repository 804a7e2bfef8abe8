"""supermask on the model families Keras users bring: keras.applications and keras_hub
backbones (random init, small inputs, no download).  Every kernel is reached, only the scores
train, one training step moves them, and fold and a .keras round trip keep the outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import keras_ssm
from keras_ssm.layers import MASKED_LAYERS, is_masked
from keras_ssm.wrap import iter_layers, masked_layers

pytestmark = pytest.mark.slow

A = keras.applications
IMAGE = (32, 32, 3)


def _hub() -> Any:
    return pytest.importorskip("keras_hub")


# A small transformer config both text backbones take (no download).
TEXT = dict(
    vocabulary_size=50,
    num_layers=2,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
    max_sequence_length=8,
)

FAMILIES: dict[str, Callable[[], keras.Model]] = {
    "MobileNetV2": lambda: A.MobileNetV2(IMAGE, alpha=0.35, weights=None, classes=10),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(IMAGE, weights=None, classes=10),
    "EfficientNetB0": lambda: A.EfficientNetB0(input_shape=IMAGE, weights=None, classes=10),
    "EfficientNetV2B0": lambda: A.EfficientNetV2B0(input_shape=IMAGE, weights=None, classes=10),
    "Xception": lambda: A.Xception(input_shape=(71, 71, 3), weights=None, classes=10),
    "NASNetMobile": lambda: A.NASNetMobile(input_shape=IMAGE, weights=None, classes=10),
    "ConvNeXtTiny": lambda: A.ConvNeXtTiny(input_shape=IMAGE, weights=None, classes=10),
    "ResNet50": lambda: A.ResNet50(input_shape=IMAGE, weights=None, classes=10),
    "DenseNet121": lambda: A.DenseNet121(input_shape=IMAGE, weights=None, classes=10),
    "BertBackbone": lambda: _hub().models.BertBackbone(**TEXT),
    "GPT2Backbone": lambda: _hub().models.GPT2Backbone(**TEXT),
    "ViTBackbone": lambda: _hub().models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ),
}


def _inputs(model: keras.Model, n: int = 4) -> Any:
    rng = np.random.default_rng(0)
    xs = {}
    for tensor in model.inputs:
        shape = (n, *(8 if d is None else d for d in tensor.shape[1:]))  # sequence length 8
        if "int" in str(tensor.dtype):
            if "mask" in tensor.name:  # padding_mask: every token is real
                xs[tensor.name] = np.ones(shape, "int32")
            elif "segment" in tensor.name:  # segment_ids: one segment
                xs[tensor.name] = np.zeros(shape, "int32")
            else:  # token ids below the vocabulary size (50)
                xs[tensor.name] = rng.integers(0, 40, shape).astype("int32")
        else:
            xs[tensor.name] = rng.standard_normal(shape).astype("float32")
    return xs if len(xs) > 1 else next(iter(xs.values()))


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, dict):
        return max(_max_diff(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return max(_max_diff(u, v) for u, v in zip(a, b, strict=True))
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


def _first(out: Any) -> Any:
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out[0] if isinstance(out, (list, tuple)) else out


# keras_hub 0.32.0's ViTPatchingAndEmbedding.get_config returns keys (num_patches,
# num_positions) its constructor refuses, so Keras itself cannot clone, save-and-load or
# rebuild a ViTBackbone; supermask, which rebuilds every layer, names the layer instead.
BROKEN_CONFIG = {"ViTBackbone": "vit_patching_and_embedding"}


@pytest.mark.parametrize("family", sorted(BROKEN_CONFIG))
def test_family_whose_config_keras_cannot_rebuild_is_named(family: str) -> None:
    model = FAMILIES[family]()
    with pytest.raises((TypeError, ValueError)):  # Keras' own clone fails the same way
        keras.models.clone_model(model)
    with pytest.raises(keras_ssm.UnsupportedLayerError, match=BROKEN_CONFIG[family]):
        keras_ssm.supermask(model)


# On JAX (the second CI pass) two families cover the depthwise and the keras_hub paths; the
# whole list runs on TensorFlow.
JAX_FAMILIES = ("MobileNetV2", "BertBackbone")


@pytest.mark.parametrize("family", [name for name in FAMILIES if name not in BROKEN_CONFIG])
def test_family_supermasks_trains_folds_and_round_trips(family: str, tmp_path: Path) -> None:
    if keras.backend.backend() == "jax" and family not in JAX_FAMILIES:
        pytest.skip("the TensorFlow pass runs every family; JAX runs " + ", ".join(JAX_FAMILIES))
    keras.utils.set_random_seed(0)
    model = FAMILIES[family]()
    maskable = [layer for layer in iter_layers(model) if type(layer) in MASKED_LAYERS]
    assert maskable, family

    masked = keras_ssm.supermask(model)

    # every maskable layer, wherever it lives, became a masked one; nothing else is masked
    assert len(masked_layers(masked)) == len(maskable)
    # only the scores train (BatchNorm in "stats" mode: statistics, no gamma/beta)
    trainable = masked.trainable_weights
    assert trainable and all("scores" in variable.path for variable in trainable), [
        v.path for v in trainable if "scores" not in v.path
    ]
    assert 0.5 < keras_ssm.mask_stats(masked)["remaining"] < 0.7  # threshold 0.4 of U(-a, a)

    x = _inputs(masked)
    scores = [keras.ops.convert_to_numpy(v) for v in trainable]
    # one step on a loss of the (first) output: finite, and it moves the scores
    probe = keras.Model(masked.inputs, _first(masked.outputs))
    target = np.ones(probe.predict(x, verbose=0).shape, "float32")
    probe.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = probe.fit(x, target, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = [
        not np.array_equal(a, keras.ops.convert_to_numpy(v))
        for a, v in zip(scores, trainable, strict=True)
    ]
    assert any(moved), family

    after = masked.predict(x, verbose=0)
    folded = keras_ssm.fold(masked)
    assert not any(is_masked(layer) for layer in iter_layers(folded))
    assert _max_diff(folded.predict(x, verbose=0), after) <= 1e-4

    path = tmp_path / f"{family}.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    assert len(masked_layers(loaded)) == len(maskable)
    assert _max_diff(loaded.predict(x, verbose=0), after) == 0.0

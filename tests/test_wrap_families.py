"""supermask on the model families Keras users bring: keras.applications and keras_hub
backbones (random init, small inputs, no download).  Every kernel is reached, only the scores
train, the first loss is sane and two training steps move them, and fold (ternary kernels), a
.keras round trip and the ONNX export keep the outputs."""

from __future__ import annotations

import gc
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


@pytest.fixture(autouse=True)
def _free_memory() -> Any:
    """Each family is a full-size graph (and its ONNX conversion): let the next one start from
    a clean slate, so the suite's memory does not grow family after family."""
    yield
    keras.backend.clear_session()
    gc.collect()


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
# shrink removes units of a Dense / Conv / SeparableConv only where they feed per-channel
# layers and one such consumer; these families have none (the transformers' projections are
# EinsumDense)
NOTHING_TO_SHRINK = {"BertBackbone", "GPT2Backbone"}


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

    # >= 95% of the kernel-like parameters (every trainable tensor of rank >= 2: kernels,
    # depthwise/pointwise kernels, embeddings) are masked, counted on the original model
    kernel_like = sum(int(np.prod(v.shape)) for v in model.trainable_weights if len(v.shape) >= 2)
    scored = sum(int(np.prod(v.shape)) for v in trainable)
    assert scored >= 0.95 * kernel_like, (scored, kernel_like)

    x = _inputs(masked)
    scores = [keras.ops.convert_to_numpy(v) for v in trainable]
    # two steps on a loss of the (first) output: a sane first loss (cross-entropy near ln 10
    # for the classifiers; BatchNorm frozen at its initial statistics gave 50-70 on ResNet50),
    # and the steps move the scores
    probe = keras.Model(masked.inputs, _first(masked.outputs))
    classifier = len(masked.inputs) == 1 and probe.output.shape[-1] == 10
    if classifier:
        target = np.random.default_rng(1).integers(0, 10, 4)
        probe.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    else:
        target = np.ones(probe.predict(x, verbose=0).shape, "float32")
        probe.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    losses: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"]))
    )
    probe.fit(x, target, epochs=1, batch_size=2, verbose=0, callbacks=[record])
    assert len(losses) == 2 and np.all(np.isfinite(losses)), losses
    assert losses[0] < (3 * np.log(10) if classifier else 10.0), losses
    moved = [
        not np.array_equal(a, keras.ops.convert_to_numpy(v))
        for a, v in zip(scores, trainable, strict=True)
    ]
    assert any(moved), family

    # Two steps barely move BatchNorm's moving statistics (momentum 0.99) from their initial
    # (0, 1): deep nets (ResNet50, DenseNet121) then output a constant softmax in inference
    # mode, which checks nothing.  Set them from one batch of 16, as training would.
    keras_ssm.recalibrate_batchnorm(masked, [_inputs(masked, 16)], batches=1)

    after = masked.predict(x, verbose=0)
    folded = keras_ssm.fold(masked)
    assert not any(is_masked(layer) for layer in iter_layers(folded))
    assert _max_diff(folded.predict(x, verbose=0), after) <= 1e-4
    # ternary after fold: every masked kernel holds {-c, 0, +c}
    ternary = 0
    for v in folded.weights:
        w = keras.ops.convert_to_numpy(v)
        if w.ndim >= 2 and np.unique(np.abs(w[w != 0])).size <= 1:
            ternary += w.size
    assert ternary >= 0.95 * kernel_like, (ternary, kernel_like)
    if keras.backend.backend() == "tensorflow":  # ONNX export converts through tf2onnx
        from keras_ssm.export.onnx import to_onnx

        result = to_onnx(folded, tmp_path / f"{family}.onnx")  # raises if it differs
        assert result.details["check_spread"] >= 1e-4  # the check compared outputs that vary
        # float32 rounding amplified by a deep net, never a tolerance that accepts anything
        assert result.max_rel_error <= result.details["check_tolerance"] <= 1e-2

    # shrink: with a quarter of every Dense / Conv2D / SeparableConv2D layer's units emptied
    # (a separable one's pointwise columns), removing the ones the graph lets it remove keeps
    # the outputs (and removes some, where the family has such a layer whose units feed only
    # per-channel layers and one consumer)
    from keras_ssm.export.shrink import shrink

    rng = np.random.default_rng(2)
    layers = keras.layers
    for layer in iter_layers(folded):
        if type(layer) in (layers.Dense, layers.Conv2D, layers.SeparableConv2D):
            weights = layer.get_weights()
            kernel = weights[1 if type(layer) is layers.SeparableConv2D else 0]
            units = kernel.shape[-1]
            kernel[..., rng.choice(units, max(1, units // 4), replace=False)] = 0.0
            layer.set_weights(weights)
    want = folded.predict(x, verbose=0)
    small, _ = shrink(folded)
    spread = max(float(np.std(np.asarray(leaf))) for leaf in keras.tree.flatten(want))
    # float32 rounding through a deep net (summation order changes), far below what removing
    # a live unit would change
    assert _max_diff(small.predict(x, verbose=0), want) <= 1e-4 * max(spread, 1e-30)
    if family not in NOTHING_TO_SHRINK:
        assert small.count_params() < folded.count_params(), family

    path = tmp_path / f"{family}.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    assert len(masked_layers(loaded)) == len(maskable)
    assert _max_diff(loaded.predict(x, verbose=0), after) == 0.0


def test_readme_wrap_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Wrap a model you already have" block, as a user would paste it."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the example exports (ONNX and LiteRT convert through TensorFlow)")
    _hub()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Wrap a model you already have", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    for folder in ("mobilenet_export", "bert_export"):
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert names == ["export.json", "model.onnx", "model.ssm", "model.tflite"], names
